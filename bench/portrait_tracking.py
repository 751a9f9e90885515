"""How steady a portrait run's tracking is, and what re-tracking its detections changes; one JSON line.

    python bench/portrait_tracking.py --run RUN [--set body_smooth_weight=1 ...]

RUN is a finished portrait run fitted from detections (it holds detections.safetensors). Its
tracking as fitted, and the same detections tracked again with the tracker's current defaults (or
`--set` overrides of TrackerConfig), are compared by: the mean landmark error in pixels; the
quantiles of the largest joint rotation change from one frame to the next (radians; a flip between
two poses shows as a q90 near the flip's size); the camera's largest step. Then the run's avatar,
unchanged, is re-rendered with the new tracking: its warping error against the source's own
(nothing is refitted, so its PSNR only says how far the poses moved).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch
from safetensors.torch import load_file

from canon_edit.config import parse_overrides
from canon_edit.flow import load_or_compute_flow
from canon_edit.metrics import psnr, warping_error
from canon_edit.representation import load_bake
from canon_edit.run import RunFolder, versions
from canon_edit_representations.portrait.prepare import DETECTIONS
from canon_edit_representations.portrait.tracking import TrackerConfig, Tracking, track_landmarks


def steadiness(tracking: Tracking) -> dict:
    joint = (tracking.pose[1:] - tracking.pose[:-1]).norm(dim=-1).amax(-1)
    camera = (tracking.viewmat[1:] - tracking.viewmat[:-1]).abs().amax(dim=(1, 2))
    q = torch.tensor([0.5, 0.9, 1.0])
    return {
        "joint_step_q50_q90_max": [round(float(x), 4) for x in torch.quantile(joint, q)],
        "camera_step_q50_q90_max": [round(float(x), 4) for x in torch.quantile(camera, q)],
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    run = RunFolder(args.run)
    clip, bake = run.clip(), load_bake(run)
    detections = load_file(str(run.path / DETECTIONS))
    cfg = dataclasses.replace(TrackerConfig(), **parse_overrides(args.overrides))
    start = time.perf_counter()
    tracking, error = track_landmarks(
        bake.get_body(), detections["face"], clip.W, clip.H, cfg, keypoints=detections["pose"], fps=clip.fps
    )
    seconds = time.perf_counter() - start
    flow = load_or_compute_flow(run.flow, clip.frames)
    fitted, as_fitted = bake.render().clamp(0, 1), bake.tracking
    bake.tracking, bake._person = dataclasses.replace(tracking, K=as_fitted.K), None
    retracked = bake.render().clamp(0, 1)
    line = {
        "bench": "portrait_tracking",
        "run": str(run.path),
        "overrides": args.overrides,
        "source_warp_error": warping_error(clip.frames, flow),
        "as_fitted": {**steadiness(as_fitted), "warp_error": warping_error(fitted, flow)},
        "retracked": {
            **steadiness(tracking),
            "landmark_error_px": round(float(error.mean()), 3),
            "seconds": round(seconds, 1),
            "warp_error": warping_error(retracked, flow),
            "psnr_vs_source": round(psnr(retracked, clip.frames), 2),
        },
        "threads": torch.get_num_threads(),
        **versions(),
    }
    print(json.dumps(line))
    return line


if __name__ == "__main__":
    main()
