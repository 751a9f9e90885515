"""Fit quality of a representation on a real clip: one JSON line.

    python bench/fit_quality.py --clip ../shared/data/davis_blackswan --method codef --size 240
    python bench/fit_quality.py --run RUN   # the figures of a finished run, not fitted again

Keys: psnr, ssim, psnr_foreground and psnr_background (inside and outside the clip's masks, where it
has masks), seconds, steps, peak_mem_mb, device, frames, height, width, render_fps (re-rendering
every frame from the bake), for the 2D forms `sharpness` (mean squared gradient of the frames
rendered from the canonical textures alone, no residual, over that of the source frames: 1 = as
sharp as the video, less = a blurred canonical), `regions` for a layered bake of a clip with masks (see
`alpha_regions`) and `psnr_foreground_frames` for a 2D bake of a clip with masks (the in-mask PSNR's
lowest, median and highest frame, and the worst frame), plus the method's own (atlas: alpha_iou;
portrait: masked_psnr, masked_ssim, landmark_error_px). With `--run`, the run's path stands in place
of seconds, peak_mem_mb and threads. A portrait clip without tracking needs the face detector's
interpreter in $CANON_EDIT_DETECTOR_PYTHON (see the README).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from canon_edit.allocator import keep_freed_memory
from canon_edit.canonical import CanonicalVideo, Layer, composite_weights
from canon_edit.config import QUALITY_SECONDS
from canon_edit.fitting import ClipOptions, fit_video
from canon_edit.metrics import psnr_of, squared_error
from canon_edit.representation import load_bake
from canon_edit.run import RunFolder, StoredClip, versions
from canon_edit.video import frame_chunks

LEAK = 0.05  # visible foreground weight above which a background pixel counts as covered by it


def peak_mem_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gradient_energy(frames: torch.Tensor) -> float:
    """Mean squared horizontal and vertical difference of F×3×H×W frames: how much fine detail they hold."""
    gx = frames[..., :, 1:] - frames[..., :, :-1]
    gy = frames[..., 1:, :] - frames[..., :-1, :]
    return float((gx**2).mean() + (gy**2).mean())


def sharpness(bake: CanonicalVideo, clip: StoredClip) -> float:
    """Gradient energy of the canonical textures as the frames see them, over that of the frames."""
    plain = CanonicalVideo([Layer(la.texture, la.uv, la.alpha) for la in bake.layers], bake.fps)
    ids = list(range(0, bake.T, max(1, bake.T // 10)))
    source = torch.cat([clip.read(i, i + 1) for i in ids])
    return gradient_energy(plain.render(ids).clamp(0, 1)) / gradient_energy(source)


def masked_chunks(
    bake: CanonicalVideo, clip: StoredClip
) -> Iterator[tuple[list[int], Tensor, Tensor, Tensor]]:
    """The clip a chunk at a time: frame ids, the bake's render of them (clamped), the source frames
    and the masks (bool)."""
    with torch.no_grad():
        for ids in frame_chunks(bake.T):
            video = bake.render(ids).clamp(0, 1)
            source = clip.read(ids[0], ids[-1] + 1)
            yield ids, video, source, clip.read_foreground(ids[0], ids[-1] + 1) > 0.5


def alpha_regions(bake: CanonicalVideo, clip: StoredClip) -> dict[str, dict[str, float]] | None:
    """Share of the pixels and PSNR of four regions: where the fitted foreground agrees with the masks.

    The mask split (psnr_foreground / psnr_background) cannot tell a texture error from a silhouette
    error. Here "clear" is background the fitted foreground leaves uncovered (visible weight under
    `LEAK`), "leak" background it covers, "held" mask pixels it shows (weight 0.5 or more) and "lost"
    mask pixels it does not. None for a single layer or a clip without masks.
    """
    foreground_layers = bake.layers[1:]
    if not foreground_layers or any(la.alpha is None for la in foreground_layers):
        return None
    if clip.read_foreground(0, 1) is None:
        return None
    sums = dict.fromkeys(("clear", "leak", "held", "lost"), (0.0, 0.0))
    for ids, video, source, mask in masked_chunks(bake, clip):
        alphas = [la.alpha[ids].double() for la in foreground_layers]
        foreground = 1 - composite_weights([torch.ones_like(alphas[0]), *alphas])[0]
        regions = {
            "clear": ~mask & (foreground < LEAK),
            "leak": ~mask & (foreground >= LEAK),
            "held": mask & (foreground >= 0.5),
            "lost": mask & (foreground < 0.5),
        }
        for name, region in regions.items():
            total, weight = squared_error(video, source, region)
            sums[name] = (sums[name][0] + total, sums[name][1] + weight)
    pixels = sum(weight for _, weight in sums.values())
    return {
        name: {
            "share": round(weight / pixels, 4),
            "psnr": round(psnr_of(total, weight), 2) if weight else None,
        }
        for name, (total, weight) in sums.items()
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip", help="the clip to fit (required unless --run is given)")
    p.add_argument(
        "--run",
        help="measure this finished run instead of fitting: seconds, peak_mem_mb and threads are then left "
        "out (they would describe the measuring, not the fit)",
    )
    p.add_argument("--method", default="codef")
    p.add_argument("--preset")
    p.add_argument("--size", type=int, default=240)
    p.add_argument("--steps", type=int)
    p.add_argument("--time-budget", type=float)
    p.add_argument("--quality", choices=list(QUALITY_SECONDS))
    p.add_argument("--max-frames", type=int)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="keep the run folder here (default: a temporary folder, removed after)")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args(argv)
    if (args.clip is None) == (args.run is None):
        p.error("give --clip (fit it) or --run (measure a finished run), one of the two")
    keep_freed_memory()  # as `canon-edit fit` does
    if args.run:
        return report(RunFolder.open(args.run), None)
    from canon_edit.config import deep_merge, parse_overrides

    overrides = parse_overrides(args.overrides)
    train = {"steps": args.steps, "time_budget": args.time_budget, "quality": args.quality}
    overrides = deep_merge(overrides, {"train": {k: v for k, v in train.items() if v}})
    with tempfile.TemporaryDirectory(prefix="canon-bench-") as scratch:
        out = Path(args.out) if args.out else Path(scratch) / "run"
        t0 = time.monotonic()
        run = fit_video(
            ClipOptions(source=args.clip, size=args.size, max_frames=args.max_frames),
            out,
            args.method,
            preset=args.preset,
            overrides=overrides or None,
            force=True,
            device=args.device,
            show_progress=sys.stderr.isatty(),
        )
        return report(run, time.monotonic() - t0)


def foreground_by_frame(bake: CanonicalVideo, clip: StoredClip) -> dict[str, float] | None:
    """PSNR inside the masks frame by frame: the lowest, median and highest, and the worst frame.

    Tells an error that one image per layer cannot hold (flat across the frames, the layout's own
    reference frame included) from a layout that drifts away from its reference (worst far from it).
    None for a clip without masks.
    """
    if clip.read_foreground(0, 1) is None:
        return None
    values = []
    for _, video, source, mask in masked_chunks(bake, clip):
        for frame, truth, inside in zip(video, source, mask, strict=True):
            total, weight = squared_error(frame[None], truth[None], inside[None])
            values.append(psnr_of(total, weight) if weight else float("nan"))
    measured = torch.tensor(values, dtype=torch.float64)
    seen = measured[~measured.isnan()]
    if not len(seen):
        return None
    worst = int(torch.where(measured.isnan(), float("inf"), measured).argmin())
    return {
        "min": round(float(seen.min()), 2),
        "median": round(float(seen.median()), 2),
        "max": round(float(seen.max()), 2),
        "worst_frame": worst,
    }


def report(run: RunFolder, seconds: float | None) -> dict:
    """Print and return the figures of a fitted run; `seconds` is the fit's wall time when fitted here."""
    info, metrics = run.info(), json.loads(run.metrics.read_text())
    bake = load_bake(run)
    t1 = time.monotonic()
    bake.render()
    render_fps = bake.T / (time.monotonic() - t1)
    layered = isinstance(bake, CanonicalVideo)
    clip = run.stored_clip() if layered else None
    regions = alpha_regions(bake, clip) if layered else None
    by_frame = foreground_by_frame(bake, clip) if layered else None
    figures = {
        "bench": "fit_quality",
        "clip": Path(info["clip"]["source"]).name,
        "method": info["method"],
        "psnr": metrics["psnr"],
        "ssim": metrics["ssim"],
        **{k: metrics[k] for k in ("psnr_foreground", "psnr_background") if k in metrics},
        **({"seconds": round(seconds, 1)} if seconds is not None else {"run": str(run.path)}),
        "fit_seconds": info["fit_seconds"],
        "steps": info["steps"],
        "render_fps": round(render_fps, 1),
        **({"sharpness": round(sharpness(bake, clip), 3)} if layered else {}),
        **(
            {"peak_mem_mb": round(peak_mem_mb(info["device"]), 1), "threads": torch.get_num_threads()}
            if seconds is not None
            else {}
        ),
        "device": info["device"],
        "frames": info["frames"],
        "height": info["height"],
        "width": info["width"],
        "warp_error": metrics["warp_error"],
        "source_warp_error": metrics["source_warp_error"],
        **metrics.get("extra", {}),
        **({"regions": regions} if regions else {}),
        **({"psnr_foreground_frames": by_frame} if by_frame else {}),
        "versions": versions(),
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
