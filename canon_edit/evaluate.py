"""`eval`: reconstruction or edit quality of a run as JSON.

PSNR/SSIM compare the re-rendered video with the source frames (for an edit they say how much
changed); the warping error uses the SOURCE video's flow, so an edit that follows the motion
scores near the source video's own warping error and a flickering one far above it. A run whose
representation fits without flow (portrait) gets that flow computed on first use and cached in
RUN/flow.safetensors, so every run reports the same keys.

JSON keys: run, edit, frames, height, width, psnr, ssim, warp_error, source_warp_error, and for the
reconstruction `extra`, the representation's own figures (atlas: alpha IoU; portrait: masked_psnr
and masked_ssim over the person mask, landmark_error_px when the tracking came from landmarks).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from torch import Tensor

from .atomic import write_json
from .canonical import CanonicalVideo
from .errors import UserError
from .flow import load_or_compute_flow
from .metrics import psnr, ssim, warping_error
from .run import RunFolder
from .video import Clip


class Bake(Protocol):
    """What a representation bakes to and the spine renders: CanonicalVideo or PortraitAsset."""

    fps: float

    @property
    def T(self) -> int: ...

    def render(self, frames: Any = None, textures: Any = None) -> Tensor: ...

    def save(self, folder: str | Path) -> None: ...


def load_canonical(folder: str | Path) -> Bake:
    """The bake in a run's canonical/ folder, of the kind its asset.json names (none: CanonicalVideo)."""
    meta = Path(folder) / "asset.json"
    if not meta.is_file():
        return CanonicalVideo.load(folder)
    kind = json.loads(meta.read_text()).get("kind")
    if kind == "portrait":
        from representations.portrait.asset import PortraitAsset

        return PortraitAsset.load(folder)
    raise UserError(f"{folder} holds a '{kind}' bake that this canon-edit cannot open; upgrade canon-edit")


def editable(bake: Bake, how: str) -> CanonicalVideo:
    """`bake` as the texture-edited CanonicalVideo; portrait bakes have no canonical textures yet."""
    if isinstance(bake, CanonicalVideo):
        return bake
    raise UserError(
        f"portrait edits are not supported by {how} yet (a portrait run holds Gaussians, not canonical "
        "textures); 'canon-edit render' and 'canon-edit eval' work on it"
    )


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
    cv: Bake | None = None,
    edit: str | None = None,
    extra: dict[str, Any] | None = None,
    video: Tensor | None = None,
) -> dict[str, Any]:
    """Compute and store the figures of the reconstruction (or of edit `edit`).

    `extra` holds a representation's own figures (e.g. alpha IoU); they are kept on re-evaluation.
    `video` is the render when the caller has it already (rendering a portrait is not cheap).
    """
    from .edit.store import load_edit

    if video is None:
        cv = cv or load_canonical(run.canonical)
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
