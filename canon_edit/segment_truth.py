"""A segmented run whose segments' bakes are the procedural long clip's truth: edits across seams
checked against a known answer, with no fit in the way (the tests and `bench/paint_crossing.py`).

Each segment gets a canonical of its own, as separate fits would: the background cropped to the
columns the segment sees and the sprite mirrored, so an edit reaches a segment only by being carried
into that segment's own texture space.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .canonical import CanonicalVideo, Layer
from .fitting import finish_run
from .procedural import ProceduralClip
from .run import RunFolder
from .segments import SEGMENTS_DIR, Segment, SegmentedVideo, plan_segments
from .video import read_clip, write_pngs


def background_columns(truth: CanonicalVideo, start: int, end: int) -> tuple[int, int]:
    """The background texture's columns frames [start, end) see, with a margin."""
    bg = truth.layers[0]
    x = (bg.uv[start:end, ..., 0].float() + 1) * bg.texture.shape[2] / 2
    return max(0, int(x.min()) - 2), min(bg.texture.shape[2], int(x.max()) + 3)


def own_canonical(truth: CanonicalVideo, start: int, end: int) -> CanonicalVideo:
    """The truth over frames [start, end) in a texture space of its own."""
    bg, sprite = truth.layers
    uv = bg.uv[start:end].float()
    x0, x1 = background_columns(truth, start, end)
    x = (uv[..., 0] + 1) * bg.texture.shape[2] / 2
    crop_uv = uv.clone()
    crop_uv[..., 0] = (x - x0) * 2 / (x1 - x0) - 1
    mirrored = sprite.uv[start:end].float() * torch.tensor([-1.0, 1.0])
    return CanonicalVideo(
        layers=[
            Layer(texture=bg.texture[:, :, x0:x1].clone(), uv=crop_uv.half(), name="background"),
            Layer(
                texture=sprite.texture.flip(2),
                uv=mirrored.half(),
                alpha=sprite.alpha[start:end],
                coverage=sprite.coverage.flip(1),
                name="sprite",
            ),
        ],
        fps=truth.fps,
    )


def make_segmented_truth_run(
    path: Path, proc: ProceduralClip, length: int, overlap: int, segments: list[Segment] | None = None
) -> RunFolder:
    """A finished segmented run in `path`/run (its clip in `path`/clip) cut by `plan_segments` unless
    `segments` are given, whose segments' bakes are the truth, each in its own canonical."""
    write_pngs(path / "clip" / "frames", proc.clip.frames)
    write_pngs(path / "clip" / "masks", proc.clip.masks.expand(-1, 3, -1, -1))
    clip = read_clip(path / "clip")
    segments = segments or plan_segments(clip.T, length, overlap)
    run = RunFolder.create(path / "run")
    run.save_clip(clip)
    plan = [{"name": s.name, "start": s.start, "end": s.end} for s in segments]
    run.write_info(method="codef", status="fitting", fps=clip.fps, segments=plan, overlap=overlap)
    bakes = []
    for seg in segments:
        sub = RunFolder.create(run.path / SEGMENTS_DIR / seg.name)
        part = read_clip(path / "clip", max_frames=seg.end)
        part.frames, part.masks = part.frames[seg.start :], part.masks[seg.start :]
        sub.save_clip(part)
        sub.write_info(method="codef", status="fitting", fps=clip.fps)
        bakes.append(own_canonical(proc.truth, seg.start, seg.end))
        finish_run(sub, bakes[-1], part)
        sub.write_info(status="done")
    finish_run(run, SegmentedVideo(segments, bakes, clip.fps), clip)
    run.write_info(status="done")
    return run
