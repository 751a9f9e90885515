"""Where a fitted portrait shimmers: one JSON line of warping errors of its reconstruction.

    python bench/portrait_shimmer.py --run RUN

Two diagnostics on a finished portrait run (nothing is refitted):
- the reconstruction re-rendered with its tracking smoothed over time (a Gaussian of `--sigma`
  frames on pose, expression and camera, alone and together): if tracking jitter caused the
  shimmer, smoothing would lower the warping error;
- the warping error split by region of the person mask (interior eroded by 3 px, a 7-px band
  around the silhouette, background), for the render and the source.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from canon_edit.flow import Flow, load_or_compute_flow
from canon_edit.metrics import psnr, warping_error
from canon_edit.representation import load_bake
from canon_edit.run import RunFolder, versions
from canon_edit_representations.portrait.detect import Detections
from canon_edit_representations.portrait.prepare import DETECTIONS, MASK_THRESHOLD

BAND = 7  # px: the silhouette band's width


def smooth(x: Tensor, sigma: float) -> Tensor:
    """A Gaussian filter along time (dim 0), edges replicated."""
    if sigma == 0:
        return x
    r = int(3 * sigma)
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1) / sigma) ** 2)
    flat = x.reshape(x.shape[0], -1).T[:, None]
    flat = F.conv1d(F.pad(flat, (r, r), mode="replicate"), (k / k.sum())[None, None])
    return flat[:, 0].T.reshape(x.shape)


def person_mask(run: RunFolder) -> Tensor:
    """T×H×W: the clip's masks, else the detector's person segmentation the fit used."""
    masks = run.clip().masks
    if masks is not None:
        return (masks.amax(1) > 0.5).float()
    return (Detections.load(run.path / DETECTIONS).mask[:, 0] > MASK_THRESHOLD).float()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--sigma", type=float, default=1.5)
    args = p.parse_args(argv)
    run = RunFolder(args.run)
    clip, bake = run.clip(), load_bake(run)
    flow = load_or_compute_flow(run.flow, clip.frames)
    figures: dict = {"bench": "portrait_shimmer", "run": str(run.path), "sigma": args.sigma}
    tracking = bake.tracking
    variants = {
        "as_fitted": (0, 0, 0),
        "pose_and_camera": (1, 0, 1),
        "expression": (0, 1, 0),
        "all": (1, 1, 1),
    }
    video = None
    for name, (pose, expression, camera) in variants.items():
        bake.tracking = replace(
            tracking,
            pose=smooth(tracking.pose, pose * args.sigma),
            expression=smooth(tracking.expression, expression * args.sigma),
            viewmat=smooth(tracking.viewmat, camera * args.sigma),
        )
        rendered = bake.render().clamp(0, 1)
        video = rendered if name == "as_fitted" else video
        figures[f"smoothed_{name}"] = {
            "warp_error": warping_error(rendered, flow),
            "psnr": round(psnr(rendered, clip.frames), 3),
        }
    mask = person_mask(run)[:-1, None]
    dilated = F.max_pool2d(mask, BAND, 1, BAND // 2)[:, 0]
    eroded = 1 - F.max_pool2d(1 - mask, BAND, 1, BAND // 2)[:, 0]
    regions = {"interior": eroded, "silhouette_band": dilated - eroded, "background": 1 - dilated}
    for name, region in regions.items():
        within = Flow(flow.forward, flow.backward, flow.forward_ok & region.bool(), flow.backward_ok)
        render_error, source_error = warping_error(video, within), warping_error(clip.frames, within)
        figures[name] = {
            "pixels": round(float(region.mean()), 3),
            "render": render_error,
            "source": source_error,
            "ratio": round(render_error / source_error, 1),
        }
    figures["source_warp_error"] = warping_error(clip.frames, flow)
    figures["versions"] = versions()
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
