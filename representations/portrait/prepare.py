"""`Portrait.prepare`: the body model, the tracking and (when the clip has none) the masks of a clip.

Tracking comes from the file in ``cfg.tracking`` (a canon-edit tracking.json, or PortraitGen's
smplx_track.pth via import_tracking.py) or, without one, from the face landmarks of the detector
(detect.py) fitted by `track_landmarks`. A clip without masks gets the detector's person
segmentation, thresholded at 0.5. Everything slow is cached in the run folder, and every pass
(first or resumed) fits to what the cache holds, so --resume neither redoes nor changes it::

    RUN/detections.safetensors   face landmarks, pose and person masks (only when needed)
    RUN/tracking.json            the tracking the fit uses, in the body model's coefficient counts
    RUN/tracking_error.json      the tracker's landmark error per frame (tracking from landmarks only)
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from canon_edit.atomic import write_json
from canon_edit.errors import UserError
from canon_edit.run import RunFolder
from canon_edit.video import Clip

from .body import BodyModel, load_body_spec
from .config import PortraitConfig
from .import_tracking import fit_coefficients, hands_mean, import_portraitgen
from .tracking import Tracking, load_tracking, track_landmarks

MASK_THRESHOLD = 0.5
DETECTIONS = "detections.safetensors"
TRACKING = "tracking.json"
TRACKING_ERROR = "tracking_error.json"


def read_tracking_file(cfg: PortraitConfig, frames: int) -> Tracking:
    """The tracking file named in the config, by suffix: .json (tracking.py) or .pth (PortraitGen)."""
    path = Path(cfg.tracking or "")
    if path.suffix.lower() == ".json":
        return load_tracking(path, frames)
    if path.suffix.lower() in (".pth", ".pt"):
        if cfg.body != "smplx":
            raise UserError(
                f"tracking: {path} is PortraitGen's SMPL-X tracking; fit it with --body smplx "
                "--body-model-dir DIR"
            )
        return import_portraitgen(path, frames, hands_mean(cfg.body_model_dir))
    raise UserError(
        f"tracking: {path} is neither a tracking .json nor PortraitGen's smplx_track.pth; give one of those"
    )


def load_portrait_body(cfg: PortraitConfig, tracking: Tracking | None) -> BodyModel:
    """The configured body; SMPL-X gets the tracking's shape/expression counts (PortraitGen: 300/100)."""
    spec: dict[str, Any] = {"name": cfg.body, "model_dir": cfg.body_model_dir, "variant": cfg.body_variant}
    if tracking is not None and cfg.body == "smplx":
        spec |= {"n_shape": tracking.shape.shape[1], "n_expression": tracking.expression.shape[1]}
    body = load_body_spec(spec)
    if tracking is not None and tracking.body != body.name:
        raise UserError(
            f"the tracking drives the '{tracking.body}' body model but the fit uses '{body.name}'; "
            f"pass --body {tracking.body}"
        )
    return body


def prepare_portrait(
    clip: Clip, cfg: PortraitConfig, run: RunFolder, show_progress: bool
) -> tuple[Clip, dict[str, Any]]:
    """(clip with masks, constructor kwargs body/tracking/landmark_error_px), cached in `run`."""
    cached = run.path / TRACKING
    if cached.is_file():
        tracking = load_tracking(cached, clip.T)
    else:
        tracking = read_tracking_file(cfg, clip.T) if cfg.tracking else None
    body = load_portrait_body(cfg, tracking)
    if tracking is None and body.landmark_faces.numel() == 0:
        raise UserError(
            f"the '{body.name}' body model has no face landmarks to track; pass --body smplx, "
            "or --tracking FILE with the tracking of the clip"
        )
    detections = None
    if tracking is None or clip.masks is None:
        from .detect import detect_clip

        detections = detect_clip(clip.frames, cache=run.path / DETECTIONS, show_progress=show_progress)
    if tracking is None:
        face = detections.face
        if face.shape[1] != body.landmark_faces.numel():
            raise UserError(
                f"the detector gives {face.shape[1]} face landmarks but the '{body.name}' body model has "
                f"{body.landmark_faces.numel()}; pass --body smplx or --tracking FILE"
            )
        tracking, error = track_landmarks(
            body, face, clip.W, clip.H, cfg.tracker, keypoints=detections.pose, fps=clip.fps
        )
        per_frame = [round(float(e), 4) for e in error]
        write_json(run.path / TRACKING_ERROR, {"mean_px": float(error.mean()), "per_frame_px": per_frame})
    if not cached.is_file():
        fit_coefficients(tracking, body).save(cached)
        run.write_info(tracking_source=cfg.tracking or "face landmarks (detections.safetensors)")
    tracking = load_tracking(cached, clip.T, body.n_joints)
    error_file = run.path / TRACKING_ERROR
    landmark_error = json.loads(error_file.read_text())["mean_px"] if error_file.is_file() else None
    if clip.masks is None:
        clip = replace(clip, masks=(detections.mask > MASK_THRESHOLD).float())
        run.write_info(masks=f"person segmentation of the face detector (threshold {MASK_THRESHOLD})")
        if show_progress:
            print(
                f"portrait: the clip has no masks; using the detector's person segmentation "
                f"(threshold {MASK_THRESHOLD}) as masks",
                file=sys.stderr,
            )
    return clip, {"body": body, "tracking": tracking, "landmark_error_px": landmark_error}
