"""Long clips as overlapping segments, each fitted into a canonical of its own.

One canonical holds a few seconds well; a long pan stretches it past its resolution. A segmented
run splits the clip into segments of N frames that share K frames with the next one:

    RUN/segments/seg_000/ ...   a complete run of its own (fit, resume, render, eval all work on it)
    RUN/canonical/segments.json the plan: each segment's name and frame range, and the overlap

`SegmentedVideo` is the bake of such a run: frame t is rendered by the segment that holds it, and in
an overlap by both, cross-faded linearly, so the seam is a dissolve rather than a jump. An edit
made in one segment reaches the others through the overlaps: each overlap frame says which texel
of the neighbour's canonical shows what texel of the edited one, and these correspondences are
chained segment after segment in both directions (PaintMap), so every segment samples the paint
from the edited canonical once. An edit therefore crosses a seam only through what the overlap
frames show; where that leaves a masked object unpainted past a seam, the edit says so (PaintStop).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .atomic import write_json
from .canonical import (
    CanonicalVideo,
    Layer,
    keyframe_textures,
    read_textures,
    sample_texture,
    splat,
    supersample_factor,
    write_textures,
)  # fmt: skip
from .errors import UserError
from .files import CorruptFile, read_json
from .flow import Flow
from .run import RunFolder

SEGMENTS_FILE = "segments.json"
SEGMENTS_DIR = "segments"


@dataclass(frozen=True)
class Segment:
    """Frames [start, end) of the clip, fitted in RUN/segments/NAME."""

    name: str
    start: int
    end: int

    def __contains__(self, t: int) -> bool:
        return self.start <= t < self.end

    @property
    def frames(self) -> int:
        return self.end - self.start


def plan_segments(frames: int, length: int, overlap: int) -> list[Segment]:
    """The fewest segments of at most `length` frames that cover the clip, each sharing `overlap`
    frames with the next, spread evenly so no segment is a short leftover."""
    if length < 2:
        raise UserError(f"--segment-frames must be at least 2, got {length}")
    if not 0 < overlap < length:
        raise UserError(
            f"--overlap must be between 1 and --segment-frames - 1 ({length - 1}), got {overlap}: "
            "neighbouring segments need shared frames to cross-fade and carry edits"
        )
    if frames <= length:
        return [Segment("seg_000", 0, frames)]
    n = math.ceil((frames - overlap) / (length - overlap))
    cuts = [round(k * (frames - overlap) / n) for k in range(n + 1)]
    return [Segment(f"seg_{k:03d}", cuts[k], cuts[k + 1] + overlap) for k in range(n)]


# the masks of frames [start, stop) as float in [0, 1], B×K×H×W (`Clip.read_masks`, `StoredClip.
# read_masks`): a long clip's are read from the run's stored clip a chunk at a time, never held whole
MaskReader = Callable[[int, int], Tensor]
MASK_CHUNK = 64


def masked_motion(flow: Flow, masks: MaskReader | None = None) -> tuple[Tensor, Tensor | None]:
    """(T×2 camera path, T×K label shares), in one pass over `masks` (the shares: None without masks).

    The path is where the view has moved since frame 0, in pixels: the median consistent flow of the
    background (pixels outside every label of `masks`, when given), summed. A share is the part of a
    frame a label covers.
    """
    frames = flow.forward.shape[0] + 1
    size = MASK_CHUNK if masks is not None else frames
    steps, shares = [torch.zeros(2)], []
    for start in range(0, frames, size):
        stop = min(start + size, frames)
        chunk = None if masks is None else masks(start, stop)
        if chunk is not None:
            shares.append((chunk >= 0.5).float().mean((2, 3)))
        for t in range(start, min(stop, frames - 1)):
            ok = flow.forward_ok[t].bool() & (chunk is None or chunk[t - start].amax(0) < 0.5)
            vectors = flow.forward[t].float().flatten(1)[:, ok.flatten()] if ok.any() else torch.zeros(2, 1)
            steps.append(vectors.median(dim=1).values)
    return torch.stack(steps).cumsum(0), torch.cat(shares) if shares else None


# A cut may fall this early in the travel a segment may span, to find shared frames that show the
# masked objects; among the cuts whose shared frames show them nearly best, the latest is taken.
EARLIEST_CUT = 0.5
NEARLY_BEST = 0.9


def plan_by_motion(
    flow: Flow, masks: MaskReader | None, stretch: float, overlap: int, longest: int
) -> list[Segment]:
    """Segments that each span at most `stretch` frame sizes of camera travel (and `longest` frames).

    A canonical holds the union of what its frames see at the frames' resolution: a view that
    travels one frame width needs a canonical twice the frame's width, and past that the texture is
    spread thin. A segment ends by the frame where the accumulated travel since its start passes
    `stretch`. An edit crosses a seam only through what the shared frames show, so with `masks`
    the cut is placed, from halfway to that limit, where the shared frames show the masked objects
    the segments on both sides hold (`cut_showing_masks`); a cut by travel alone could fall where the
    object is out of view and strand its paint in one segment (bench/RESULTS.md).
    """
    height, width = flow.forward.shape[-2:]
    path, area = masked_motion(flow, masks)
    path = path / torch.tensor([float(width), float(height)])
    frames = path.shape[0]
    shortest = 2 * overlap + 1
    if longest < shortest:
        raise UserError(f"segments of at most {longest} frames cannot share {overlap}; lower --overlap")
    bounds, start = [], 0
    while True:
        travel = (path[start:] - path[start]).abs().amax(1)
        beyond = (travel > stretch).nonzero()
        end = start + (int(beyond[0]) if len(beyond) else frames - start)
        end = min(max(end, start + shortest), start + longest, frames)
        if frames - end < shortest:  # no short leftover: the last segment takes it
            end = frames
        elif area is not None:
            earliest = max(start + shortest, start + math.ceil(EARLIEST_CUT * (end - start)))
            end = cut_showing_masks(area, start, earliest, end, overlap)
        bounds.append((start, end))
        if end == frames:
            return [Segment(f"seg_{k:03d}", a, b) for k, (a, b) in enumerate(bounds)]
        start = end - overlap


def cut_showing_masks(area: Tensor, start: int, earliest: int, latest: int, overlap: int) -> int:
    """The end in [earliest, latest] of a segment from `start` whose `overlap` last frames show best
    every label (columns of `area`, T×K) seen both in the segment and after it; the latest of the
    nearly best. Each label's score is its mean share of the frame over the shared frames (an object
    in view in all of them, not in one), over the best any cut gives it; a cut scores its worst label."""
    ends = torch.arange(earliest, latest + 1)
    windows = ends[:, None] - overlap + torch.arange(overlap)  # E×overlap: each cut's shared frames
    shown = area[windows].mean(1)  # E×K
    carried = (area[start:latest].amax(0) > 0) & (area[earliest - overlap :].amax(0) > 0)
    best = shown.amax(0)
    carried &= best > 0  # a label no cut shows cannot be helped by any
    if not carried.any():
        return latest
    score = (shown[:, carried] / best[carried]).amin(1)
    good = (score >= NEARLY_BEST * score.max()).nonzero()
    return int(ends[good[-1]])


def blend_weights(segments: list[Segment], t: int) -> list[tuple[int, float]]:
    """(segment index, weight) of frame t: 1 inside a segment; a linear cross-fade in an overlap."""
    holders = [k for k, seg in enumerate(segments) if t in seg]
    if len(holders) == 1:
        return [(holders[0], 1.0)]
    a, b = holders[0], holders[-1]
    shared = segments[a].end - segments[b].start
    w = (t - segments[b].start + 1) / (shared + 1)
    return [(a, 1.0 - w), (b, w)]


def shared_frames(a: Segment, b: Segment) -> range:
    return range(max(a.start, b.start), min(a.end, b.end))


@dataclass
class PaintMap:
    """Where a segment's layer texels were painted: coordinates into one seed segment's edited texture.

    Carrying an edit seam after seam by rendering it and lifting it again resamples the colours at
    every seam, and two fits never agree exactly, so the paint blurred and drifted by about 1.5 dB a
    seam (bench/RESULTS.md). Carrying *coordinates* instead samples the colours once, from the seed,
    however many seams away; and coordinates from several overlap frames average to a mean position
    where colours would ghost.
    """

    seed: int  # the segment whose edited texture holds the paint
    coords: Tensor  # 2×Hc×Wc grid_sample coordinates into the seed's texture
    known: Tensor  # Hc×Wc: the share of each texel whose coordinates the overlaps gave


def texel_grid(height: int, width: int) -> Tensor:
    """2×H×W grid_sample coordinates (align_corners=False) of every texel's centre."""
    y = (torch.arange(height) + 0.5) / height * 2 - 1
    x = (torch.arange(width) + 0.5) / width * 2 - 1
    return torch.stack(torch.meshgrid(x, y, indexing="xy"))


