"""Temporal consistency of one fixed edit through the layered atlas and through CoDeF: one JSON line.

    python bench/edit_consistency.py --clip ../shared/data/davis_blackswan --size 240 \
        [--atlas-run RUN] [--codef-run RUN] [--steps N] [--time-budget S] [--methods atlas codef] \
        [--without-residuals]

The edit is a black-and-white checkerboard (8 cells across the short side of the used area) pasted
opaquely over the used area of the first foreground layer's texture with `canonical.over`. For each
method the edited video's warping error (measured with the SOURCE video's flow) is printed next to
the source video's own and the method's unedited reconstruction's: an edit that sticks to the object
adds little to the reconstruction's error, one that slides or flickers adds a lot. `on_mask` is the
share of changed pixels inside the (2-pixel dilated) source masks and `mask_hit_min` the smallest
per-frame share of mask pixels the edit changed. Runs given with --atlas-run/--codef-run are
reused (their fit is what the JSON reports under "fit"); otherwise the method is fitted here with
--steps/--time-budget, which are usually shorter than a full fit. With --without-residuals the same
figures are added (`without_residuals`) for the bake with every layer's shading and detail residual
left out: what the mapping and the canonical do to the edit by themselves, and what the time-varying
appearance adds to its warping error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from canon_edit.canonical import CanonicalVideo, over
from canon_edit.errors import UserError
from canon_edit.fitting import ClipOptions, fit_video
from canon_edit.flow import load_or_compute_flow
from canon_edit.metrics import warping_error
from canon_edit.run import RunFolder, versions

METHODS = ("atlas", "codef")


def checkerboard_overlay(coverage: Tensor, cells: int = 8) -> Tensor:
    """4×Hc×Wc RGBA: a checkerboard over the texture's used area, transparent elsewhere."""
    ys, xs = torch.nonzero(coverage > 0.5, as_tuple=True)
    if len(ys) == 0:
        raise UserError("the foreground texture has no used area; the fit saw no foreground to edit")
    y0, x0 = int(ys.min()), int(xs.min())
    size = max(1.0, min(int(ys.max()) - y0 + 1, int(xs.max()) - x0 + 1) / cells)
    yy = ((torch.arange(coverage.shape[0]) - y0) / size).floor()[:, None]
    xx = ((torch.arange(coverage.shape[1]) - x0) / size).floor()[None, :]
    board = ((yy + xx) % 2).float()
    return torch.cat([board.expand(3, -1, -1), (coverage > 0.5).float()[None]])


def edit_figures(cv: CanonicalVideo, frames: Tensor, masks: Tensor, flow: Any) -> dict[str, float]:
    """Warping errors of the reconstruction and of the checkerboard edit, and where the edit landed."""
    if len(cv.layers) < 2:
        raise UserError("the run has no foreground layer; fit it with masks to run this benchmark")
    textures = cv.textures()
    textures[1] = over(textures[1], checkerboard_overlay(cv.layers[1].coverage))
    recon = cv.render().clamp(0, 1)
    edited = cv.render(textures=textures).clamp(0, 1)
    changed = (edited - recon).abs().amax(1) > 0.1
    mask = masks[:, 0] > 0.5
    near = F.max_pool2d(mask.float()[:, None], 5, stride=1, padding=2)[:, 0] > 0
    hits = [float((changed[t] & mask[t]).sum() / mask[t].sum().clamp_min(1)) for t in range(cv.T)]
    return {
        "recon_warp_error": warping_error(recon, flow),
        "edited_warp_error": warping_error(edited, flow),
        "on_mask": round(float((changed & near).sum() / changed.sum().clamp_min(1)), 4),
        "mask_hit_min": round(min(hits), 4),
    }


def without_residuals(cv: CanonicalVideo) -> CanonicalVideo:
    """The bake with no shading or detail residual on any layer."""
    layers = [dataclasses.replace(la, shading=None, detail=None) for la in cv.layers]
    return CanonicalVideo(layers=layers, fps=cv.fps)


def method_run(
    method: str, given: str | None, args: argparse.Namespace, work: Path
) -> tuple[RunFolder, dict[str, Any]]:
    """The given finished run, or a fresh fit of the clip with the benchmark's shorter budget."""
    budget: dict[str, Any] = {}
    if given:
        run = RunFolder.open(given)
        if run.info()["method"] != method:
            raise UserError(
                f"--{method}-run {given} is a '{run.info()['method']}' run; give a '{method}' run"
            )
    else:
        budget = {"step_limit": args.steps, "time_budget": args.time_budget}
        train = {k: v for k, v in (("steps", args.steps), ("time_budget", args.time_budget)) if v}
        run = fit_video(
            ClipOptions(source=args.clip, size=args.size, max_frames=args.max_frames),
            work / method,
            method,
            overrides={"train": train},
            force=True,
            show_progress=False,
        )
    info = run.info()
    fit = {k: info.get(k) for k in ("steps", "fit_seconds", "device")}
    return run, {"run": given or "fitted here", **fit, **budget}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip", required=True, help="clip folder with frames/ and masks/")
    p.add_argument("--size", type=int, default=240)
    p.add_argument("--max-frames", type=int)
    p.add_argument("--atlas-run", help="a finished atlas run of this clip (default: fit one here)")
    p.add_argument("--codef-run", help="a finished CoDeF run of this clip (default: fit one here)")
    p.add_argument("--steps", type=int, help="step limit for fits made here")
    p.add_argument("--time-budget", type=float, help="seconds per fit made here")
    p.add_argument("--out", help="keep fits made here in this folder (default: a temporary one)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="measure only these")
    p.add_argument(
        "--without-residuals", action="store_true", help="add the figures with the residuals left out"
    )
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="canon-edit-bench-") as tmp:
        return measure(args, Path(args.out) if args.out else Path(tmp))


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Fit or open both runs, apply the edit through each and collect the figures."""
    figures: dict[str, Any] = {"bench": "edit_consistency", "clip": Path(args.clip).name}
    for method in args.methods:
        run, fit = method_run(method, getattr(args, f"{method}_run"), args, work)
        clip = run.clip()
        if clip.masks is None:
            raise UserError(f"{args.clip} has no masks; this benchmark edits the foreground layer")
        flow = load_or_compute_flow(run.flow, clip.frames)
        cv = CanonicalVideo.load(run.canonical)
        figures.setdefault("frames", clip.T)
        figures.setdefault("height", clip.H)
        figures.setdefault("width", clip.W)
        figures.setdefault("source_warp_error", warping_error(clip.frames, flow))
        psnr = json.loads(run.metrics.read_text())["psnr"]
        figures[method] = {"psnr": psnr, **edit_figures(cv, clip.frames, clip.masks, flow), "fit": fit}
        if args.without_residuals:
            bare = without_residuals(cv)
            figures[method]["without_residuals"] = edit_figures(bare, clip.frames, clip.masks, flow)
    figures.update(device="cpu", threads=torch.get_num_threads(), versions=versions())
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
