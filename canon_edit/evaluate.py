"""`eval`: reconstruction or edit quality of a run as JSON.

PSNR/SSIM compare the re-rendered video with the source frames (for an edit they say how much
changed); the warping error uses the SOURCE video's flow, so an edit that follows the motion
scores near the source video's own warping error and a flickering one far above it.
"""

from __future__ import annotations

import json
from typing import Any

from torch import Tensor

from .atomic import write_json
from .canonical import CanonicalVideo
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


def evaluate_run(
    run: RunFolder,
    clip: Clip,
    cv: CanonicalVideo | None = None,
    edit: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute and store the figures of the reconstruction (or of edit `edit`).

    `extra` holds a representation's own figures (e.g. alpha IoU); they are kept on re-evaluation.
    """
    from .edit.store import load_edit

    cv = cv or CanonicalVideo.load(run.canonical)
    textures = load_edit(run, edit) if edit else None
    video = cv.render(textures=textures).clamp(0, 1)
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
        if extra is None and run.metrics.is_file():
            extra = json.loads(run.metrics.read_text()).get("extra")
        if extra:
            figures["extra"] = extra
    write_json((run.edits / edit / "metrics.json") if edit else run.metrics, figures)
    return figures
