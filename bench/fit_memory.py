"""Peak memory of `canon-edit fit` against the clip's length, per method: one JSON line.

    python bench/fit_memory.py --clip ../shared/data/davis_camel [--size 240] [--lengths 30 90] \
        [--methods atlas codef] [--steps 5] [--segment-frames N]
    python bench/fit_memory.py --long 600 --lengths 100 600 --segment-frames 100 ...

`--labels K` splits the clip's masks into K labels (bands across each frame's object, left to right),
so K foreground layers: what each layer adds. `--labels 0` fits the frames without their masks.
`--portrait` fits, for each length, the procedural portrait (`make_portrait_clip`: the synthetic
SMPL-X body, its true tracking, `--size`² frames) with `--method portrait` (the default method then).
`--clip CLIP --methods portrait` fits a real portrait clip as a user would: the default body and the
detector (its interpreter in `$CANON_EDIT_DETECTOR_PYTHON`, see the README).
`--long N` fits the procedural long clip (`procedural.make_long_clip`: a pan and a sprite that
leaves and comes back) of N frames at `--size` (16:9), written as a clip folder, instead of `--clip`.
With `--segment-frames N` each fit is `fit --segment-frames N` (segments of N frames, the default
overlap), whose peak should follow a segment's length, not the clip's.

Each fit (`--max-frames L`, a few steps: the peak of a fit is its bake, which every fit ends with,
not its steps) runs in a fresh process that reports its own peak RSS (VmHWM) and time.
`estimate_mb` is what `fit` estimates before it reads the clip (`Representation.fit_memory`; a segmented
fit: one segment) to refuse a fit that would outgrow memory. `mb_per_frame` is the slope between the
shortest and the longest length: what one more frame costs, so what a clip of any length needs, and
when to fit it as segments instead.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from canon_edit.procedural import make_long_clip
from canon_edit.representation import get_representation
from canon_edit.run import versions
from canon_edit.video import clip_shape, mask_channels, write_pngs


def fit_peak(clip: str, method: str, frames: int, args: argparse.Namespace, out: Path) -> dict[str, float]:
    """`canon-edit fit` in a fresh process: its peak RSS (MiB) and seconds."""
    argv = [clip, "-o", str(out), "--method", method, "--size", str(args.size), "--max-frames", str(frames)]
    argv += ["--steps", str(args.steps), "--quiet"]
    if method == "portrait" and args.portrait:  # the procedural portrait's body and true tracking
        argv += ["--body", "smplx", "--body-model-dir", str(Path(clip).parent / "body")]
        argv += ["--tracking", str(Path(clip) / "tracking.json")]
    if args.segment_frames:
        argv += ["--segment-frames", str(args.segment_frames)]
    command = [sys.executable, __file__, "--child", *argv]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def long_clip(frames: int, size: int, folder: Path) -> str:
    """The procedural long clip at `size` rows (16:9) as a clip folder (frames/, masks/)."""
    long = make_long_clip(frames, height=size, width=round(size * 16 / 9 / 2) * 2)
    write_pngs(folder / "frames", long.clip.frames)
    write_pngs(folder / "masks", long.clip.masks.expand(-1, 3, -1, -1))
    return str(folder)


def portrait_clip(frames: int, size: int, folder: Path) -> str:
    """The procedural portrait (synthetic SMPL-X body in `folder/body`) as a clip folder with its
    tracking.json, `frames` frames of `size`²."""
    from canon_edit_representations.portrait.body import SMPLXBody
    from canon_edit_representations.portrait.procedural import make_portrait_clip
    from canon_edit_representations.portrait.synthetic_body import write_synthetic_smplx

    write_synthetic_smplx(folder / "body")
    portrait = make_portrait_clip(SMPLXBody(folder / "body"), frames, size)
    write_pngs(folder / "clip" / "frames", portrait.clip.frames)
    write_pngs(folder / "clip" / "masks", portrait.clip.masks.expand(-1, 3, -1, -1))
    portrait.tracking.save(folder / "clip" / "tracking.json")
    return str(folder / "clip")


def split_labels(clip: str, labels: int, folder: Path) -> str:
    """`clip`'s frames with its masks split into `labels` labels: bands of equal width across each
    frame's object (left to right); with 0, the frames alone (one layer, no masks)."""
    source = Path(clip)
    folder.mkdir(parents=True)
    (folder / "frames").symlink_to((source / "frames").resolve())
    if labels == 0:
        return str(folder / "frames")
    (folder / "masks").mkdir(parents=True)
    for path in sorted((source / "masks").glob("*.png")):
        mask = np.asarray(Image.open(path).convert("L")) > 127
        out = np.zeros(mask.shape, np.uint8)
        columns = np.flatnonzero(mask.any(0))
        if len(columns):
            edges = np.linspace(columns[0], columns[-1] + 1, labels + 1).round().astype(int)
            for k in range(labels):
                band = np.zeros_like(mask)
                band[:, edges[k] : edges[k + 1]] = True
                out[mask & band] = k + 1
        Image.fromarray(out).save(folder / "masks" / path.name)
    return str(folder)


