"""The probe: which canonical texel a frame pixel samples, and where a texel shows up in a frame.

Pure tensor functions over a layer's per-frame uv (grid_sample coordinates, align_corners=False),
so the viewer shows exactly what rendering does: texel centres sit at integer + 0.5 in pixel units.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class FrameHit:
    """Where a canonical texel appears in a frame: pixel (x, y) and how far its uv is from the texel."""

    x: int
    y: int
    distance: float  # in texels; small when the frame really samples the texel


def uv_to_texel(uv: Tensor, tex_hw: tuple[int, int]) -> Tensor:
    """grid_sample coordinates (..., 2) → continuous texel coordinates (..., 2) as (column, row)."""
    hc, wc = tex_hw
    scale = torch.tensor([wc / 2, hc / 2], dtype=torch.float32)
    return (uv.float() + 1) * scale - 0.5


def frame_to_texel(uv: Tensor, x: int, y: int, tex_hw: tuple[int, int]) -> tuple[float, float]:
    """The texel (column, row) that pixel (x, y) of a frame samples; `uv` is that frame's H×W×2."""
    col, row = uv_to_texel(uv[y, x], tex_hw).tolist()
    return col, row


def texel_to_frame(
    uv: Tensor, texel: tuple[float, float], tex_hw: tuple[int, int], weight: Tensor | None = None
) -> FrameHit | None:
    """The pixel whose uv lies nearest texel (column, row) in a frame (`uv` H×W×2): the probe's inverse.

    `weight` (H×W) restricts the search to pixels where the layer is visible, so a foreground
    texel is not "found" in the background around the object. None when no pixel qualifies.
    """
    dist = (uv_to_texel(uv, tex_hw) - torch.tensor(texel, dtype=torch.float32)).norm(dim=-1)
    if weight is not None:
        dist = torch.where(weight > 0.5, dist, torch.full_like(dist, float("inf")))
    flat = int(dist.argmin())
    best = float(dist.view(-1)[flat])
    if best == float("inf"):
        return None
    return FrameHit(x=flat % uv.shape[1], y=flat // uv.shape[1], distance=best)


def texel_footprint(uv: Tensor, tex_hw: tuple[int, int]) -> float:
    """Median texels between neighbouring pixels: how far apart a frame samples the canonical.

    A texel is "seen" in a frame when the nearest uv match is within about this distance.
    """
    t = uv_to_texel(uv, tex_hw)
    dx = (t[:, 1:] - t[:, :-1]).norm(dim=-1).flatten()
    dy = (t[1:] - t[:-1]).norm(dim=-1).flatten()
    return float(torch.cat([dx, dy]).median())
