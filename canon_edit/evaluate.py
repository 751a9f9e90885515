"""`eval`: reconstruction or edit quality of a run as JSON.

PSNR/SSIM compare the re-rendered video with the clip the run stores (for an edit they say how much
changed); the warping error uses the SOURCE video's flow, so an edit that follows the motion
scores near the source video's own warping error and a flickering one far above it. A run whose
representation fits without flow (portrait) gets that flow computed on first use and cached in
RUN/flow.safetensors, so every run reports the same keys. The video, the clip and the flow are
read a chunk at a time (the bake's render, the run's mapped clip and flow cache), so evaluating a
long clip takes no more memory than a short one.

JSON keys: run, edit, frames, height, width, psnr, ssim, warp_error, source_warp_error;
psnr_foreground and psnr_background (inside and outside the clip's masks) where the clip has masks,
which tell whether the objects or the scene around them hold the error; and for the
reconstruction `extra`, the representation's own figures (atlas: alpha IoU; portrait: masked_psnr
and masked_ssim over the person mask, landmark_error_px when the tracking came from landmarks).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from torch import Tensor

from .atomic import write_json
from .files import CorruptFile, MappedTensors, read_json
from .flow import Flow, chunks_key, stored_flow
from .metrics import VideoMetrics
from .run import RunFolder, StoredClip
from .video import CHUNK, Clip, frame_chunks


def render_chunks(render: Callable[[list[int]], Tensor], frames: int, size: int = CHUNK) -> Iterator[Tensor]:
    """Frames 0..frames-1 of `render` (a bake's `render`), `size` at a time.

    Not clamped: the video writers clamp as they convert to 8 bits, and `evaluate_video` clamps.
    """
    for ids in frame_chunks(frames, size):
        yield render(ids)


def clip_flow(
    run: RunFolder, clip: Clip | StoredClip, show_progress: bool = False
) -> tuple[Flow, MappedTensors]:
    """The flow of `clip` from the run's cache (computed and cached first when it is missing or for
    other frames), mapped; the clip is read a chunk at a time either way, so a long one fits."""
    key = chunks_key(
        (clip.T, 3, clip.H, clip.W), (clip.read(ids[0], ids[-1] + 1) for ids in frame_chunks(clip.T))
    )
    return stored_flow(run.flow, key, clip.read, (clip.T, clip.H, clip.W), show_progress=show_progress)


def paired(
    clip: Clip | StoredClip, video: Tensor | Iterable[Tensor], as_uint8: bool = False
) -> Iterator[tuple[Tensor, Tensor]]:
    """Each chunk of `video` (a tensor, or chunks of consecutive frames) with the clip's frames it shows
    (float in [0, 1]; `as_uint8`: 8 bits, as a run stores them, for what only shows them)."""
    read = clip.read_uint8 if as_uint8 else clip.read
    start = 0
    for chunk in video.split(CHUNK) if isinstance(video, Tensor) else video:
        yield chunk, read(start, start + len(chunk))
        start += len(chunk)


def _stored_extra(run: RunFolder) -> dict[str, Any] | None:
    """The representation's own figures from an earlier metrics.json (they need the model to recompute)."""
    if not run.metrics.is_file():
        return None
    try:
        return read_json(run.metrics, "").get("extra")
    except CorruptFile:
        print(
            f"canon-edit: note: {run.metrics} was unreadable; it is rewritten without 'extra'",
            file=sys.stderr,
        )
        return None


def evaluate_video(
    run: RunFolder,
    clip: Clip | StoredClip,
    video: Tensor | Iterable[Tensor],
    edit: str | None = None,
    extra: dict[str, Any] | None = None,
    each: Callable[[Tensor, Tensor], None] | None = None,
) -> dict[str, Any]:
    """Compute and store the figures of `video`, the reconstruction (or edit `edit`) of `clip`.

    `video` may be chunks of consecutive frames (`render_chunks`): each is clamped to [0, 1], scored
    against the clip's frames and dropped. `each(video, source)` sees every chunk on the way, so a
    caller that also writes the video renders it once. `extra` holds a representation's own figures
    (e.g. alpha IoU); they are kept on re-evaluation.
    """
    flow, flow_file = clip_flow(run, clip)
    metrics = VideoMetrics(flow, clip.T)
    for chunk, source in paired(clip, video):
        metrics.add(chunk.clamp(0, 1), source, clip.read_foreground(metrics.seen, metrics.seen + len(chunk)))
        if each is not None:
            each(chunk, source)
        flow_file.release()
    measured = metrics.figures()
    figures: dict[str, Any] = {
        "run": str(run.path),
        "edit": edit,
        "frames": clip.T,
        "height": clip.H,
        "width": clip.W,
        "psnr": round(measured["psnr"], 3),
        "ssim": round(measured["ssim"], 4),
        "warp_error": measured["warp_error"],
        "source_warp_error": measured["source_warp_error"],
        **{key: round(value, 3) for key, value in measured.items() if key.startswith("psnr_")},
    }
    if not edit:
        extra = extra if extra is not None else _stored_extra(run)
        if extra:
            figures["extra"] = extra
    write_json((run.edits / edit / "metrics.json") if edit else run.metrics, figures)
    return figures
