"""The 2D page as one image: panels (frames, canonical textures) laid out in rows, letterboxed.

viser stretches the background image over the whole viewport, so the server composes the page at
the viewport's own size and keeps the layout, which turns a click's screen position back into a
pixel of the panel under it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..video import to_uint8

GAP = 6
BACKDROP = 0.12


@dataclass(frozen=True)
class Rect:
    """Where a panel of `src_w`×`src_h` pixels is drawn: top-left (x, y) and its drawn size."""

    x: int
    y: int
    w: int
    h: int
    src_w: int
    src_h: int

    def to_panel(self, sx: float, sy: float) -> tuple[int, int] | None:
        """Canvas point → panel pixel (column, row), or None when it is outside the panel."""
        if not (self.x <= sx < self.x + self.w and self.y <= sy < self.y + self.h):
            return None
        col = int((sx - self.x) * self.src_w / self.w)
        row = int((sy - self.y) * self.src_h / self.h)
        return min(col, self.src_w - 1), min(row, self.src_h - 1)

    def to_canvas(self, col: float, row: float) -> tuple[float, float]:
        """Panel point (continuous pixel coordinates, centres at +0.5) → canvas point."""
        return self.x + col * self.w / self.src_w, self.y + row * self.h / self.src_h


def layout(rows: list[list[tuple[int, int]]], width: int, height: int, gap: int = GAP) -> list[list[Rect]]:
    """Rects for rows of panel sizes (w, h): every row gets a height share, panels keep their aspect."""
    heights = [max(h for _, h in row) for row in rows]
    rects: list[list[Rect]] = []
    budget_h = height - gap * (len(rows) + 1)
    y = float(gap)
    for row, row_h in zip(rows, heights, strict=True):
        share = budget_h * row_h / sum(heights)
        natural_w = sum(w * row_h / h for w, h in row)
        scale = min(share / row_h, (width - gap * (len(row) + 1)) / natural_w)
        drawn = [(w * row_h / h * scale, row_h * scale) for w, h in row]
        x = (width - sum(w for w, _ in drawn) - gap * (len(row) - 1)) / 2
        out = []
        for (sw, sh), (dw, dh) in zip(row, drawn, strict=True):
            out.append(
                Rect(round(x), round(y + (share - dh) / 2), max(1, round(dw)), max(1, round(dh)), sw, sh)
            )
            x += dw + gap
        rects.append(out)
        y += share + gap
    return rects


def compose(images: list[Tensor], rects: list[Rect], width: int, height: int) -> np.ndarray:
    """Draw 3×h×w images into their rects on a dark backdrop → H×W×3 uint8."""
    canvas = torch.full((3, height, width), BACKDROP)
    for image, r in zip(images, rects, strict=True):
        x0, y0 = max(r.x, 0), max(r.y, 0)
        x1, y1 = min(r.x + r.w, width), min(r.y + r.h, height)
        if x1 <= x0 or y1 <= y0:
            continue
        scaled = F.interpolate(image[None].float(), size=(r.h, r.w), mode="bilinear", antialias=True)[0]
        canvas[:, y0:y1, x0:x1] = scaled[:, y0 - r.y : y1 - r.y, x0 - r.x : x1 - r.x]
    return to_uint8(canvas).permute(1, 2, 0).numpy()


def draw_marker(canvas: np.ndarray, x: float, y: float, color: tuple[int, int, int], size: int = 8) -> None:
    """A 3-pixel cross with a dark outline at canvas point (x, y), in place: visible on any texture and
    through JPEG's chroma subsampling."""
    h, w = canvas.shape[:2]
    cx, cy = int(x), int(y)
    for half, col, reach in ((2, (0, 0, 0), size + 1), (1, color, size)):
        ys = slice(max(cy - half, 0), min(cy + half + 1, h))
        xs = slice(max(cx - half, 0), min(cx + half + 1, w))
        canvas[ys, max(cx - reach, 0) : min(cx + reach + 1, w)] = col
        canvas[max(cy - reach, 0) : min(cy + reach + 1, h), xs] = col
