"""A procedural portrait clip with known truth: body, poses, cameras, Gaussians and landmarks.

A posed body (turning head and neck, opening jaw, changing expression) carries per-texel Gaussians
whose colours are painted from their rest position (hair, skin, brows, eyes, lips, striped shirt);
the frames are rendered by the reference rasterizer over a gradient background. Tests check that
tracking recovers the poses from the landmarks and that a fit reconstructs the frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from canon_edit.run import MappedFrames
from canon_edit.video import Clip

from .body import BodyModel, body_spec
from .camera import Camera
from .editing import EditablePortrait
from .gaussians import texel_binding, texel_sizes
from .lighting import shading
from .raster import rasterize
from .render import NeuralDecoder, posed_gaussians
from .surface import gaussian_normals
from .tracking import Tracking, look_at_viewmat, project_points


@dataclass
class ProceduralPortrait:
    clip: Clip
    tracking: Tracking
    landmarks: Tensor  # T×L×2 pixel positions of the body's face landmarks
    gaussians: dict[str, Tensor]  # tri_id, bary, rgb, log_scales, opacity (the truth)
    background: Tensor  # 3×H×W: what the person is composited over, so renders compare at the silhouette


def paint(rest_points: Tensor) -> Tensor:
    """Colours of a portrait as a function of rest-pose position (body space, metres)."""
    x, y, z = rest_points.unbind(-1)
    skin = torch.tensor([0.86, 0.64, 0.52])
    colour = skin.expand(len(x), 3).clone()
    shirt = y < -0.02
    stripes = 0.5 + 0.5 * torch.sin(60 * y + 10 * x)
    colour[shirt] = torch.stack([0.15 + 0.2 * stripes, 0.25 + 0.1 * stripes, 0.6 - 0.2 * stripes], -1)[shirt]
    hair = (y > 0.26) | ((z < 0.0) & (y > 0.12))
    colour[hair] = torch.tensor([0.25, 0.15, 0.08])
    brows = (z > 0.05) & ((y - 0.245).abs() < 0.006) & ((x.abs() - 0.032).abs() < 0.018)
    colour[brows] = torch.tensor([0.2, 0.12, 0.06])
    eyes = ((x.abs() - 0.032) ** 2 + (y - 0.225) ** 2 < 0.0125**2) & (z > 0.085)
    colour[eyes] = torch.tensor([0.95, 0.95, 0.95])
    iris = ((x.abs() - 0.032) ** 2 + (y - 0.225) ** 2 < 0.006**2) & (z > 0.09)
    colour[iris] = torch.tensor([0.15, 0.3, 0.45])
    lips = (z > 0.05) & (((y - 0.155) / 0.008) ** 2 + (x / 0.03) ** 2 < 1)
    colour[lips] = torch.tensor([0.75, 0.25, 0.3])
    return colour


def portrait_motion(body: BodyModel, frames: int, turn: float = 1.0) -> tuple[Tensor, Tensor]:
    """Poses and expressions: the head turns (±0.3·turn rad) and nods, the jaw opens, the mouth smiles."""
    t = torch.arange(frames, dtype=torch.float32) / max(1, frames)
    pose = torch.zeros(frames, body.n_joints, 3)
    yaw, pitch = 0.3 * turn * torch.sin(2 * math.pi * t), 0.12 * turn * torch.sin(4 * math.pi * t)
    pose[:, body.joint_index("neck")] = torch.stack([0.5 * pitch, 0.5 * yaw, torch.zeros_like(t)], -1)
    pose[:, body.joint_index("head")] = torch.stack(
        [0.5 * pitch, 0.5 * yaw, 0.05 * torch.sin(2 * math.pi * t)], -1
    )
    pose[:, body.joint_index("jaw")] = torch.stack(
        [0.2 * (0.5 - 0.5 * torch.cos(2 * math.pi * t)), 0 * t, 0 * t], -1
    )
    expression = torch.zeros(frames, body.n_expression)
    expression[:, min(1, body.n_expression - 1)] = 0.8 * (0.5 - 0.5 * torch.cos(2 * math.pi * t))
    return pose, expression


def make_portrait_clip(
    body: BodyModel,
    frames: int = 6,
    size: int = 64,
    texel_resolution: int = 128,
    light: Tensor | None = None,
    turn: float = 1.0,
) -> ProceduralPortrait:
    """Render the procedural portrait: `frames` frames of `size`², head and shoulders in view.

    With `light` (9×3 SH, lighting.py, or T×9×3 for a light that changes over the clip) the surface is
    Lambertian: each Gaussian shows its painted colour (the albedo) × shading(its mesh normal in the
    camera's frame), so the shading changes as the head turns under the light; the truth then holds
    the light too. `turn` scales the head's turns (what makes a light recoverable from a clip).
    """
    pose, expression = portrait_motion(body, frames, turn)
    shape = torch.zeros(1, body.n_shape)
    eye, target = torch.tensor([0.0, 0.12, 0.75]), torch.tensor([0.0, 0.12, 0.0])
    viewmat = look_at_viewmat(eye, target).expand(frames, 4, 4).clone()
    f = 1.8 * size  # the head and shoulders fill the frame
    K = torch.tensor([[f, 0.0, size / 2], [0.0, f, size / 2], [0.0, 0.0, 1.0]])
    tracking = Tracking(pose, expression, shape, viewmat, K, size, size, body.name)

    with torch.no_grad():
        rest = body(torch.zeros_like(pose[:1]), torch.zeros_like(expression[:1]), shape).vertices[0]
        centres = rest[body.faces].mean(1)
        normals = torch.linalg.cross(
            rest[body.faces[:, 1]] - rest[body.faces[:, 0]],
            rest[body.faces[:, 2]] - rest[body.faces[:, 0]],
            dim=-1,
        )
        front = (centres[:, 1] > -0.15) & ((normals[:, 2] > 0) | (centres[:, 1] > 0.0))
        tri_id, bary = texel_binding(body.uv, body.uv_faces, texel_resolution, front)
        rest_points = (rest[body.faces[tri_id]] * bary[..., None]).sum(1)
        rgb = paint(rest_points)
        texel = texel_sizes(rest, body.faces, body.uv, body.uv_faces, tri_id, texel_resolution)
        log_scales = torch.log(texel[:, None] * torch.tensor([0.8, 0.8, 0.3]))
        opacity = torch.full((len(tri_id),), 0.95)
        offset = torch.zeros(len(tri_id), 3)
        quats_local = torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(len(tri_id), 1)
        ys = torch.linspace(0, 1, size)[:, None, None]
        background = torch.tensor([0.55, 0.6, 0.5]) * (1 - 0.4 * ys) + torch.tensor([0.2, 0.1, 0.2]) * ys
        images, masks, landmarks = [], [], []
        for t in range(frames):
            means, quats = posed_gaussians(
                body, pose[t], expression[t], shape, tri_id, bary, offset, quats_local
            )
            colour = rgb
            if light is not None:
                normals = gaussian_normals(body, tracking, t, tri_id, bary)
                colour = rgb * shading(normals, light[t] if light.dim() == 3 else light).clamp(min=0)
            image, alpha = rasterize(
                means, quats, log_scales.exp(), opacity, colour, Camera(viewmat[t], K, size, size)
            )
            images.append((image + (1 - alpha) * background).permute(2, 0, 1))
            masks.append((alpha > 0.5).float().permute(2, 0, 1))
            vertices = body(pose[t : t + 1], expression[t : t + 1], shape).vertices
            landmarks.append(project_points(body.landmarks(vertices)[0], viewmat[t], K))
    clip = Clip(
        frames=torch.stack(images).clamp(0, 1), fps=25.0, masks=torch.stack(masks), source="procedural"
    )
    truth = {"tri_id": tri_id, "bary": bary, "rgb": rgb, "log_scales": log_scales, "opacity": opacity}
    if light is not None:
        truth["light"] = light
    return ProceduralPortrait(
        clip=clip,
        tracking=tracking,
        landmarks=torch.stack(landmarks),
        gaussians=truth,
        background=background.permute(2, 0, 1).contiguous(),
    )


def truth_asset(
    portrait: ProceduralPortrait, body: BodyModel, model_dir: str | None = None, feature_dim: int = 8
) -> EditablePortrait:
    """The procedural truth as a baked asset: its Gaussians, features = logit(colour), a pass-through decoder.

    Edits tested on it are measured against a known answer without the fit's own error in the way.
    """
    g = portrait.gaussians
    n = len(g["tri_id"])
    features = torch.zeros(n, feature_dim)
    features[:, :3] = torch.logit(g["rgb"].clamp(1e-3, 1 - 1e-3))
    decoder = NeuralDecoder(feature_dim, 8)  # its residual starts at zero: colour = sigmoid(features[:3])
    return EditablePortrait(
        gaussians={
            "tri_id": g["tri_id"],
            "bary": g["bary"],
            "offset": torch.zeros(n, 3),
            "quats_local": torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
            "log_scales": g["log_scales"],
            "opacity_logits": torch.logit(g["opacity"]),
            "features": features,
        },
        decoder_state=decoder.state_dict(),
        feature_dim=feature_dim,
        decoder_hidden=8,
        tracking=portrait.tracking,
        body_spec=body_spec(body, model_dir, "head"),
        background=MappedFrames(portrait.clip.frames),
        fps=portrait.clip.fps,
        body=body,
    )
