"""The demo clip's keyframe lift against the truth, for a 2D method and preset: one JSON line.

    python bench/demo_lift.py [--method codef] [--preset codef_demo] [--set key=value ...] [--out RUN]

Fits the demo's procedural clip (`canon_edit.demo.DEMO`), lifts the true edit of the demo's
keyframe with `keyframe_textures` and scores, against `procedural.edited_truth`: `recon` (PSNR of
the reconstruction), `edit` (the edited video on the pixels the keyframe saw) and their parts on
the sprite (`recon_fg`, `edit_fg`: pixels wholly covered by it).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from canon_edit.canonical import CanonicalVideo, keyframe_textures
from canon_edit.config import parse_overrides
from canon_edit.demo import DEMO, KEYFRAME
from canon_edit.fitting import fit_clip
from canon_edit.metrics import psnr
from canon_edit.procedural import ProceduralClip, edited_truth, make_clip, seen_mask
from canon_edit.run import versions


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="codef")
    p.add_argument("--preset", default="codef_demo")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--out", help="keep the run folder here (default: a temporary folder, removed after)")
    args = p.parse_args(argv)
    proc = make_clip(**DEMO)
    t0 = time.monotonic()
    overrides = parse_overrides(args.overrides) or None
    with tempfile.TemporaryDirectory(prefix="canon-bench-") as scratch:
        out = Path(args.out) if args.out else Path(scratch) / "run"
        run = fit_clip(
            proc.clip, out, args.method, preset=args.preset, overrides=overrides, show_progress=False
        )
        return score(proc, CanonicalVideo.load(run.canonical), args, t0)


def score(proc: ProceduralClip, cv: CanonicalVideo, args: argparse.Namespace, started: float) -> dict:
    """Print and return the figures of the fitted demo clip against its truth (`started`: the fit's start)."""
    truth = edited_truth(proc.truth).render().clamp(0, 1)
    recon = cv.render().clamp(0, 1)
    edited = cv.render(textures=keyframe_textures(cv, proc.clip.frames[KEYFRAME], KEYFRAME, truth[KEYFRAME]))
    edited = edited.clamp(0, 1)
    seen = seen_mask(proc.truth, KEYFRAME)
    sprite = torch.stack([proc.truth.layer_weights(t)[1] for t in range(proc.clip.T)]) > 0.99
    figures = {
        "bench": "demo_lift",
        "method": args.method,
        "preset": args.preset,
        "overrides": args.overrides,
        "seconds": round(time.monotonic() - started, 1),
        "recon": round(psnr(recon, proc.clip.frames), 2),
        "edit": round(psnr(edited, truth, seen), 2),
        "recon_fg": round(psnr(recon, proc.clip.frames, sprite & seen), 2),
        "edit_fg": round(psnr(edited, truth, sprite & seen), 2),
        "threads": torch.get_num_threads(),
        "versions": versions(),
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