def _child(argv: list[str]) -> None:
    from canon_edit.cli import main

    start = time.perf_counter()
    code = main(["fit", *argv])
    if code:
        raise SystemExit(code)
    seconds = round(time.perf_counter() - start, 1)
    with open("/proc/self/status") as status:  # VmHWM: this process's own high-water mark (Linux)
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    print(json.dumps({"peak_rss_mb": round(peak, 1), "seconds": seconds}))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:  # one fit, in the process fit_peak started
        _child(argv[1:])
        return {}
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--clip", help="a video or clip folder")
    source.add_argument("--long", type=int, metavar="N", help="the procedural long clip of N frames")
    source.add_argument("--portrait", action="store_true", help="the procedural portrait, per length")
    p.add_argument("--size", type=int, default=240)
    p.add_argument("--lengths", type=int, nargs="+", default=[30, 90])
    p.add_argument("--methods", nargs="+", default=None, help="default atlas codef (portrait)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--segment-frames", type=int, default=None)
    p.add_argument("--labels", type=int, default=None, help="split the masks in K labels")
    args = p.parse_args(argv)
    methods = args.methods or (["portrait"] if args.portrait else ["atlas", "codef"])
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        clip = ""
        if not args.portrait:
            clip = args.clip or long_clip(args.long, args.size, Path(tmp) / "long")
        if args.labels is not None:
            clip = split_labels(clip, args.labels, Path(tmp) / "split")
        clips = {
            n: portrait_clip(n, args.size, Path(tmp) / f"source{n}") if args.portrait else clip
            for n in args.lengths
        }
        for method in methods:
            rows = {
                str(n): fit_peak(clips[n], method, n, args, Path(tmp) / f"{method}{n}") for n in args.lengths
            }
            cost = get_representation(method).fit_memory
            for n, row in rows.items():  # what `fit` checks memory against, before reading the clip
                source, frames = clips[int(n)], min(int(n), args.segment_frames or int(n))
                shape = clip_shape(source, max_frames=frames, size=args.size)
                if shape is not None and cost is not None:
                    labels = mask_channels(source, max_frames=frames)
                    row["estimate_mb"] = round(cost.peak(*shape, labels) / 2**20, 1)
            first, last = str(min(args.lengths)), str(max(args.lengths))
            span = max(1, int(last) - int(first))
            slope = (rows[last]["peak_rss_mb"] - rows[first]["peak_rss_mb"]) / span
            figures[method] = {"by_length": rows, "mb_per_frame": round(slope, 2)}
    result = {
        "bench": "fit_memory",
        "clip": Path(args.clip).name
        if args.clip
        else "procedural portrait"
        if args.portrait
        else f"procedural long clip, {args.long} frames",
        "size": args.size,
        "steps": args.steps,
        "segment_frames": args.segment_frames,
        "labels": args.labels,
        **figures,
        "versions": versions(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
