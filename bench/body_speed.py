"""Speed of posing a body: tracking on the landmarks' corners, and posed meshes remembered; one JSON line.

    python bench/body_speed.py [--repeats 5]

Body: the synthetic SMPL-X file the tests load (10692 vertices, SMPL-X's layout; no licensed data).
Each figure is the best of `--repeats`, the two variants of a pair interleaved in one process:
- `landmarks_ms`: forward and backward of 16 frames' landmarks and joints, posing the whole mesh
  (`BodyModel.landmarks_and_joints`, what anny does) against SMPL-X's corners only;
- `tracking_s`: `track_landmarks` of 16 frames of a still face with jittered detections, 80 steps
  (the tests' steadiness case), the whole mesh against the corners;
- `pose_ms`: one frame posed without gradients, as every render of a fitted or edited portrait does:
  posed anew (`pose_mesh`) against remembered (`forward`, after the first).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from canon_edit.run import versions
from canon_edit_representations.portrait.body import BodyModel, SMPLXBody
from canon_edit_representations.portrait.procedural import make_portrait_clip
from canon_edit_representations.portrait.synthetic_body import write_synthetic_smplx
from canon_edit_representations.portrait.tracking import TrackerConfig, track_landmarks


def best(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Seconds, best of `repeats`, the variants round robin after one warm-up each."""
    times = {name: float("inf") for name in variants}
    for _ in range(repeats + 1):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name] = min(times[name], time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_smplx(Path(tmp))
        body = SMPLXBody(Path(tmp))
    whole = partial(BodyModel.landmarks_and_joints, body)
    gen = torch.Generator().manual_seed(0)
    pose = (0.3 * torch.randn(16, body.n_joints, 3, generator=gen)).requires_grad_(True)
    expression = torch.randn(16, body.n_expression, generator=gen).requires_grad_(True)
    shape = torch.randn(1, body.n_shape, generator=gen).requires_grad_(True)

    def landmarks(path: Callable) -> None:
        points, joints = path(pose, expression, shape)
        (points.sum() + joints.sum()).backward()

    still = make_portrait_clip(body, frames=1, size=64).landmarks.expand(16, -1, -1)
    detected = still + 0.5 * torch.randn(still.shape, generator=gen)

    def tracking(corners: bool) -> None:
        if not corners:
            body.landmarks_and_joints = whole  # this instance poses the whole mesh
        try:
            track_landmarks(body, detected, 64, 64, TrackerConfig(iterations=80), fps=25.0)
        finally:
            body.__dict__.pop("landmarks_and_joints", None)

    frame = body.zero_params(1)
    frame["pose"][0, 0] = torch.tensor([0.0, 0.4, 0.0])
    marks = best(
        {"whole": lambda: landmarks(whole), "corners": lambda: landmarks(body.landmarks_and_joints)}, 20
    )
    track = best({"whole": lambda: tracking(False), "corners": lambda: tracking(True)}, args.repeats)
    posed = best({"anew": lambda: body.pose_mesh(**frame), "remembered": lambda: body(**frame)}, 50)
    figures = {
        "bench": "body_speed",
        "vertices": body.n_vertices,
        "corners": len(body.corner_template),
        "landmarks_ms": {k: round(v * 1000, 2) for k, v in marks.items()},
        "tracking_s": {k: round(v, 2) for k, v in track.items()},
        "pose_ms": {k: round(v * 1000, 3) for k, v in posed.items()},
        "threads": torch.get_num_threads(),
        "versions": versions(),
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
