"""Rendering one frame of the avatar: posed Gaussians → feature image → decoded RGB.

The model (while fitting), the baked asset (re-rendering an edit) and every editor render through
`render_frame`, so what is optimised is exactly what is shown.
"""

from __future__ import annotations

from collections.abc import Callable

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


def render_features(
    body: BodyModel,
    gaussians: dict[str, Tensor],
    pose: Tensor,
    expression: Tensor,
    shape: Tensor,
    camera: Camera,
) -> tuple[Tensor, Tensor]:
    """One frame's rasterised neural features C×H×W (premultiplied) and alpha 1×H×W."""
    g = gaussians
    means, quats = posed_gaussians(
        body, pose, expression, shape, g["tri_id"], g["bary"], g["offset"], g["quats_local"]
    )
    feats, alpha = rasterize(
        means, quats, g["log_scales"].exp(), torch.sigmoid(g["opacity_logits"]), g["features"],
        camera,
    )  # fmt: skip
    return feats.permute(2, 0, 1), alpha.permute(2, 0, 1)


def decode_rgb(decoder: NeuralDecoder, feats: Tensor, alpha: Tensor) -> Tensor:
    """Features (premultiplied) → the person's RGB, un-premultiplied so that edges keep their colour."""
    return decoder(feats[None] / alpha[None].clamp(min=1e-3))[0]


def decode(decoder: NeuralDecoder, feats: Tensor, alpha: Tensor, background: Tensor) -> Tensor:
    """Features (premultiplied) → RGB composited over `background` (3×H×W)."""
    return decode_rgb(decoder, feats, alpha) * alpha + background * (1 - alpha)


def render_frames(render: Callable[[int], tuple[Tensor, Tensor]], frames: list[int]) -> tuple[Tensor, Tensor]:
    """`render(t)`'s (RGB, alpha) for each of `frames`, stacked as they come: written into two F×C×H×W
    tensors, not listed then stacked (which held a clip's renders twice at a fit's finish)."""
    rgb = alpha = None
    for i, t in enumerate(frames):
        frame, a = render(t)
        if rgb is None or alpha is None:
            rgb, alpha = frame.new_empty((len(frames), *frame.shape)), a.new_empty((len(frames), *a.shape))
        rgb[i], alpha[i] = frame, a
    if rgb is None or alpha is None:
        raise ValueError("no frames to render")
    return rgb, alpha


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
    feats, alpha = render_features(body, gaussians, pose, expression, shape, camera)
    return decode(decoder, feats, alpha, background), alpha


class NeuralDecoder(nn.Module):
    """Feature image B×C×H×W → RGB: base colour (first 3 channels) plus a small conv residual.

    `colour` (3×4, a buffer) is an affine colour map applied last, identity after a fit: an
    appearance edit sets it, so a reference's colour statistics land exactly and weight-free. State
    dicts written before it existed load as identity.
    """

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
        self.register_buffer("colour", IDENTITY_COLOUR.clone())

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object) -> None:
        state_dict.setdefault(prefix + "colour", IDENTITY_COLOUR.clone())
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, features: Tensor) -> Tensor:
        rgb = torch.sigmoid(features[:, :3] + self.net(features))
        if torch.equal(self.colour, IDENTITY_COLOUR.to(self.colour)):
            return rgb
        a, b = self.colour[:, :3], self.colour[:, 3]
        return (torch.einsum("ij,bjhw->bihw", a, rgb) + b[:, None, None]).clamp(0, 1)


IDENTITY_COLOUR = torch.cat([torch.eye(3), torch.zeros(3, 1)], dim=1)
