"""Shading of the avatar: the clip's light, the new one, and relit frames.

The light is fitted to the *source frames*, not to the avatar: the avatar's appearance is static,
while the source shows each surface point under the different normals the head turns it through
(a fixed light), which is what separates light from albedo (lighting.fit_light). A point's observed
colour in a frame is the source averaged over the pixels it makes, weighted by its blending weight.

A relit frame is the decoded colour times a gain: the rendered shading under the new light over the
rendered shading under the divisor, each from mesh normals in the tracked camera's frame (the light
stays put when a novel view turns the camera), blended over the surface probe (surface.py). The
divisor is the fitted light when the decoder still shows the shaded fit ("ratio") and absent once
the decoder has been refitted to albedo ("albedo", relight.py).

Seen from the tracked camera, a relit frame can instead be the source frame itself times the gain
over the fitted light ("footage"): the source is albedo × the fitted light's shading, so the ratio
relights it while keeping every pixel's detail and the footage's own stillness. The avatar then
gives only the shape (normals, coverage); its blur and shimmer stay out of the video. Measured on
portrait_lp_d13 (bench/RESULTS.md), where the reconstruction shimmers at 24-53× the source's
warping error, the relit footage stays near the source's own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d
from torch import Tensor

from canon_edit.errors import UserError

from .body import BodyModel
from .camera import Camera
from .lighting import rotate_light, shading, yaw_rotation
from .render import NeuralDecoder, decode_rgb, render_features
from .surface import SurfaceProbe, camera_vertex_normals, normals_at
from .tracking import Tracking

MIN_SHADING = 0.05  # below this a ratio would amplify noise in the dark


@dataclass
class Relighting:
    """How an edit relights: the clip's fitted light, the new one, and the decoder's meaning."""

    fitted: Tensor  # 9×3: the light estimated from the source (lighting.fit_light's normalisation)
    target: Tensor  # 9×3: the new light, in the tracked camera's frame
    rotate: float = 0.0  # degrees the new light turns about the vertical axis over the clip
    albedo: bool = False  # True: the decoder outputs albedo (refitted); False: the shaded fit (ratio)
    blur: float = 0.0  # σ of the shading images' blur, as a share of the frame height (RelightConfig)
    footage: bool = False  # True: tracked views relight the source frames; novel views the avatar

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
            "blur": self.blur,
            "footage": self.footage,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> Relighting:
        try:
            out = cls(
                fitted=torch.tensor(data["fitted"], dtype=torch.float32),
                target=torch.tensor(data["target"], dtype=torch.float32),
                rotate=float(data["rotate"]),
                albedo=bool(data["albedo"]),
                blur=float(data.get("blur", 0.0)),  # edits made before the blur existed had none
                footage=bool(data.get("footage", False)),  # nor relit footage
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
    probe: SurfaceProbe,
    footage: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Frame t seen from `camera`, relit: composite over `background` and alpha (render_frame's shape).

    The gain is a ratio of rendered shadings, the new light's over the divisor's, each blended from
    per-point shadings as the source blends per-point colours. The surface probe gives them where the
    mesh is; the avatar's own Gaussians fill in where it is not (hair beyond the mesh). `footage` (the
    source frame, only when `camera` is frame t's tracked one) replaces the decoded colour; being
    shaded by the fitted light, it is always divided by it.
    """
    light = relight.light(t, tracking.T)
    albedo = relight.albedo and footage is None

    def shadings(normals: Tensor) -> Tensor:  # N×6: the new light's shading, then the divisor's
        new = shading(normals, light).clamp(min=0)
        divisor = torch.ones_like(new) if albedo else shading(normals, relight.fitted).clamp(min=0)
        return torch.cat([new, divisor], 1)

    vertex = camera_vertex_normals(body, tracking, t)  # one posed mesh for both sets of normals
    own = normals_at(vertex, body.faces, gaussians["tri_id"], gaussians["bary"])
    c = gaussians["features"].shape[1]
    both = {**gaussians, "features": torch.cat([gaussians["features"], shadings(own)], 1)}
    feats, alpha = render_features(
        body, both, tracking.pose[t], tracking.expression[t], tracking.shape, camera
    )
    rgb = decode_rgb(decoder, feats[:c], alpha) if footage is None else footage
    probe_normals = normals_at(vertex, body.faces, probe.tri_id, probe.bary)
    surface, cover = probe.splat(body, tracking, t, shadings(probe_normals), camera)
    shade = surface + (1 - cover) * feats[c:]  # premultiplied by `weight`
    weight = cover + (1 - cover) * alpha
    if relight.blur > 0:  # a normalised convolution: the blur spreads shading, not coverage
        sigma = relight.blur * camera.height
        size = 2 * math.ceil(3 * sigma) + 1
        blurred = gaussian_blur2d(torch.cat([shade, weight])[None], (size, size), (sigma, sigma))[0]
        shade, weight = blurred[:6], blurred[6:]
    gain = shade[:3] / torch.maximum(shade[3:], MIN_SHADING * weight).clamp(min=1e-6)
    relit = (rgb * gain).clamp(0, 1)
    if footage is not None and relight.blur > 0:
        # the footage has its own edge; a sharp avatar silhouette would cut the gain off at the
        # avatar's, off the person's by a pixel or two and moving with the tracking. The ramp lies
        # inside the silhouette (eroded by σ's whole pixels, then blurred), so the gain does not glow
        # on the wall behind (it did on portrait_lp_d13 under sunset).
        r = int(sigma)
        inner = -F.max_pool2d(-alpha[None], 2 * r + 1, stride=1, padding=r) if r else alpha[None]
        alpha = gaussian_blur2d(inner, (size, size), (sigma, sigma))[0]
    return relit * alpha + background * (1 - alpha), alpha
