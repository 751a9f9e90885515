"""How far one canonical stretches: the rule behind `--segments auto`, measured on a known pan.

    python bench/segment_stretch.py [--travels 0.5 1 2 4] [--size 96] [--steps-per-frame 8 | --steps N] \
        [--segment-frames N | --auto] [--overlap K] [--method codef] [--set KEY=VALUE ...] [--out DIR]

`--segments auto` cuts a long clip where the camera has travelled `segmented_fit.AUTO_STRETCH` frame
sizes since the segment began. Here windows of the procedural long pan (`procedural.make_long_clip`:
the camera travels 1/120 of a frame width a frame; a sprite swings out of the frame and back every 180
frames) holding `travel` frame widths each (120 × travel frames) are fitted whole, one canonical
each, with the masks, at the same steps per frame (or `--steps` for every window, as a fixed budget
per segment would give). Frame 10 is painted as a user would (`procedural.paint_seen`) and lifted
with `edit --keyframe 10`. With `--segment-frames N` each window is fitted as segments of at most N
frames instead (`fit --segment-frames N --overlap K`, the same steps per frame of the longest
segment), or with `--auto` as `fit --segments auto` cuts it, and the edit crosses the seams as `edit`
carries it. One JSON line per window (`cuts`: the segments' frame ranges):

- `psnr`, `psnr_background` (where the true sprite is absent), `ssim`: the reconstruction;
- `sharpness`: gradient energy of the frames rendered from the canonical textures alone (no residual)
  over that of the source frames (`fit_quality.sharpness`; 1 = as sharp as the video);
- `edit_psnr`: the lifted edit against the true edit, on the pixels whose surface frame 10 saw,
  over the whole window (`edit_psnr_last`: the last tenth of the frames that still see some of
  that surface, the farthest from frame 10);
- `texture_hw`: each layer's baked texture (the background's grows with the travel; `max_texture`
  caps it), and `background_width_per_frame_width`: how many frame widths of texels it spends (the
  first segment's, for segments; `sharpness` is then the segments' mean);
- `fit_seconds`, `steps`, `peak_rss_mb` (this process's high-water mark so far, so it only grows
  from window to window: run one travel per process for a clean figure).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from canon_edit.config import deep_merge, parse_overrides
from canon_edit.fitting import ClipOptions, fit_clip
from canon_edit.flow import load_or_compute_flow
from canon_edit.metrics import psnr, ssim
from canon_edit.procedural import make_long_clip
from canon_edit.representation import load_bake
from canon_edit.run import RunFolder, versions
from canon_edit.segmented_fit import AUTO_LONGEST, AUTO_STRETCH, fit_segmented_video
from canon_edit.segments import SEGMENTS_DIR, Segment, plan_by_motion, plan_segments
from canon_edit.video import Clip, write_pngs

sys.path.insert(0, str(Path(__file__).parent))
from fit_quality import sharpness  # noqa: E402
from long_video import lift_true_paint  # noqa: E402

FRAMES_PER_WIDTH = 120  # the long clip's pan: one frame width of travel every 120 frames
PERIOD = 180  # the sprite leaves and comes back every 180 frames, in every window alike


def fit(args: argparse.Namespace, clip: Clip, run_dir: Path, clip_dir: Path) -> list[RunFolder]:
    """Fit `clip` whole, as segments of `--segment-frames`, or as `--segments auto` cuts it, at
    `--steps-per-frame` of the longest segment; the canonicals' runs."""
    overrides = parse_overrides(args.overrides)
    if not (args.segment_frames or args.auto):
        steps = args.steps or args.steps_per_frame * clip.T
        overrides = deep_merge(overrides, {"train": {"steps": steps}})
        return [fit_clip(clip, run_dir, args.method, overrides=overrides, show_progress=False)]
    write_pngs(clip_dir / "frames", clip.frames)
    write_pngs(clip_dir / "masks", clip.masks.expand(-1, 3, -1, -1))
    if args.auto:  # the plan the fit will make, from the clip as it reads it back, for its steps
        read = ClipOptions(str(clip_dir)).read()
        flow = load_or_compute_flow(clip_dir / "flow.safetensors", read.frames)
        masks = read.read_masks if read.has_masks else None
        plan = plan_by_motion(flow, masks, AUTO_STRETCH, args.overlap, AUTO_LONGEST)
    else:
        plan = plan_segments(clip.T, args.segment_frames, args.overlap)
    steps = args.steps or args.steps_per_frame * max(seg.frames for seg in plan)
    fit_segmented_video(
        ClipOptions(str(clip_dir)), run_dir, args.method, length=args.segment_frames, overlap=args.overlap,
        overrides=deep_merge(overrides, {"train": {"steps": steps}}), show_progress=False,
    )  # fmt: skip
    fitted = [Segment(**seg) for seg in RunFolder.open(run_dir).info()["segments"]]
    return [RunFolder(run_dir / SEGMENTS_DIR / seg.name) for seg in fitted]


