"""What the canonical toggles show: the texture's alpha, its coverage, and a uv grid.

Coverage counts the frames that see each texel, so a blurred or never-seen part of the canonical
is visible at a glance; the grid, drawn in texture space and rendered through the frames' uv,
shows how the layer deforms over time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..canonical import CanonicalVideo, splat, texture_rgba

GRID_COLOR = (1.0, 0.85, 0.1)


def checker(height: int, width: int, cells: int = 16) -> Tensor:
    """3×H×W light/dark checkerboard, the usual backdrop for transparency."""
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    size = max(2, min(height, width) // cells)
    board = ((yy // size + xx // size) % 2).float() * 0.25 + 0.5
    return board.expand(3, height, width)


def with_alpha(cv: CanonicalVideo, k: int, texture: Tensor) -> Tensor:
    """Layer k's texture over a checkerboard by the PNG's alpha (the coverage): unused area shows."""
    alpha = texture_rgba(cv.layers[k])[3:4]
    return texture * alpha + checker(*texture.shape[1:]) * (1 - alpha)


def grid_lines(height: int, width: int, cells: int = 8) -> Tensor:
    """H×W in {0, 1}: lines of a `cells`-wide grid in texture space (one or two texels thick)."""
    step_y, step_x = max(2, height // cells), max(2, width // cells)
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    thick = max(1, min(height, width) // 128)
    return (((yy % step_y) < thick) | ((xx % step_x) < thick)).float()


def with_grid(texture: Tensor) -> Tensor:
    """The texture with the uv grid painted on it."""
    lines = grid_lines(*texture.shape[1:])[None]
    return texture * (1 - lines) + torch.tensor(GRID_COLOR)[:, None, None] * lines


def coverage_count(cv: CanonicalVideo, k: int) -> Tensor:
    """Hc×Wc: how many frames see each texel of layer k (through its composite weight)."""
    layer = cv.layers[k]
    hc, wc = layer.texture.shape[1:]
    count = torch.zeros(hc, wc)
    for t in range(cv.T):
        w = cv.layer_weights(t)[k]
        acc = splat(w.reshape(-1, 1), layer.uv[t].float().reshape(-1, 2), (hc, wc))[0]
        seen = F.max_pool2d((acc > 0.05).float()[None, None], 3, stride=1, padding=1)[0, 0]
        count += seen
    return count


def heatmap(count: Tensor, frames: int) -> Tensor:
    """3×H×W: unseen texels red, then dark to bright by the fraction of frames that see them."""
    frac = (count / max(frames, 1)).clamp(0, 1)
    gray = 0.15 + 0.85 * frac
    unseen = (count == 0).float()
    rgb = torch.stack([gray, gray, gray * 0.9 + 0.1 * frac])
    return rgb * (1 - unseen) + torch.tensor([0.75, 0.05, 0.05])[:, None, None] * unseen
