"""Long clips as overlapping segments, each fitted into a canonical of its own.

One canonical holds a few seconds well; a long pan stretches it past its resolution. A segmented
run splits the clip into segments of N frames that share K frames with the next one:

    RUN/segments/seg_000/ ...   a complete run of its own (fit, resume, render, eval all work on it)
    RUN/canonical/segments.json the plan: each segment's name and frame range, and the overlap

`SegmentedVideo` is the bake of such a run: frame t is rendered by the segment that holds it, and in
an overlap by both, cross-faded linearly, so the seam is a dissolve rather than a jump. An edit
made in one segment reaches the others through the overlaps: the edited segment renders the
overlap frames, and those are lifted into the neighbour's canonical (the keyframe lift), segment
after segment in both directions. An edit therefore crosses a seam only through what the overlap
frames show.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .atomic import write_json
from .canonical import (
    CanonicalVideo,
    changed_mask,
    keyframe_textures,
    lift_keyframe,
    read_textures,
    sample_texture,
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


def camera_path(flow: Flow, masks: Tensor | None = None) -> Tensor:
    """T×2: where the view has moved since frame 0, in pixels: the median consistent flow of the
    background (pixels outside `masks`, T×1×H×W, when given), summed."""
    steps = [torch.zeros(2)]
    for t in range(flow.forward.shape[0]):
        ok = flow.forward_ok[t].bool() & (masks is None or masks[t, 0] < 0.5)
        vectors = flow.forward[t].float().flatten(1)[:, ok.flatten()] if ok.any() else torch.zeros(2, 1)
        steps.append(vectors.median(dim=1).values)
    return torch.stack(steps).cumsum(0)


def plan_by_motion(
    flow: Flow, masks: Tensor | None, stretch: float, overlap: int, longest: int
) -> list[Segment]:
    """Segments that each span at most `stretch` frame sizes of camera travel (and `longest` frames).

    A canonical holds the union of what its frames see at the frames' resolution: a view that
    travels one frame width needs a canonical twice the frame's width, and past that the texture is
    spread thin. Cuts fall where the accumulated travel since the segment's start passes `stretch`.
    """
    height, width = flow.forward.shape[-2:]
    path = camera_path(flow, masks) / torch.tensor([float(width), float(height)])
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
        bounds.append((start, end))
        if end == frames:
            return [Segment(f"seg_{k:03d}", a, b) for k, (a, b) in enumerate(bounds)]
        start = end - overlap


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


def carry_edit(
    src: CanonicalVideo, src_seg: Segment, edited: list[Tensor], dst: CanonicalVideo, dst_seg: Segment
) -> list[Tensor]:
    """`dst`'s textures with what `edited` changed in `src`, lifted layer by layer from the frames
    the two segments share.

    Layers are carried one by one, not as the composited frame: a layer's uv covers the pixels other
    layers hide, so background the foreground covers is carried too. The middle shared frame goes
    first and later frames add only texels still unpainted: two fits never agree exactly, and
    lifting the same paint from every frame would leave it ghosted at slightly different places.
    A foreground layer counts only where it is present.
    """
    if len(src.layers) != len(dst.layers):
        raise UserError(f"segments have {len(src.layers)} and {len(dst.layers)} layers; fit the clip again")
    shared = shared_frames(src_seg, dst_seg)
    order = sorted(shared, key=lambda t: abs(t - (shared.start + shared.stop - 1) / 2))
    textures = dst.textures()
    for k, (layer, target) in enumerate(zip(src.layers, dst.layers, strict=True)):
        if torch.equal(edited[k], layer.texture):
            continue
        bare_src = CanonicalVideo([replace(layer, alpha=None, shading=None, detail=None)])
        texture = target.texture
        painted = torch.zeros(texture.shape[1:])
        for t in order:
            local, there = t - src_seg.start, t - dst_seg.start
            before = bare_src.render([local])[0]
            after = bare_src.render([local], textures=[edited[k]])[0]
            mask = changed_mask(after, before) * (
                sample_texture(painted[None], target.uv[there : there + 1])[0, 0] < 0.5
            )
            if layer.alpha is not None:
                mask = mask * (layer.alpha[local].float() > 0.5)
            if not mask.any():
                continue
            bare_dst = CanonicalVideo(
                [replace(target, texture=texture, alpha=None, shading=None, detail=None)]
            )
            lifted = lift_keyframe(bare_dst, there, after, before, mask=mask)[0]
            new = ((lifted - texture).abs().amax(0) > 1e-6).float()
            painted = torch.maximum(painted, F.max_pool2d(new[None], 5, stride=1, padding=2)[0])
            texture = lifted
        textures[k] = texture
    return textures


class SegmentedVideo:
    """The bake of a segmented run: per-segment 2D bakes, rendered and edited as one video."""

    def __init__(self, segments: list[Segment], bakes: list[CanonicalVideo], fps: float):
        self.segments = segments
        self.bakes = bakes
        self.fps = fps

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
        """Every segment's edited bake, from the edited textures of the `seeds` segments outwards."""
        textures = [seeds.get(k, bake.textures()) for k, bake in enumerate(self.bakes)]
        first, last = min(seeds), max(seeds)
        order = [(k, k - 1) for k in range(last + 1, len(self.bakes))]
        order += [(k, k + 1) for k in range(first - 1, -1, -1)]
        for k, src in order:
            textures[k] = carry_edit(
                self.bakes[src], self.segments[src], textures[src], self.bakes[k], self.segments[k]
            )
        return self.with_bakes(
            [bake.with_textures(tex) for bake, tex in zip(self.bakes, textures, strict=True)]
        )

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