def bench_travel(args: argparse.Namespace, travel: float, folder: Path) -> dict:
    frames = round(FRAMES_PER_WIDTH * travel)
    width = round(args.size * 4 / 3)
    # make_long_clip pans across a background `span` frames wide by span − 1.05 frame widths
    proc = make_long_clip(frames, args.size, width, span=1.05 + travel, period=PERIOD)
    run_dir = folder / f"run_{travel:g}"
    t0 = time.monotonic()
    subs = fit(args, proc.clip, run_dir, folder / f"clip_{travel:g}")
    fit_seconds = time.monotonic() - t0
    run = RunFolder.open(run_dir)
    bake = load_bake(run)
    recon, video, expected, seen, _ = lift_true_paint(
        run, bake, proc.truth, folder / f"edited_{travel:g}.png"
    )
    seeing = seen.flatten(1).any(1).nonzero().squeeze(1)
    last = seeing[-max(1, len(seeing) // 10) :]
    background = (proc.truth.layers[1].alpha.float() < 0.5)[:, None].expand(-1, 3, -1, -1).float()
    canonicals = [bake] if len(subs) == 1 else [load_bake(sub) for sub in subs]
    textures = [tuple(la.texture.shape[1:]) for la in canonicals[0].layers]
    return {
        "travel": travel,
        "frames": frames,
        "segments": len(subs) if len(subs) > 1 else None,
        "cuts": [[seg["start"], seg["end"]] for seg in run.info().get("segments") or []] or None,
        "steps": run.info().get("steps"),
        "fit_seconds": round(fit_seconds, 1),
        "psnr": round(psnr(recon, proc.clip.frames), 2),
        "psnr_background": round(psnr(recon, proc.clip.frames, background), 2),
        "ssim": round(ssim(recon, proc.clip.frames), 4),
        "sharpness": round(
            sum(sharpness(b, sub.clip()) for b, sub in zip(canonicals, subs, strict=True)) / len(subs), 3
        ),
        "edit_psnr": round(psnr(video, expected, seen), 2),
        "edit_psnr_last": round(psnr(video[last], expected[last], seen[last]), 2),
        "texture_hw": textures,
        "background_width_per_frame_width": round(textures[0][1] / width, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--travels", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0])
    p.add_argument("--size", type=int, default=96, help="frame height (width is 4/3 of it)")
    p.add_argument("--steps-per-frame", type=int, default=8)
    p.add_argument("--steps", type=int, help="the same steps for every window instead of per frame")
    cut = p.add_mutually_exclusive_group()
    cut.add_argument("--segment-frames", type=int, help="fit each window as segments of at most N frames")
    cut.add_argument("--auto", action="store_true", help="fit each window as `fit --segments auto` cuts it")
    p.add_argument("--overlap", type=int, default=10, help="with segments: frames neighbours share")
    p.add_argument("--method", default="codef")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="a fit option (fit --set)")
    p.add_argument("--out", help="keep the runs here (default: a temporary folder, removed after)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="segment_stretch_") as tmp:
        folder = Path(args.out or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for travel in args.travels:
            line = {"bench": "segment_stretch", "method": args.method, "size": args.size}
            line |= {"set": args.overrides} if args.overrides else {}
            line |= (
                {"segment_frames": args.segment_frames or "auto", "overlap": args.overlap}
                if args.segment_frames or args.auto
                else {}
            )
            line |= bench_travel(args, travel, folder)
            line |= {"device": "cpu", "threads": torch.get_num_threads(), "versions": versions()}
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