def carry_map(src: Layer, src_seg: Segment, paint: PaintMap, dst: Layer, dst_seg: Segment) -> PaintMap:
    """`dst`'s texels mapped through the frames the segments share into `src`'s, and on to the seed.

    Every shared frame splats, at each pixel where both layers are present, the seed coordinates
    `src` holds there into `dst`'s texture; a texel's coordinates are their weighted mean.
    """
    hc, wc = dst.texture.shape[1:]
    acc = torch.zeros(4, hc, wc)
    fields = torch.cat([paint.coords, paint.known[None]])
    for t in shared_frames(src_seg, dst_seg):
        local, there = t - src_seg.start, t - dst_seg.start
        seen = sample_texture(fields, src.uv[local : local + 1].float())[0]  # 3×H×W
        weight = torch.ones(seen.shape[1:])
        for layer, i in ((src, local), (dst, there)):
            if layer.alpha is not None:
                weight = weight * (layer.alpha[i].float().squeeze(-1) > 0.5)
        uv = dst.uv[there].float()
        s = supersample_factor(uv, weight, (hc, wc))
        frame = torch.cat([uv.permute(2, 0, 1), seen, weight[None]])
        if s > 1:
            frame = F.interpolate(frame[None], scale_factor=s, mode="bilinear", align_corners=False)[0]
        w = (frame[5] * frame[4]).reshape(-1, 1)  # presence × known
        values = torch.cat([frame[2:4].reshape(2, -1).T * w, w, frame[5].reshape(-1, 1)], 1)
        acc += splat(values, frame[:2].permute(1, 2, 0).reshape(-1, 2), (hc, wc))
    coords = acc[:2] / acc[2].clamp_min(1e-6)
    known = (acc[2] / acc[3].clamp_min(1e-6)) * (acc[3] > 1e-4)
    return PaintMap(paint.seed, coords, known)


