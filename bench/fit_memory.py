"""Peak memory of `canon-edit fit` against the clip's length, per method: one JSON line.

    python bench/fit_memory.py --clip ../shared/data/davis_camel [--size 240] [--lengths 30 90] \
        [--methods atlas codef] [--steps 5]

Each fit (`--max-frames L`, a few steps: the peak of a fit is its bake, which every fit ends with,
not its steps) runs in a fresh process that reports its own peak RSS (VmHWM) and time.
`mb_per_frame` is the slope between the shortest and the longest length: what one more frame costs,
so what a clip of any length needs, and when to fit it as segments instead.
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

from canon_edit.run import versions


def fit_peak(clip: str, method: str, size: int, frames: int, steps: int, out: Path) -> dict[str, float]:
    """`canon-edit fit` in a fresh process: its peak RSS (MiB) and seconds."""
    argv = [clip, "-o", str(out), "--method", method, "--size", str(size), "--max-frames", str(frames)]
    command = [sys.executable, __file__, "--child", *argv, "--steps", str(steps), "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


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
    p.add_argument("--clip", required=True)
    p.add_argument("--size", type=int, default=240)
    p.add_argument("--lengths", type=int, nargs="+", default=[30, 90])
    p.add_argument("--methods", nargs="+", default=["atlas", "codef"])
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args(argv)
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            rows = {
                str(n): fit_peak(args.clip, method, args.size, n, args.steps, Path(tmp) / f"{method}{n}")
                for n in args.lengths
            }
            first, last = str(min(args.lengths)), str(max(args.lengths))
            span = max(1, int(last) - int(first))
            slope = (rows[last]["peak_rss_mb"] - rows[first]["peak_rss_mb"]) / span
            figures[method] = {"by_length": rows, "mb_per_frame": round(slope, 2)}
    result = {
        "bench": "fit_memory",
        "clip": Path(args.clip).name,
        "size": args.size,
        "steps": args.steps,
        **figures,
        "versions": versions(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
