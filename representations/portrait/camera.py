"""The pinhole camera every portrait renderer takes: one value instead of four parameters."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class Camera:
    """OpenCV convention (x right, y down, z forward), pixel centres at integer + 0.5.

    `viewmat` (4×4) maps world to camera and `K` (3×3) holds the intrinsics in pixels; either may
    require gradients (the rasterisers pass them on).
    """

    viewmat: Tensor
    K: Tensor
    width: int
    height: int
