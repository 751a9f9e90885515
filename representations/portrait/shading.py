"""Shading of the avatar: mesh normals at each Gaussian, the clip's light, and relit frames.

The light is fitted to the *source frames*, not to the avatar: the avatar's appearance is static,
while the source shows each surface point under the different normals the head turns it through
(a fixed light), which is what separates light from albedo (lighting.fit_light). A point's observed
colour in a frame is the source averaged over the pixels it makes, weighted by its blending weight.

A relit frame is the decoded colour times shading(n, new light) ÷ shading(n, divisor), with n the
rasterised normal image in the tracked camera's frame (the light stays put when a novel view turns
the camera). The divisor is the fitted light when the decoder still shows the shaded fit ("ratio")
and absent once the decoder has been refitted to albedo ("albedo", relight.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from canon_edit.errors import UserError

from .body import BodyModel
from .camera import Camera
from .lighting import rotate_light, shading, yaw_rotation
from .render import NeuralDecoder, decode_rgb, render_features
from .tracking import Tracking

MIN_SHADING = 0.05  # below this a ratio would amplify noise in the dark


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """V×3 unit normals: area-weighted sums of the adjacent faces' normals."""
    tri = vertices[faces]
    face = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    normals = torch.zeros_like(vertices).index_add_(0, faces.reshape(-1), face.repeat_interleave(3, 0))
    return F.normalize(normals, dim=-1)


def gaussian_normals(body: BodyModel, tracking: Tracking, t: int, tri_id: Tensor, bary: Tensor) -> Tensor:
    """N×3 unit normals of the posed mesh at each Gaussian, in frame t's tracked camera coordinates."""
    vertices = body(tracking.pose[t : t + 1], tracking.expression[t : t + 1], tracking.shape).vertices[0]
    normals = vertex_normals(vertices, body.faces)[body.faces[tri_id]]
    world = F.normalize((normals * bary[..., None]).sum(1), dim=-1)
    return world @ tracking.viewmat[t, :3, :3].T


@dataclass
class Relighting:
    """How an edit relights: the clip's fitted light, the new one, and the decoder's meaning."""

    fitted: Tensor  # 9×3: the light estimated from the source (lighting.fit_light's normalisation)
    target: Tensor  # 9×3: the new light, in the tracked camera's frame
    rotate: float = 0.0  # degrees the new light turns about the vertical axis over the clip
    albedo: bool = False  # True: the decoder outputs albedo (refitted); False: the shaded fit (ratio)

    def light(self, t: int, T: int) -> Tensor:
        if self.rotate == 0:
            return self.target
        return rotate_light(self.target, yaw_rotation(math.radians(self.rotate) * t / max(T, 1)))

    def to_json(self) -> dict[str, Any]:
        return {
            "fitted": self.fitted.tolist(),
            "target": self.target.tolist(),
            "rotate": self.rotate,
            "albedo": self.albedo,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> Relighting:
        try:
            out = cls(
                fitted=torch.tensor(data["fitted"], dtype=torch.float32),
                target=torch.tensor(data["target"], dtype=torch.float32),
                rotate=float(data["rotate"]),
                albedo=bool(data["albedo"]),
            )
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{where} is corrupt; make the relit edit again") from None
        if out.fitted.shape != (9, 3) or out.target.shape != (9, 3):
            raise UserError(f"{where} is corrupt (lights must be 9×3); make the relit edit again")
        return out


def render_relit(
    body: BodyModel,
    gaussians: dict[str, Tensor],
    decoder: NeuralDecoder,
    tracking: Tracking,
    t: int,
    camera: Camera,
    background: Tensor,
    relight: Relighting,
) -> tuple[Tensor, Tensor]:
    """Frame t seen from `camera`, relit: composite over `background` and alpha (render_frame's shape)."""
    normals = gaussian_normals(body, tracking, t, gaussians["tri_id"], gaussians["bary"])
    c = gaussians["features"].shape[1]
    both = {**gaussians, "features": torch.cat([gaussians["features"], normals], 1)}
    feats, alpha = render_features(
        body, both, tracking.pose[t], tracking.expression[t], tracking.shape, camera
    )
    rgb = decode_rgb(decoder, feats[:c], alpha)
    n = F.normalize(feats[c:], dim=0).permute(1, 2, 0)
    gain = shading(n, relight.light(t, tracking.T)).clamp(min=0)
    if not relight.albedo:
        gain = gain / shading(n, relight.fitted).clamp(min=MIN_SHADING)
    relit = (rgb * gain.permute(2, 0, 1)).clamp(0, 1)
    return relit * alpha + background * (1 - alpha), alpha
