"""Fingerprints of short CoDeF and atlas fits on the procedural clip: one JSON line.

A refactor that must leave fits bit-identical is checked by running this at both commits and
comparing the lines:

    git worktree add /tmp/before COMMIT
    python bench/fit_fingerprint.py --repo /tmp/before
    python bench/fit_fingerprint.py

Each fit runs through the CLI of the checkout in --repo (`python -m canon_edit.cli` started there,
one thread), so an older commit is measured with its own code; the fingerprint is a SHA-256 over the
final checkpoint's model tensors.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from safetensors.torch import load_file

from canon_edit.procedural import make_clip
from canon_edit.video import write_pngs

ROOT = Path(__file__).resolve().parent.parent


def fingerprint(checkpoint: Path) -> str:
    tensors = load_file(str(checkpoint))
    digest = hashlib.sha256()
    for key in sorted(k for k in tensors if k.startswith("model.")):
        digest.update(key.encode())
        digest.update(tensors[key].numpy().tobytes())
    return digest.hexdigest()[:16]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repo", type=Path, default=ROOT, help="checkout whose CLI fits (default: this one)")
    p.add_argument("--steps", type=int, default=40)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="canon-fingerprint-") as tmp:
        work = Path(tmp)
        proc = make_clip(frames=12, height=48, width=80)
        write_pngs(work / "clip" / "frames", proc.clip.frames)
        write_pngs(work / "clip" / "masks", proc.clip.masks.expand(-1, 3, -1, -1))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        figures: dict = {"bench": "fit_fingerprint", "repo": str(args.repo.resolve()), "steps": args.steps}
        for method in ("codef", "atlas"):
            out = work / method
            cmd = [
                sys.executable, "-m", "canon_edit.cli", "fit", str(work / "clip"), "-o", str(out),
                "--method", method, "--preset", f"{method}_demo", "--steps", str(args.steps),
                "--set", "patches=32", "--quiet",
            ]  # fmt: skip
            subprocess.run(cmd, cwd=args.repo, env=env, check=True, capture_output=True)
            last = sorted((out / "checkpoints").glob("step_*.safetensors"))[-1]
            figures[method] = fingerprint(last)
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