def seed_paint(paint: PaintMap, seed_fitted: Tensor, seed_edited: Tensor) -> tuple[Tensor, Tensor]:
    """The seed's colours at each texel's seed coordinates, and how much of the texel they paint
    (none where the overlaps gave the texel no coordinates)."""
    changed = ((seed_edited - seed_fitted).abs().amax(0, keepdim=True) > 1e-6).float()
    grid = paint.coords.permute(1, 2, 0)[None]
    colour, share = sample_texture(torch.cat([seed_edited, changed]), grid)[0].split([3, 1])
    return colour, share[0] * (paint.known > 0.5)


# a seam that carries less of an object's paint than this share is told (see `paint_gap`)
CROSSED_ENOUGH = 0.9
# ... when a frame past the seam shows at least this share of the object where the seam did not
UNREACHED_SHARE = 0.05


@dataclass(frozen=True)
class PaintStop:
    """A seam an object's paint did not cross, wholly or in part, though the object is in view after it.

    An edit reaches a segment only through what the shared frames show (see the module docstring):
    an object painted in one segment and out of view at the seam comes back unpainted, and one half
    out of view there comes back half painted. Only layers with an alpha (masked objects) are told:
    the background's paint leaving the view at a seam is the camera moving on, and whether it comes
    back is what the seam cannot say.
    """

    layer: int
    name: str  # the layer's name, if it has one
    source: str  # the segment that shows the paint
    target: str  # the segment past the seam
    seen: tuple[int, int]  # the first and last frame of `source` that show the paint
    shared: tuple[int, int]  # the first and last frame the two segments share
    returns: int  # the nearest frame past the seam that shows the layer where the paint did not reach
    crossed: float | None = None  # the share of the paint `source` shows that the shared frames show

    def message(self) -> str:
        layer = f"layer {self.layer}" + (f" ({self.name})" if self.name else "")
        back = (
            f"from frame {self.returns} on"
            if self.returns > self.shared[1]
            else f"up to frame {self.returns}"
        )
        fix = (
            "cut where what you painted is in view (--segments auto with masks, or a longer --overlap), "
            "or edit a keyframe there too"
        )
        if self.crossed is not None:
            return (
                f"only {self.crossed:.0%} of the paint on {layer} that {self.source} shows (frames "
                f"{self.seen[0]}-{self.seen[1]}) is in view in the frames it shares with {self.target} "
                f"({self.shared[0]}-{self.shared[1]}): the rest does not reach {self.target} or past it, "
                f"where the layer shows parts those frames do not ({back}); {fix}"
            )
        return (
            f"the paint on {layer} shows in {self.source} (frames {self.seen[0]}-{self.seen[1]}) but not "
            f"in the frames it shares with {self.target} ({self.shared[0]}-{self.shared[1]}), so the layer "
            f"is unpainted where it is back in view ({back}); {fix}"
        )


