"""How much of a portrait run's shimmer is its trajectory: the baked avatar re-rendered along it filtered.

    python bench/portrait_steadiness.py --run RUN [--filters none gauss:2 euro:1,0.5 camera-euro:1,0.5]

RUN is a finished portrait run. Its Gaussians, decoder and expressions stay as fitted; only the
camera and the head and arm joints (`tracker.trajectory_joints`) of its tracking are filtered in
time, then every frame is re-rendered. One JSON line: for each filter, the warping error of the
re-rendered video over the source's own, and the PSNR and SSIM of the person over black inside the
masks the fit used (the fit's `masked_psnr`). Filters: `none`; `gauss:S`, a Gaussian low-pass of S frames
(each matrix entry, then the rotations projected back onto rotations); `euro:C,B`, the one-euro
filter the tracker uses (`trajectory_filter.py`; cutoff C Hz, its rise B per radian/s);
`camera-euro:C,B`, that filter on the camera only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch
from portrait_shimmer import person_mask, smooth  # this folder's: the Gaussian and the mask it uses

from canon_edit.flow import load_or_compute_flow
from canon_edit.metrics import psnr, ssim, warping_error
from canon_edit.representation import load_bake
from canon_edit.run import RunFolder, versions
from canon_edit_representations.portrait.tracking import TrackerConfig, Tracking
from canon_edit_representations.portrait.trajectory_filter import filter_camera, filter_trajectory


def filtered(tracking: Tracking, joints: torch.Tensor, fps: float, spec: str) -> Tracking:
    kind, _, value = spec.partition(":")
    if kind == "none":
        return tracking
    if kind == "gauss":
        sigma = float(value)
        pose = tracking.pose.clone()
        pose[:, joints] = smooth(tracking.pose[:, joints], sigma)
        viewmat = smooth(tracking.viewmat, sigma)
        u, _, v = torch.linalg.svd(viewmat[:, :3, :3])
        viewmat[:, :3, :3] = u @ v
        return dataclasses.replace(tracking, pose=pose, viewmat=viewmat)
    cutoff, beta = (float(x) for x in value.split(","))
    viewmat = filter_camera(tracking.viewmat, fps, cutoff, beta)
    if kind == "camera-euro":
        return dataclasses.replace(tracking, viewmat=viewmat)
    if kind == "euro":
        pose, viewmat = filter_trajectory(tracking.pose, tracking.viewmat, joints, fps, cutoff, beta)
        return dataclasses.replace(tracking, pose=pose, viewmat=viewmat)
    raise SystemExit(f"unknown filter {spec!r}; use none, gauss:S, euro:C,B or camera-euro:C,B")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--filters", nargs="+", default=["none", "gauss:2", "euro:1,0.5", "camera-euro:1,0.5"])
    args = p.parse_args(argv)
    run = RunFolder(args.run)
    clip, bake = run.clip(), load_bake(run)
    flow = load_or_compute_flow(run.flow, clip.frames)
    source = warping_error(clip.frames, flow)
    body, fitted = bake.get_body(), bake.tracking
    names = [n for n in TrackerConfig().trajectory_joints if n in body.joint_names]
    joints = torch.tensor([body.joint_index(n) for n in names], dtype=torch.long)
    mask = person_mask(run)[:, None]  # the person's, as the fit's masked figures take it
    black = torch.zeros(3, clip.H, clip.W)
    rows = {}
    for spec in args.filters:
        bake.tracking, bake._person = filtered(fitted, joints, clip.fps, spec), None
        person = bake.render(background=black).clamp(0, 1)
        video = bake.render().clamp(0, 1)
        rows[spec] = {
            "warp_vs_source": round(warping_error(video, flow) / source, 3),
            "masked_psnr": round(psnr(person, clip.frames, mask), 3),
            "masked_ssim": round(ssim(person, clip.frames, mask), 4),
        }
    out = {
        "bench": "portrait_steadiness",
        "run": str(run.path),
        "frames": clip.T,
        "source_warp_error": source,
        "filters": rows,
        "threads": torch.get_num_threads(),
        **versions(),
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
