"""Overlapping square tiles at the model's resolution, and their feathered blend.

A diffusion model sees one resolution. A large or non-square texture is covered by tiles of that
size which overlap; per-tile results are averaged with weights that fall towards each tile's
edges. Blending the noise prediction at every denoising step (MultiDiffusion) keeps the tiles
of one image consistent, so no seam survives; blending VAE outputs hides the codec's border.
All functions are pure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

Box = tuple[int, int, int, int]  # y0, x0, y1, x1 (end exclusive)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of `tile` cells covering [0, length), neighbours sharing ≥ `overlap` cells.

    The tiles are spread evenly, so the first starts at 0 and the last ends at `length`.
    """
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    n = math.ceil((length - tile) / stride) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def tile_boxes(height: int, width: int, tile: int, overlap: int) -> list[Box]:
    """Row-major boxes of (at most) `tile`×`tile` cells covering a height×width grid."""
    return [
        (y, x, min(y + tile, height), min(x + tile, width))
        for y in tile_starts(height, tile, overlap)
        for x in tile_starts(width, tile, overlap)
    ]


def scale_box(box: Box, factor: int) -> Box:
    """The same box on a grid `factor` times finer (latent cells → pixels)."""
    return (box[0] * factor, box[1] * factor, box[2] * factor, box[3] * factor)


def feather(height: int, width: int, ramp: int, device: torch.device | str = "cpu") -> Tensor:
    """height×width weights rising linearly over `ramp` cells from every edge to 1 inside.

    Weights stay positive at the edge, so a cell covered by one tile only keeps its value.
    """

    def ramp_1d(n: int) -> Tensor:
        i = torch.arange(n, device=device, dtype=torch.float32)
        return ((torch.minimum(i, n - 1 - i) + 1) / (ramp + 1)).clamp(max=1.0)

    return ramp_1d(height)[:, None] * ramp_1d(width)[None, :]


def blend(tiles: Iterable[tuple[Tensor, Box]], size: tuple[int, int], ramp: int) -> Tensor:
    """Feathered average of (B×C×h×w tile, box) pairs into a B×C×`size` float32 tensor.

    Tiles are consumed one at a time, so a generator keeps only one tile in memory.
    """
    out: Tensor | None = None
    weight: Tensor | None = None
    for tile, (y0, x0, y1, x1) in tiles:
        if out is None:
            out = tile.new_zeros((*tile.shape[:-2], *size), dtype=torch.float32)
            weight = tile.new_zeros(size, dtype=torch.float32)
        w = feather(y1 - y0, x1 - x0, ramp, tile.device)
        out[..., y0:y1, x0:x1] += tile.float() * w
        weight[y0:y1, x0:x1] += w
    if out is None or weight is None:
        raise ValueError("blend needs at least one tile")
    return out / weight.clamp_min(1e-12)


def working_size(height: int, width: int, resolution: int, multiple: int) -> tuple[int, int]:
    """Size at which a texture is processed: short side ≥ `resolution`, both sides multiples of `multiple`.

    Small textures are upsampled to the model's resolution (the model is poor below it); large
    ones keep their detail and are tiled.
    """
    s = max(1.0, resolution / min(height, width))
    return (
        max(resolution, math.ceil(height * s / multiple) * multiple),
        max(resolution, math.ceil(width * s / multiple) * multiple),
    )


def resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    """B×C×H×W → B×C×size, antialiased when shrinking; identity (no copy) at the same size."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image, size=size, mode="bicubic", align_corners=False, antialias=True)
