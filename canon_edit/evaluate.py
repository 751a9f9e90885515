"""`eval`: reconstruction or edit quality of a run as JSON.

PSNR/SSIM compare the re-rendered video with the clip the run stores (for an edit they say how much
changed); the warping error uses the SOURCE video's flow, so an edit that follows the motion
scores near the source video's own warping error and a flickering one far above it. A run whose
representation fits without flow (portrait) gets that flow computed on first use and cached in
RUN/flow.safetensors, so every run reports the same keys.

JSON keys: run, edit, frames, height, width, psnr, ssim, warp_error, source_warp_error, and for the
reconstruction `extra`, the representation's own figures (atlas: alpha IoU; portrait: masked_psnr
and masked_ssim over the person mask, landmark_error_px when the tracking came from landmarks).
"""

from __future__ import annotations

import sys
from typing import Any

from torch import Tensor

from .atomic import write_json
from .files import CorruptFile, read_json
from .flow import load_or_compute_flow
from .metrics import psnr, ssim, warping_error
from .run import RunFolder
from .video import Clip


def video_metrics(video: Tensor, source: Tensor, flow_source: Any) -> dict[str, float]:
    return {
        "psnr": round(psnr(video, source), 3),
        "ssim": round(ssim(video, source), 4),
        "warp_error": warping_error(video, flow_source),
        "source_warp_error": warping_error(source, flow_source),
    }


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
    clip: Clip,
    video: Tensor,
    edit: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute and store the figures of `video`, the reconstruction (or edit `edit`) of `clip`.

    `extra` holds a representation's own figures (e.g. alpha IoU); they are kept on re-evaluation.
    """
    flow = load_or_compute_flow(run.flow, clip.frames)
    figures: dict[str, Any] = {
        "run": str(run.path),
        "edit": edit,
        "frames": clip.T,
        "height": clip.H,
        "width": clip.W,
        **video_metrics(video, clip.frames, flow),
    }
    if not edit:
        extra = extra if extra is not None else _stored_extra(run)
        if extra:
            figures["extra"] = extra
    write_json((run.edits / edit / "metrics.json") if edit else run.metrics, figures)
    return figures