def _sample_step(layer: Layer) -> int:
    """Frames are read on a grid of about 120 rows: the questions here are about where, not detail."""
    return max(1, min(layer.uv.shape[1:3]) // 120)


def _visible(layer: Layer, t: int, cover: Tensor | None = None) -> Tensor:
    """Bool grid: where frame t (the layer's own index) shows the layer, on a texel `cover` marks."""
    step = _sample_step(layer)
    uv = layer.uv[t : t + 1, ::step, ::step]
    seen = torch.ones(uv.shape[1:3], dtype=torch.bool)
    if cover is not None:
        seen &= sample_texture(cover[None], uv.float())[0, 0] > 0.5
    if layer.alpha is not None:
        seen &= layer.alpha[t, ::step, ::step].float() > 0.5
    return seen


def frames_showing(layer: Layer, frames: Iterable[int], cover: Tensor | None = None) -> Iterator[int]:
    """Those of `frames` (the layer's own indices, in the order given) where the layer is present,
    on a texel that `cover` (Hc×Wc) marks if given."""
    return (t for t in frames if _visible(layer, t, cover).any())


def seen_texels(layer: Layer, frames: list[int], cover: Tensor) -> tuple[Tensor, list[Tensor]]:
    """`cover` on a texel grid as coarse as the frames sample the texture, and for each of `frames`
    the cells of that grid the frame shows the layer on.

    A frame splatted onto its texture leaves holes where the texture is magnified; on a grid coarsened
    by the magnification (`supersample_factor`) every cell a frame shows is hit.
    """
    step = _sample_step(layer)
    tex_hw = tuple(cover.shape)
    present = [_visible(layer, t).float() for t in frames]
    uvs = [layer.uv[t, ::step, ::step].float() for t in frames]
    factor = max((supersample_factor(uv, p, tex_hw) for uv, p in zip(uvs, present, strict=True)), default=1)
    size = (math.ceil(tex_hw[0] / factor), math.ceil(tex_hw[1] / factor))
    coarse = F.adaptive_avg_pool2d(cover[None, None].float(), size)[0, 0]
    shown = [
        splat(p.reshape(-1, 1), uv.reshape(-1, 2), size)[0] > 0.25 for uv, p in zip(uvs, present, strict=True)
    ]
    return coarse, shown


def paint_stop(
    layer: int, src: tuple[Layer, Segment], cover: Tensor, past: list[tuple[Layer, Segment]]
) -> PaintStop | None:
    """The stop at the seam from `src` to the first of `past` (the segments past the seam, nearest
    first) if `src` shows its paint (`cover`), the shared frames do not, and the layer is back in view
    past them; else None."""
    (src_layer, src_seg), dst_seg = src, past[0][1]
    if src_layer.alpha is None:
        return None
    shown = [t + src_seg.start for t in frames_showing(src_layer, range(src_seg.frames), cover)]
    shared = shared_frames(src_seg, dst_seg)
    if not shown or any(t in shared for t in shown):
        return None
    for dst_layer, seg in past:
        back = next(frames_showing(dst_layer, _beyond(shared, seg, dst_seg.start > src_seg.start)), None)
        if back is not None:
            seam = (shared.start, shared.stop - 1)
            return PaintStop(
                layer,
                src_layer.name,
                src_seg.name,
                dst_seg.name,
                (shown[0], shown[-1]),
                seam,
                back + seg.start,
            )
    return None


def _beyond(shared: range, seg: Segment, forward: bool) -> range:
    """`seg`'s own indices of its frames past the seam `shared`, nearest first."""
    if forward:
        return range(max(shared.stop, seg.start) - seg.start, seg.frames)
    return range(min(shared.start, seg.end) - 1 - seg.start, -1, -1)


def paint_gap(
    layer: int, src: tuple[Layer, Segment], cover: Tensor, past: list[tuple[Layer, Segment, Tensor]]
) -> PaintStop | None:
    """The seam from `src` to the first of `past` (the segments past the seam, nearest first, each with
    `known`: its texels whose coordinates the seams gave) if it carried only part of the paint `src`
    shows (`cover`) and a frame past it shows the layer where no paint came; else None.

    The share crossed is counted on `src`'s canonical: of the painted texels its frames show, those
    the shared frames show. Which of the rest a later frame shows cannot be told (no frame shows both),
    so a gap is told where one shows enough of the layer that the seams did not reach, in the next
    segment or further on (a part out of view all through the next segment is back in a later one).
    """
    (src_layer, src_seg), dst_seg = src, past[0][1]
    if src_layer.alpha is None:
        return None
    shared = shared_frames(src_seg, dst_seg)
    shown = list(frames_showing(src_layer, range(src_seg.frames), cover))
    if not shown:
        return None
    at_seam = [t - src_seg.start for t in shared]
    painted, seen = seen_texels(src_layer, shown + at_seam, cover)
    in_segment = (painted > 0.5) & torch.stack(seen[: len(shown)]).any(0)
    total = int(in_segment.sum())
    if total == 0:
        return None
    crossed = int((in_segment & torch.stack(seen[len(shown) :]).any(0)).sum()) / total
    if crossed >= CROSSED_ENOUGH:
        return None
    for dst_layer, seg, known in past:
        unreached = (known < 0.5).float()
        for t in _beyond(shared, seg, dst_seg.start > src_seg.start):
            present = int(_visible(dst_layer, t).sum())
            if present and int(_visible(dst_layer, t, unreached).sum()) >= UNREACHED_SHARE * present:
                seam = (shared.start, shared.stop - 1)
                seen_range = (shown[0] + src_seg.start, shown[-1] + src_seg.start)
                return PaintStop(
                    layer,
                    src_layer.name,
                    src_seg.name,
                    dst_seg.name,
                    seen_range,
                    seam,
                    t + seg.start,
                    crossed,
                )
    return None


class SegmentedVideo:
    """The bake of a segmented run: per-segment 2D bakes, rendered and edited as one video."""

    def __init__(
        self,
        segments: list[Segment],
        bakes: list[CanonicalVideo],
        fps: float,
        paint_stops: list[PaintStop] | None = None,
    ):
        self.segments = segments
        self.bakes = bakes
        self.fps = fps
        self.paint_stops = paint_stops or []  # seams an edit's paint did not cross (see `spread`)

    @property
    def T(self) -> int:
        return self.segments[-1].end

    @property
    def H(self) -> int:
        return self.bakes[0].H

    @property
    def W(self) -> int:
        return self.bakes[0].W

    def render(self, frames: Any = None, textures: Any = None) -> Tensor:
        """Frames (all by default) as F×3×H×W, overlaps cross-faded."""
        if textures is not None:
            raise ValueError("a segmented video has textures per segment; render its edited bakes instead")
        ids = list(range(self.T)) if frames is None else [int(t) for t in frames]
        out = torch.zeros(len(ids), 3, self.H, self.W)
        for k, seg in enumerate(self.segments):
            rows = [
                (i, t - seg.start, w)
                for i, t in enumerate(ids)
                for j, w in blend_weights(self.segments, t)
                if j == k
            ]
            if not rows:
                continue
            index, local, weight = zip(*rows, strict=True)
            video = self.bakes[k].render(list(local))
            out.index_add_(0, torch.tensor(index), video * torch.tensor(weight)[:, None, None, None])
        return out

    def save(self, folder: str | Path) -> None:
        plan = [asdict(seg) for seg in self.segments]
        write_json(Path(folder) / SEGMENTS_FILE, {"fps": self.fps, "segments": plan})

    @classmethod
    def load(cls, folder: str | Path) -> SegmentedVideo:
        """The plan in `folder` (RUN/canonical) and every segment's bake from RUN/segments/."""
        from .representation import load_bake

        folder = Path(folder)
        path = folder / SEGMENTS_FILE
        meta = read_json(path, "fit the clip again with --resume")
        try:
            segments = [Segment(str(s["name"]), int(s["start"]), int(s["end"])) for s in meta["segments"]]
            fps = float(meta["fps"])
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptFile(path, f"missing or malformed {e}", "fit the clip again with --resume") from None
        bakes = []
        for seg in segments:
            bake = load_bake(RunFolder.open(folder.parent / SEGMENTS_DIR / seg.name))
            if not isinstance(bake, CanonicalVideo) or seg.frames != bake.T:
                raise CorruptFile(path, f"segment {seg.name} does not match the plan", "fit the clip again")
            bakes.append(bake)
        return cls(segments, bakes, fps)

    def with_bakes(self, bakes: list[CanonicalVideo]) -> SegmentedVideo:
        return SegmentedVideo(self.segments, bakes, self.fps)

    def lift_keyframe(
        self, frame: int, edited: Tensor, source: Tensor, mask: Tensor | None, overrides: Any, progress: bool
    ) -> tuple[SegmentedVideo, dict[str, Any]]:
        """Lift edited frame `frame` into every segment that holds it, then carry it to the rest."""
        if overrides:
            raise UserError("a 2D keyframe lift has no options to --set; drop --set")
        seeds = {
            k: keyframe_textures(self.bakes[k], source, frame - seg.start, edited, mask)
            for k, seg in enumerate(self.segments)
            if frame in seg
        }
        return self.spread(seeds), {"segments": [self.segments[k].name for k in seeds]}

    def spread(self, seeds: dict[int, list[Tensor]]) -> SegmentedVideo:
        """Every segment's edited bake, from the edited textures of the `seeds` segments outwards.

        Each layer's paint is carried as a map into its seed (PaintMap), segment after segment
        through the overlaps, and sampled from the seed once. Where a segment shows paint that the
        frames it shares with the next do not, the result's `paint_stops` says so.
        """
        textures = [seeds.get(k, bake.textures()) for k, bake in enumerate(self.bakes)]
        if any(len(b.layers) != len(self.bakes[0].layers) for b in self.bakes):
            raise UserError("the segments have different numbers of layers; fit the clip again")
        first, last = min(seeds), max(seeds)
        order = [(k, k - 1) for k in range(last + 1, len(self.bakes))]
        order += [(k, k + 1) for k in range(first - 1, -1, -1)]
        stops: list[PaintStop] = []
        for layer in range(len(self.bakes[0].layers)):
            fitted = [b.layers[layer].texture for b in self.bakes]
            maps = {
                k: PaintMap(k, texel_grid(*fitted[k].shape[1:]), torch.ones(fitted[k].shape[1:]))
                for k in seeds
                if not torch.equal(seeds[k][layer], fitted[k])
            }
            covers = {k: seed_paint(maps[k], fitted[k], seeds[k][layer])[1] for k in maps}
            carried = []
            for k, src in order:
                if src not in maps:
                    continue
                layers = self.bakes[src].layers[layer], self.bakes[k].layers[layer]
                paint = carry_map(layers[0], self.segments[src], maps[src], layers[1], self.segments[k])
                colour, cover = seed_paint(paint, fitted[paint.seed], textures[paint.seed][layer])
                maps[k], covers[k] = paint, cover
                textures[k][layer] = fitted[k] * (1 - cover) + colour * cover
                carried.append((k, src))
            for k, src in carried:  # once every segment's paint is known: a gap may show further on
                beyond = range(k, len(self.bakes)) if k > src else range(k, -1, -1)
                source = (self.bakes[src].layers[layer], self.segments[src])
                if not (covers[k] > 0.5).any():
                    past = [(self.bakes[j].layers[layer], self.segments[j]) for j in beyond]
                    stop = paint_stop(layer, source, covers[src], past)
                else:
                    ahead = [(self.bakes[j].layers[layer], self.segments[j], maps[j].known) for j in beyond]
                    stop = paint_gap(layer, source, covers[src], ahead)
                stops += [stop] if stop else []
        edited = [bake.with_textures(tex) for bake, tex in zip(self.bakes, textures, strict=True)]
        return SegmentedVideo(self.segments, edited, self.fps, stops)

    def save_edit(self, folder: Path) -> None:
        for seg, bake in zip(self.segments, self.bakes, strict=True):
            write_textures(folder / seg.name, bake.textures())

    def load_edit(self, folder: Path) -> SegmentedVideo:
        bakes = []
        for seg, bake in zip(self.segments, self.bakes, strict=True):
            textures = read_textures(folder / seg.name, folder.name)
            if [t.shape for t in textures] != [t.shape for t in bake.textures()]:
                raise UserError(
                    f"edit '{folder.name}' does not match segment {seg.name}; make the edit again"
                )
            bakes.append(bake.with_textures(textures))
        return self.with_bakes(bakes)
