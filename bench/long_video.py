"""Long clips fitted as segments: fit and render time, render peak memory, and an edit at the seams.

    python bench/long_video.py [--lengths 150 300 600] [--segment-frames 100 | --auto] [--overlap 10] \
        [--size 48] [--segment-budget 60] [--method codef] [--executor local] [--device auto] [--out DIR]

For each length, the procedural long clip (`procedural.make_long_clip`: a pan across a background
1 + length/120 frames wide, and a sprite that leaves the frame and comes back, in view at the
seams) is fitted with `--segment-frames/--overlap`, each segment for `--segment-budget` seconds.
With `--auto` the clip is fitted as `fit --segments auto` cuts it, and its sprite swings out and back
every 180 frames whatever the cuts (`cuts`: the segments' frame ranges).
Then frame 10 is painted as a user would (`procedural.paint_seen`: the true texels frame 10 shows,
painted) and lifted with `canon-edit edit --keyframe 10`. One JSON line per length:

- `fit_seconds` (`segments_per_minute`: the segments over it, the figure to compare across devices),
  `render_seconds` and `render_peak_rss_mb` (`canon-edit render RUN -o video.mp4` in a
  fresh process; its peak resident memory should not grow with the length);
- `edit_psnr`: per segment, PSNR of the edited video against the true edit on the pixels whose
  surface frame 10 saw (`procedural.seen_mask`); `recon_psnr` of the reconstruction as a reference;
- `seam_warp_ratio`: the edited video's warping error (source flow) over frame pairs that touch an
  overlap, divided by that over pairs inside segments (`recon_seam_warp_ratio`: the same for the
  unedited reconstruction, what the fits' disagreement in the overlaps costs by itself;
  `source_seam_warp_ratio`: the same for the source, whose seam pairs hold the sprite by design, so
  they are harder than the pure pan between; `seam_warp_ratio_vs_source`: the edited video's seam
  ratio over the source's, what the seams add);
- `seam_warp_ratio_matched`: the same ratio with like content on both sides, over only the pairs
  with the whole sprite in view in both frames (`matched_pairs`: how many at the seams and inside;
  `source_seam_warp_ratio_matched` for the source).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import torch

from canon_edit.canonical import CanonicalVideo
from canon_edit.device import pick_device
from canon_edit.edit.commands import EditTarget, edit_keyframe, edited_bake
from canon_edit.fitting import ClipOptions
from canon_edit.flow import Flow, load_flow
from canon_edit.metrics import psnr, warping_error
from canon_edit.procedural import make_long_clip, paint_seen, seen_mask
from canon_edit.representation import Bake, load_bake
from canon_edit.run import RunFolder, versions
from canon_edit.segmented_fit import fit_segmented_video
from canon_edit.segments import Segment, plan_segments
from canon_edit.video import write_image, write_pngs

KEYFRAME = 10
AUTO_PERIOD = 180  # with --auto: the sprite's swing, blind to where the cuts fall
# peak memory from /proc (VmHWM): ru_maxrss of a child carries its parent's high-water mark
RENDER = """
import re, sys, time
from canon_edit.allocator import keep_freed_memory
from canon_edit.edit.commands import render_run
keep_freed_memory()  # as the CLI does
t = time.monotonic()
render_run(sys.argv[1], sys.argv[2])
peak = re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)
print(time.monotonic() - t, int(peak) / 1024)
"""


def pair_errors(video: torch.Tensor, flow: Flow) -> list[float]:
    """Warping error of each consecutive pair (t, t+1), NaN where no pixel is consistent."""
    return [
        warping_error(
            video[t : t + 2],
            Flow(
                flow.forward[t : t + 1],
                flow.backward[t : t + 1],
                flow.forward_ok[t : t + 1],
                flow.backward_ok[t : t + 1],
            ),
        )
        for t in range(video.shape[0] - 1)
    ]


def seam_and_inside(
    video: torch.Tensor, flow: Flow, at_seam: torch.Tensor, among: torch.Tensor | None = None
) -> tuple[float, float]:
    """Mean warping error of the frame pairs at the seams and of those inside segments (`among` only)."""
    errors = torch.tensor(pair_errors(video, flow))
    ok = ~errors.isnan() if among is None else ~errors.isnan() & among
    return errors[at_seam & ok].mean().item(), errors[~at_seam & ok].mean().item()


def whole_sprite_pairs(alpha: torch.Tensor) -> torch.Tensor:
    """(T-1,) bool: pairs (t, t+1) with the whole sprite in view in both frames (≥ 98% of its area)."""
    area = alpha.float().sum((1, 2))
    whole = area >= 0.98 * area.max()
    return whole[:-1] & whole[1:]


class LiftedPaint(NamedTuple):
    recon: torch.Tensor  # the run's reconstruction, T×3×H×W in [0, 1]
    video: torch.Tensor  # ... with the lifted paint
    expected: torch.Tensor  # the true edit's render
    seen: torch.Tensor  # T×3×H×W, 1 on the pixels whose surface frame KEYFRAME saw
    edit_seconds: float  # the lift's time


def lift_true_paint(run: RunFolder, bake: Bake, truth: CanonicalVideo, image: Path) -> LiftedPaint:
    """Paint the texels frame KEYFRAME sees as a user would (`procedural.paint_seen`), write that frame
    to `image` and lift it with `edit --keyframe` (edit "paint"); the renders an edit is scored on."""
    truth_edit = paint_seen(truth, KEYFRAME)
    write_image(image, truth_edit.render([KEYFRAME])[0].clamp(0, 1))
    t0 = time.monotonic()
    edit_keyframe(EditTarget(run.path, name="paint"), KEYFRAME, image)
    edit_seconds = time.monotonic() - t0
    with torch.no_grad():
        recon = bake.render().clamp(0, 1)
        video = edited_bake(run, bake, "paint").render().clamp(0, 1)
        expected = truth_edit.render().clamp(0, 1)
    seen = seen_mask(truth, KEYFRAME)[:, None].expand(-1, 3, -1, -1).float()
    return LiftedPaint(recon, video, expected, seen, edit_seconds)


def bench_length(args: argparse.Namespace, length: int, folder: Path) -> dict:
    if args.auto:
        period = AUTO_PERIOD
    else:  # the sprite centred at the seams of the plan the fit will make
        segments = len(plan_segments(length, args.segment_frames, args.overlap))
        period = round(2 * (length - args.overlap) / segments)
    width = round(args.size * 4 / 3)
    proc = make_long_clip(length, args.size, width, span=1 + length / 120, period=period)
    clip_dir = folder / f"clip_{length}"
    write_pngs(clip_dir / "frames", proc.clip.frames)
    write_pngs(clip_dir / "masks", proc.clip.masks.expand(-1, 3, -1, -1))
    run_dir = folder / f"run_{length}"
    t0 = time.monotonic()
    fit_segmented_video(
        ClipOptions(str(clip_dir)), run_dir, args.method, length=None if args.auto else args.segment_frames,
        overlap=args.overlap, overrides={"train": {"time_budget": args.segment_budget, "steps": 100000}},
        executor=args.executor, device=args.device, show_progress=False,
    )  # fmt: skip
    fit_seconds = time.monotonic() - t0
    plan = [Segment(**seg) for seg in RunFolder.open(run_dir).info()["segments"]]
    out = subprocess.run(
        [sys.executable, "-c", RENDER, str(run_dir), str(folder / f"render_{length}.mp4")],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    render_seconds, peak_mb = (float(x) for x in out.stdout.split())

    run = RunFolder.open(run_dir)
    bake = load_bake(run)
    recon, video, expected, seen, edit_seconds = lift_true_paint(
        run, bake, proc.truth, folder / f"edited_{length}.png"
    )
    edit_psnr, recon_psnr = {}, {}
    for seg in bake.segments:
        part = slice(seg.start, seg.end)
        if seen[part].sum() > 0:
            edit_psnr[seg.name] = round(psnr(video[part], expected[part], seen[part]), 2)
        recon_psnr[seg.name] = round(psnr(recon[part], proc.clip.frames[part]), 2)
    flow, _ = load_flow(run.flow)
    shared = {t for a, b in zip(plan[:-1], plan[1:], strict=True) for t in range(b.start, a.end)}
    at_seam = torch.tensor([t in shared or t + 1 in shared for t in range(length - 1)])
    seam, inside = seam_and_inside(video, flow, at_seam)
    recon_seam, recon_inside = seam_and_inside(recon, flow, at_seam)
    source_seam, source_inside = seam_and_inside(proc.clip.frames, flow, at_seam)
    whole = whole_sprite_pairs(proc.truth.layers[1].alpha)
    seam_matched, inside_matched = seam_and_inside(video, flow, at_seam, whole)
    source_seam_matched, source_inside_matched = seam_and_inside(proc.clip.frames, flow, at_seam, whole)
    info = run.info()
    return {
        "frames": length,
        "segments": len(plan),
        "cuts": [[seg.start, seg.end] for seg in plan],
        "fit_seconds": round(fit_seconds, 1),
        "segments_per_minute": round(60 * len(plan) / fit_seconds, 2),
        "segment_seconds": info.get("segment_seconds"),
        "steps": info.get("steps"),
        "render_seconds": round(render_seconds, 2),
        "render_fps": round(length / render_seconds, 1),
        "render_peak_rss_mb": round(peak_mb, 1),
        "edit_seconds": round(edit_seconds, 1),
        "edit_psnr": edit_psnr,
        "edit_psnr_min": min(edit_psnr.values()),
        "recon_psnr": recon_psnr,
        "seam_warp_error": seam,
        "inside_warp_error": inside,
        "seam_warp_ratio": round(seam / inside, 3),
        "recon_seam_warp_ratio": round(recon_seam / recon_inside, 3),
        "source_seam_warp_ratio": round(source_seam / source_inside, 3),
        "seam_warp_ratio_vs_source": round((seam / source_seam) / (inside / source_inside), 3),
        "matched_pairs": {"seam": int((whole & at_seam).sum()), "inside": int((whole & ~at_seam).sum())},
        "seam_warp_ratio_matched": round(seam_matched / inside_matched, 3),
        "source_seam_warp_ratio_matched": round(source_seam_matched / source_inside_matched, 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[150, 300, 600])
    p.add_argument("--segment-frames", type=int, default=100)
    p.add_argument("--auto", action="store_true", help="cut as `fit --segments auto` does")
    p.add_argument("--overlap", type=int, default=10)
    p.add_argument("--size", type=int, default=48, help="frame height (width is 4/3 of it)")
    p.add_argument("--segment-budget", type=float, default=60.0, help="seconds of fitting per segment")
    p.add_argument("--method", default="codef")
    p.add_argument("--executor", default="local")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    p.add_argument("--out", help="keep clips and runs here (default: a temporary folder, removed after)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="long_video_") as tmp:
        folder = Path(args.out or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for length in args.lengths:
            figures = bench_length(args, length, folder)
            line = {"bench": "long_video", "method": args.method, "size": args.size, **figures}
            line |= {"segment_frames": "auto" if args.auto else args.segment_frames, "overlap": args.overlap}
            line |= {"device": str(pick_device(args.device))}
            line |= {"threads": torch.get_num_threads(), "versions": versions()}
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
