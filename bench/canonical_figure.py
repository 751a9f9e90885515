"""A figure of fitted 2D runs: per run one row of source frame, reconstruction, error map and textures.

    python bench/canonical_figure.py RUN [RUN ...] --out bench/canonicals.png [--frame 0.5]

Rows are scaled to one height, so a blurred canonical shows as blurred next to the frame it came
from; the textures are shown with their unused area (coverage 0) darkened. The error map is each
pixel's RMS error over the whole clip on one fixed scale (black 0, white `ERROR_SCALE` and above),
so rows compare and a reader sees where a fit loses, not only how much. Prints one JSON line with
each run's PSNR as summed from that map (the fit's own figure, re-derived).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import torch
import torch.nn.functional as F
from torch import Tensor

from canon_edit.canonical import CanonicalVideo
from canon_edit.evaluate import paired, render_chunks
from canon_edit.representation import load_bake
from canon_edit.run import RunFolder, StoredClip
from canon_edit.video import Clip, write_image

ROW = 180  # pixels per row
GAP = 6
ERROR_SCALE = 0.15  # RMS error drawn white: 16.5 dB, about where DAVIS fits are worst


def fit_height(image: torch.Tensor, height: int) -> torch.Tensor:
    """3×h×w → 3×height×(w·height/h), antialiased."""
    h, w = image.shape[1:]
    size = (height, max(1, round(w * height / h)))
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def error_map(bake: CanonicalVideo, clip: Clip | StoredClip) -> Tensor:
    """H×W: each pixel's RMS error (over frames and channels) of the clamped render, a chunk at a time."""
    total = torch.zeros(clip.H, clip.W)
    with torch.no_grad():
        for video, source in paired(clip, render_chunks(bake.render, bake.T)):
            total += (video.clamp(0, 1) - source).square().mean(1).sum(0)
    return (total / bake.T).sqrt()


def heat(error: Tensor) -> Tensor:
    """3×H×W inferno colouring of an error map on the fixed `ERROR_SCALE`."""
    levels = (error / ERROR_SCALE).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    bgr = cv2.applyColorMap(levels, cv2.COLORMAP_INFERNO)
    return torch.from_numpy(bgr[..., ::-1].copy()).permute(2, 0, 1).float() / 255


def row(run: RunFolder, where: float) -> tuple[Tensor, float]:
    """Source, reconstruction, error map and every layer's texture of one run side by side; its PSNR."""
    bake = load_bake(run)
    if not isinstance(bake, CanonicalVideo):
        raise SystemExit(f"{run.path} is not a 2D run (CoDeF or atlas)")
    t = min(bake.T - 1, round(where * (bake.T - 1)))
    clip = run.stored_clip()
    source = clip.read(t, t + 1)[0]
    error = error_map(bake, clip)
    panels = [source, bake.render([t])[0].clamp(0, 1), heat(error)]
    for la in bake.layers:
        cov = la.coverage if la.coverage is not None else torch.ones(la.texture.shape[1:])
        panels.append(la.texture.clamp(0, 1) * (0.25 + 0.75 * cov[None]))
    scaled = [fit_height(p.float(), ROW) for p in panels]
    gap = torch.ones(3, ROW, GAP)
    psnr = -10 * torch.log10(error.square().mean().clamp_min(1e-12))
    return torch.cat([x for p in scaled for x in (p, gap)][:-1], 2), round(float(psnr), 3)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--frame", type=float, default=0.5, help="which frame, as a fraction of the clip")
    args = p.parse_args(argv)
    rows, psnrs = zip(*(row(RunFolder.open(r), args.frame) for r in args.runs), strict=True)
    width = max(r.shape[2] for r in rows)
    padded = [F.pad(r, (0, width - r.shape[2]), value=1.0) for r in rows]
    gap = torch.ones(3, GAP, width)
    figure = torch.cat([x for r in padded for x in (r, gap)][:-1], 1)
    write_image(Path(args.out), figure)
    result = {
        "bench": "canonical_figure",
        "out": args.out,
        "runs": args.runs,
        "psnr": list(psnrs),
        "error_scale": ERROR_SCALE,
        "size": list(figure.shape[1:]),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
