"""Rendering one frame of the avatar: posed Gaussians → feature image → decoded RGB.

The model (while fitting), the baked asset (re-rendering an edit) and every editor render through
`render_frame`, so what is optimised is exactly what is shown.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .body import BodyModel
from .camera import Camera
from .gaussians import bind
from .raster import rasterize


def posed_gaussians(
    body: BodyModel,
    pose: Tensor,
    expression: Tensor,
    shape: Tensor,
    tri_id: Tensor,
    bary: Tensor,
    offset: Tensor,
    quats_local: Tensor,
) -> tuple[Tensor, Tensor]:
    """One frame's parameters (pose J×3, expression E, shape 1×S) → Gaussian centres N×3, quats N×4."""
    vertices = body(pose[None], expression[None], shape).vertices[0]
    return bind(vertices, body.faces, tri_id, bary, offset, quats_local)


def render_frame(
    body: BodyModel,
    gaussians: dict[str, Tensor],
    decoder: NeuralDecoder,
    pose: Tensor,
    expression: Tensor,
    shape: Tensor,
    camera: Camera,
    background: Tensor,
) -> tuple[Tensor, Tensor]:
    """One frame: posed Gaussians → feature image → decoded RGB over `background` (3×H×W), alpha 1×H×W.

    ``gaussians`` holds tri_id, bary, offset, quats_local, log_scales, opacity_logits, features;
    the model (while fitting) and the baked asset (when re-rendering an edit) both render through here.
    """
    g = gaussians
    means, quats = posed_gaussians(
        body, pose, expression, shape, g["tri_id"], g["bary"], g["offset"], g["quats_local"]
    )
    feats, alpha = rasterize(
        means, quats, g["log_scales"].exp(), torch.sigmoid(g["opacity_logits"]), g["features"],
        camera,
    )  # fmt: skip
    feats = feats.permute(2, 0, 1)[None]
    alpha = alpha.permute(2, 0, 1)
    rgb = decoder(feats / alpha[None].clamp(min=1e-3))[0]  # un-premultiplied, so edges keep their colour
    return rgb * alpha + background * (1 - alpha), alpha


class NeuralDecoder(nn.Module):
    """Feature image B×C×H×W → RGB: base colour (first 3 channels) plus a small conv residual."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, 3, 1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, features: Tensor) -> Tensor:
        return torch.sigmoid(features[:, :3] + self.net(features))
