"""What `canon-edit fit --resume` costs and spends: the kept initialisation, and a budget across a kill.

    python bench/resume_cost.py --run RUN [--threads 2]
    python bench/resume_cost.py --clip CLIP --budget 120 --kill-after 60 [--size 240] [--method codef]

`--run`: RUN is a finished (or checkpointed) 2D run; it is copied to a temp folder and left as it is.
The copy's `layer_init.safetensors` is removed, then `fit --resume` runs twice in fresh processes: the
first chains and refines the layers' affines again and keeps them, the second reads them back. A
finished run is finished again (bake, one render pass, metrics, videos), which both passes do alike.
JSON: `seconds_computing_init`, `seconds_reading_init` (wall time of each command, start-up included).

`--clip`: CLIP is fitted twice with `--time-budget BUDGET`: once uninterrupted, once killed (SIGKILL)
at the first checkpoint past `--kill-after` seconds of fitting (checkpoints every 10 s) and then
resumed with a plain `fit --resume`. JSON, for each: `steps`, `fit_seconds` (the seconds of fitting
the last checkpoint records, both passes together), `psnr`; the budget is the whole fit's, so both
should spend it once.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from canon_edit.run import RunFolder, versions
from canon_edit_representations.layer_init import INIT_FILE


def cli(*args: str, threads: int) -> list[str]:
    return [sys.executable, "-m", "canon_edit.cli", *args, "--quiet", "--threads", str(threads)]


def resume_seconds(run: Path, threads: int) -> float:
    start = time.perf_counter()
    subprocess.run(cli("fit", "--resume", "-o", str(run), threads=threads), check=True, capture_output=True)
    return round(time.perf_counter() - start, 1)


def init_cost(args: argparse.Namespace) -> dict[str, Any]:
    info = RunFolder.open(args.run, need_done=False).info()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(args.run, copy, ignore=shutil.ignore_patterns(".lock"))
        (copy / INIT_FILE).unlink(missing_ok=True)
        computing = resume_seconds(copy, args.threads)
        kept = (copy / INIT_FILE).is_file()
        reading = resume_seconds(copy, args.threads)
    return {
        "run": str(args.run),
        "method": info.get("method"),
        "frames": info.get("frames"),
        "height": info.get("height"),
        "width": info.get("width"),
        "masks": bool((info.get("clip") or {}).get("masks")),
        "seconds_computing_init": computing,
        "seconds_reading_init": reading,
        "init_kept": kept,
    }


def spent(run: RunFolder) -> dict[str, Any]:
    """Steps, recorded seconds of fitting and PSNR of a finished run."""
    last = json.loads(run.checkpoint_paths()[-1].read_text())
    psnr = json.loads(run.metrics.read_text())["psnr"]
    return {"steps": last["step"], "fit_seconds": round(last.get("fit_seconds", 0.0), 1), "psnr": psnr}


def killed_and_resumed(args: argparse.Namespace) -> dict[str, Any]:
    fit = [
        "fit",
        args.clip,
        "--method",
        args.method,
        "--size",
        str(args.size),
        "--time-budget",
        str(args.budget),
    ]
    fit += ["--set", "train.checkpoint_seconds=10"]
    out: dict[str, Any] = {"clip": Path(args.clip).name, "method": args.method, "budget": args.budget}
    with tempfile.TemporaryDirectory() as tmp:
        whole = Path(tmp) / "whole"
        subprocess.run(cli(*fit, "-o", str(whole), threads=args.threads), check=True, capture_output=True)
        out["uninterrupted"] = spent(RunFolder(whole))
        cut = Path(tmp) / "cut"
        proc = subprocess.Popen(
            cli(*fit, "-o", str(cut), threads=args.threads),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        killed_at: dict[str, Any] = {}
        while proc.poll() is None and not killed_at:
            time.sleep(0.5)
            for path in RunFolder(cut).checkpoint_paths()[-1:]:
                meta = json.loads(path.read_text())
                if meta.get("fit_seconds", 0.0) >= args.kill_after:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed_at = {"step": meta["step"], "fit_seconds": round(meta["fit_seconds"], 1)}
        proc.wait()
        if not killed_at:
            raise SystemExit(
                "the fit ended before --kill-after; give a larger --budget or a smaller --kill-after"
            )
        resumed_at = time.perf_counter()
        subprocess.run(
            cli("fit", "--resume", "-o", str(cut), threads=args.threads), check=True, capture_output=True
        )
        out["killed_at"] = killed_at
        out["resume_wall_seconds"] = round(time.perf_counter() - resumed_at, 1)
        out["killed_and_resumed"] = spent(RunFolder(cut))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", help="a finished or checkpointed 2D run (left untouched)")
    parser.add_argument("--clip", help="a clip to fit whole and killed-then-resumed")
    parser.add_argument("--method", default="codef")
    parser.add_argument("--size", type=int, default=240)
    parser.add_argument("--budget", type=float, default=120.0)
    parser.add_argument("--kill-after", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if bool(args.run) == bool(args.clip):
        parser.error("give --run RUN or --clip CLIP")
    figures = init_cost(args) if args.run else killed_and_resumed(args)
    print(json.dumps({"bench": "resume_cost", **figures, "threads": args.threads, "versions": versions()}))


if __name__ == "__main__":
    main()
