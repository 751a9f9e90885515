"""The 2D page of a CanonicalVideo run: frames side by side over the layers' canonical textures.

`Scene2D.draw` turns a client's state into one image plus the layout that maps clicks back to
panels; the probe marks a frame pixel in every layer's canonical, or a canonical texel in the frame.
A segmented run (`SegmentedVideo`) shows its cross-faded frames over the canonicals of the segment
that holds the frame most (in an overlap, the one weighted more), and the probe works in that one.
Everything here is plain tensors, so the page can be checked without a browser.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch import Tensor

from ..canonical import CanonicalVideo
from ..run import MappedFrames
from ..segments import SegmentedVideo, blend_weights
from .canvas import Rect, compose, draw_marker, layout
from .overlays import coverage_count, heatmap, with_alpha, with_grid
from .probe import frame_to_texel, texel_footprint, texel_to_frame

MARK = (255, 0, 255)

Video = CanonicalVideo | SegmentedVideo


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
    edit: Video | None = None  # the video with the selected edit or the preview applied
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
    """Draws pages of one CanonicalVideo (or SegmentedVideo) and its source frames (T×3×H×W, in memory
    or read as they are shown)."""

    def __init__(self, video: Video, source: Tensor | MappedFrames):
        self.video, self.source = video, source
        self.segmented = isinstance(video, SegmentedVideo)
        self._coverage: dict[tuple[int, int], Tensor] = {}
        self._grids: dict[str, tuple[Video, Video]] = {}

    @property
    def layers(self) -> int:
        return len(self.part(self.video, 0)[1].layers)

    def layer_name(self, k: int) -> str:
        name = self.part(self.video, 0)[1].layers[k].name
        return f"layer {k}" + (f" ({name})" if name else "")

    def part(self, video: Video, t: int) -> tuple[int, CanonicalVideo, int]:
        """(segment index, its CanonicalVideo, frame t in it) of the segment shown at frame t."""
        if not isinstance(video, SegmentedVideo):
            return 0, video, t
        k = max(blend_weights(video.segments, t), key=lambda held: held[1])[0]
        return k, video.bakes[k], t - video.segments[k].start

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
        t = min(max(state.frame, 0), self.video.T - 1)
        video = self._gridded("video", self.video) if state.grid else self.video
        frames = {"source": self.source[t], "reconstruction": video.render([t])[0]}
        segment, part, local = self.part(self.video, t)
        shown = part
        if state.edit is not None:
            edited = self._gridded("edit", state.edit) if state.grid else state.edit
            frames[f"edit: {state.edit_label}"] = edited.render([t])[0]
            shown = self.part(edited, t)[1]
        elif state.grid:
            shown = self.part(video, t)[1]
        canon = [self._canonical(segment, part, k, tex, state) for k, tex in enumerate(shown.textures())]
        where = f", {self.video.segments[segment].name}" if self.segmented else ""
        names = list(frames) + [self.layer_name(k) + where for k in range(len(canon))]
        images = [x.clamp(0, 1) for x in frames.values()] + canon
        rows = [[(self.video.W, self.video.H)] * len(frames), [tuple(x.shape[:0:-1]) for x in canon]]
        placed = layout(rows, state.width, state.height)
        rects = placed[0] + placed[1]
        page = Page(compose(images, rects, state.width, state.height), names, rects)
        if state.probe is not None:
            self._mark(page, state.probe, part, t, local, len(frames))
        return page

    def _gridded(self, slot: str, video: Video) -> Video:
        """`gridded(video)`, kept per slot until another video takes it: painting the grid on every
        segment's textures took longer than the draw itself for a long segmented run."""
        held = self._grids.get(slot)
        if held is None or held[0] is not video:
            held = self._grids[slot] = (video, gridded(video))
        return held[1]

    def _canonical(
        self, segment: int, part: CanonicalVideo, k: int, texture: Tensor, state: State2D
    ) -> Tensor:
        if state.coverage:
            if (segment, k) not in self._coverage:
                self._coverage[segment, k] = coverage_count(part, k)
            return heatmap(self._coverage[segment, k], part.T)
        return with_alpha(part, k, texture) if state.alpha else texture.clamp(0, 1)

    def _mark(
        self,
        page: Page,
        probe: ProbePixel | ProbeTexel,
        cv: CanonicalVideo,
        t: int,
        local: int,
        n_frames: int,
    ) -> None:
        """Marks and the probe's report for frame t, which is frame `local` of the shown canonical `cv`."""
        hw = [tuple(la.texture.shape[1:]) for la in cv.layers]
        weights = cv.layer_weights(local)
        lines = []
        if isinstance(probe, ProbePixel):
            pixel: tuple[int, int] | None = (probe.x, probe.y)
            lines.append(f"frame {t}, pixel ({probe.x}, {probe.y}):")
            for k, la in enumerate(cv.layers):
                col, row = frame_to_texel(la.uv[local], probe.x, probe.y, hw[k])
                page.marks[f"layer {k}"] = (col, row)
                self._draw(page, n_frames + k, col + 0.5, row + 0.5)
                seen = float(weights[k, probe.y, probe.x])
                lines.append(f"- {self.layer_name(k)}: texel ({col:.1f}, {row:.1f}), weight {seen:.2f}")
        else:
            la = cv.layers[probe.layer]
            self._draw(page, n_frames + probe.layer, probe.col + 0.5, probe.row + 0.5)
            hit = texel_to_frame(la.uv[local], (probe.col, probe.row), hw[probe.layer], weights[probe.layer])
            tol = 1.5 * max(1.0, texel_footprint(la.uv[local], hw[probe.layer]))
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


def gridded(video: Video) -> Video:
    """The video with a uv grid drawn over every canonical texture (each segment's, if segmented)."""
    if isinstance(video, SegmentedVideo):
        return video.with_bakes([gridded(bake) for bake in video.bakes])
    return video.with_textures([with_grid(x) for x in video.textures()])
