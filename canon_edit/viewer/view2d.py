"""The 2D page of a CanonicalVideo run: frames side by side over the layers' canonical textures.

`Scene2D.draw` turns a client's state into one image plus the layout that maps clicks back to
panels; the probe marks a frame pixel in every layer's canonical, or a canonical texel in the frame.
Everything here is plain tensors, so the page can be checked without a browser.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch import Tensor

from ..canonical import CanonicalVideo
from .canvas import Rect, compose, draw_marker, layout
from .overlays import coverage_count, heatmap, with_alpha, with_grid
from .probe import frame_to_texel, texel_footprint, texel_to_frame

MARK = (255, 0, 255)


@dataclass(frozen=True)
class ProbePixel:
    """A clicked frame pixel."""

    x: int
    y: int


@dataclass(frozen=True)
class ProbeTexel:
    """A clicked canonical texel (column, row) of layer `layer`."""

    layer: int
    col: int
    row: int


@dataclass
class State2D:
    """What one client looks at."""

    frame: int = 0
    edit: list[Tensor] | None = None  # textures of the selected edit or the preview
    edit_label: str = ""
    alpha: bool = False
    coverage: bool = False
    grid: bool = False
    probe: ProbePixel | ProbeTexel | None = None
    width: int = 1280
    height: int = 720


@dataclass
class Page:
    """A drawn page: the image, the panels' names and rects (to resolve clicks), the probe's report."""

    image: np.ndarray
    names: list[str]
    rects: list[Rect]
    probe_text: str = ""
    marks: dict[str, tuple[float, float]] = field(default_factory=dict)

    def hit(self, sx: float, sy: float) -> tuple[str, int, int] | None:
        """Canvas point → (panel name, column, row), or None off every panel."""
        for name, rect in zip(self.names, self.rects, strict=True):
            pos = rect.to_panel(sx, sy)
            if pos is not None:
                return name, pos[0], pos[1]
        return None


class Scene2D:
    """Draws pages of one CanonicalVideo and its source frames (T×3×H×W)."""

    def __init__(self, cv: CanonicalVideo, source: Tensor):
        self.cv, self.source = cv, source
        self._coverage: dict[int, Tensor] = {}

    def layer_name(self, k: int) -> str:
        return f"layer {k}" + (f" ({self.cv.layers[k].name})" if self.cv.layers[k].name else "")

    def probe_at(self, page: Page, sx: float, sy: float) -> ProbePixel | ProbeTexel | None:
        """What a click at canvas point (sx, sy) probes."""
        hit = page.hit(sx, sy)
        if hit is None:
            return None
        name, col, row = hit
        if name.startswith("layer "):
            return ProbeTexel(int(name.split()[1]), col, row)
        return ProbePixel(col, row)

    def draw(self, state: State2D) -> Page:
        t = min(max(state.frame, 0), self.cv.T - 1)
        grid = with_grid if state.grid else (lambda x: x)
        frames = {
            "source": self.source[t],
            "reconstruction": self.cv.render([t], [grid(x) for x in self.cv.textures()])[0],
        }
        textures = self.cv.textures() if state.edit is None else state.edit
        shown = [grid(x) for x in textures]
        if state.edit is not None:
            frames[f"edit: {state.edit_label}"] = self.cv.render([t], shown)[0]
        canon = [self._canonical(k, shown[k], state) for k in range(len(self.cv.layers))]
        names = list(frames) + [self.layer_name(k) for k in range(len(canon))]
        images = [x.clamp(0, 1) for x in frames.values()] + canon
        rows = [[(self.cv.W, self.cv.H)] * len(frames), [tuple(x.shape[:0:-1]) for x in canon]]
        placed = layout(rows, state.width, state.height)
        rects = placed[0] + placed[1]
        page = Page(compose(images, rects, state.width, state.height), names, rects)
        if state.probe is not None:
            self._mark(page, state.probe, t, len(frames))
        return page

    def _canonical(self, k: int, texture: Tensor, state: State2D) -> Tensor:
        if state.coverage:
            if k not in self._coverage:
                self._coverage[k] = coverage_count(self.cv, k)
            return heatmap(self._coverage[k], self.cv.T)
        return with_alpha(self.cv, k, texture) if state.alpha else texture.clamp(0, 1)

    def _mark(self, page: Page, probe: ProbePixel | ProbeTexel, t: int, n_frames: int) -> None:
        hw = [tuple(la.texture.shape[1:]) for la in self.cv.layers]
        weights = self.cv.layer_weights(t)
        lines = []
        if isinstance(probe, ProbePixel):
            pixel: tuple[int, int] | None = (probe.x, probe.y)
            lines.append(f"frame {t}, pixel ({probe.x}, {probe.y}):")
            for k, la in enumerate(self.cv.layers):
                col, row = frame_to_texel(la.uv[t], probe.x, probe.y, hw[k])
                page.marks[f"layer {k}"] = (col, row)
                self._draw(page, n_frames + k, col + 0.5, row + 0.5)
                seen = float(weights[k, probe.y, probe.x])
                lines.append(f"- {self.layer_name(k)}: texel ({col:.1f}, {row:.1f}), weight {seen:.2f}")
        else:
            la = self.cv.layers[probe.layer]
            self._draw(page, n_frames + probe.layer, probe.col + 0.5, probe.row + 0.5)
            hit = texel_to_frame(la.uv[t], (probe.col, probe.row), hw[probe.layer], weights[probe.layer])
            tol = 1.5 * max(1.0, texel_footprint(la.uv[t], hw[probe.layer]))
            pixel = (hit.x, hit.y) if hit is not None and hit.distance <= tol else None
            where = f"pixel ({pixel[0]}, {pixel[1]})" if pixel else "not visible in this frame"
            lines.append(
                f"{self.layer_name(probe.layer)}, texel ({probe.col}, {probe.row}): frame {t}, {where}"
            )
        if pixel is not None:
            page.marks["frame"] = (float(pixel[0]), float(pixel[1]))
            for i in range(n_frames):
                self._draw(page, i, pixel[0] + 0.5, pixel[1] + 0.5)
        page.probe_text = "\n".join(lines)

    @staticmethod
    def _draw(page: Page, index: int, col: float, row: float) -> None:
        x, y = page.rects[index].to_canvas(col, row)
        draw_marker(page.image, x, y, MARK)
