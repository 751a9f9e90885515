"""What `canon-edit fit --resume` costs before it trains: with and without the layers' kept initialisation.

    python bench/resume_cost.py --run RUN [--threads 2]

RUN is a finished (or checkpointed) 2D run; it is copied to a temp folder and left as it is. The
copy's `layer_init.safetensors` is removed, then `fit --resume` runs twice in fresh processes: the
first chains and refines the layers' affines again and keeps them, the second reads them back.
A finished run is finished again (bake, one render pass, metrics, videos), which both passes do
alike. One JSON line: `seconds_computing_init`, `seconds_reading_init` (wall time of each command,
start-up included) and the run's size.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from canon_edit.run import RunFolder, versions
from canon_edit_representations.layer_init import INIT_FILE


def resume_seconds(run: Path, threads: int) -> float:
    command = [sys.executable, "-m", "canon_edit.cli", "fit", "--resume", "-o", str(run), "--quiet"]
    start = time.perf_counter()
    subprocess.run([*command, "--threads", str(threads)], check=True, capture_output=True)
    return round(time.perf_counter() - start, 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, help="a finished or checkpointed 2D run (left untouched)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    info = RunFolder.open(args.run, need_done=False).info()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(args.run, copy, ignore=shutil.ignore_patterns(".lock"))
        (copy / INIT_FILE).unlink(missing_ok=True)
        computing = resume_seconds(copy, args.threads)
        kept = (copy / INIT_FILE).is_file()
        reading = resume_seconds(copy, args.threads)
    print(
        json.dumps(
            {
                "bench": "resume_cost",
                "run": str(args.run),
                "method": info.get("method"),
                "frames": info.get("frames"),
                "height": info.get("height"),
                "width": info.get("width"),
                "masks": bool((info.get("clip") or {}).get("masks")),
                "seconds_computing_init": computing,
                "seconds_reading_init": reading,
                "init_kept": kept,
                "threads": args.threads,
                "versions": versions(),
            }
        )
    )


if __name__ == "__main__":
    main()
