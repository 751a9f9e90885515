"""A figure of fitted 2D runs: per run one row of source frame, reconstruction and canonical textures.

    python bench/canonical_figure.py RUN [RUN ...] --out bench/canonicals.png [--frame 0.5]

Rows are scaled to one height, so a blurred canonical shows as blurred next to the frame it came
from; the textures are shown with their unused area (coverage 0) darkened. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from canon_edit.canonical import CanonicalVideo
from canon_edit.representation import load_bake
from canon_edit.run import RunFolder
from canon_edit.video import write_image

ROW = 180  # pixels per row
GAP = 6


def fit_height(image: torch.Tensor, height: int) -> torch.Tensor:
    """3×h×w → 3×height×(w·height/h), antialiased."""
    h, w = image.shape[1:]
    size = (height, max(1, round(w * height / h)))
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def row(run: RunFolder, where: float) -> torch.Tensor:
    """Source, reconstruction and every layer's texture of one run, side by side."""
    bake = load_bake(run)
    if not isinstance(bake, CanonicalVideo):
        raise SystemExit(f"{run.path} is not a 2D run (CoDeF or atlas)")
    t = min(bake.T - 1, round(where * (bake.T - 1)))
    source = run.stored_clip().read(t, t + 1)[0]
    panels = [source, bake.render([t])[0].clamp(0, 1)]
    for la in bake.layers:
        cov = la.coverage if la.coverage is not None else torch.ones(la.texture.shape[1:])
        panels.append(la.texture.clamp(0, 1) * (0.25 + 0.75 * cov[None]))
    scaled = [fit_height(p.float(), ROW) for p in panels]
    gap = torch.ones(3, ROW, GAP)
    return torch.cat([x for p in scaled for x in (p, gap)][:-1], 2)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--frame", type=float, default=0.5, help="which frame, as a fraction of the clip")
    args = p.parse_args(argv)
    rows = [row(RunFolder.open(r), args.frame) for r in args.runs]
    width = max(r.shape[2] for r in rows)
    padded = [F.pad(r, (0, width - r.shape[2]), value=1.0) for r in rows]
    gap = torch.ones(3, GAP, width)
    figure = torch.cat([x for r in padded for x in (r, gap)][:-1], 1)
    write_image(Path(args.out), figure)
    result = {"bench": "canonical_figure", "out": args.out, "runs": args.runs, "size": list(figure.shape[1:])}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
