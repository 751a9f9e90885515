"""Time of a 2D fit's bake (every pixel of every frame through the fitted fields); one JSON line.

    python bench/bake_speed.py [--clip ../shared/data/davis_breakdance] [--size 240] [--repeats 1]

For each of `--methods` (CoDeF and the atlas, their shipped presets), the model a fit of the clip
(read at `--size` with its masks) starts from is baked: `--chunk` points at a time (default
`fields.BAKE_CHUNK`, what a fit does: `chunks_s`) and each frame whole (`whole_s`, the code before),
interleaved, each the best of `--repeats`. The work does not depend on the weights, so the model is
not trained (and its affines are the flow's, without the photometric refinement).
`max_difference`: the largest difference between the two bakes' fields (0: bit for bit).
"""

from __future__ import annotations

import argparse
import json
import time
from unittest import mock

import torch

from canon_edit.canonical import CanonicalVideo
from canon_edit.fitting import config_of
from canon_edit.flow import compute_flow
from canon_edit.representation import get_representation
from canon_edit.run import versions
from canon_edit.video import read_clip
from canon_edit_representations import fields

FIELDS = ("texture", "uv", "alpha", "shading", "detail", "coverage")


def difference(a: CanonicalVideo, b: CanonicalVideo) -> float:
    """The largest difference between the two bakes' per-layer fields."""
    return max(
        float((getattr(x, name).float() - getattr(y, name).float()).abs().max())
        for x, y in zip(a.layers, b.layers, strict=True)
        for name in FIELDS
        if getattr(x, name) is not None
    )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip", default="../shared/data/davis_breakdance")
    p.add_argument("--size", type=int, default=240)
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--methods", nargs="+", default=["codef", "atlas"])
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--chunk", type=int, default=fields.BAKE_CHUNK, help="points at a time (the default's)")
    args = p.parse_args(argv)
    clip = read_clip(args.clip, size=args.size, max_frames=args.max_frames)
    flow = compute_flow(clip.frames)
    figures = {}
    for method in args.methods:
        cls = get_representation(method)
        torch.manual_seed(0)
        model = cls(clip, flow, config_of(cls, None, {"photometric_init": False}))
        seconds = {"chunks_s": float("inf"), "whole_s": float("inf")}
        bakes = {}
        with torch.no_grad():
            for _ in range(args.repeats):
                for name, chunk in (("chunks_s", args.chunk), ("whole_s", clip.H * clip.W)):
                    with mock.patch.object(fields, "BAKE_CHUNK", chunk):
                        start = time.perf_counter()
                        bakes[name] = model.bake()
                        seconds[name] = min(seconds[name], time.perf_counter() - start)
        figures[method] = {
            **{name: round(s, 2) for name, s in seconds.items()},
            "max_difference": difference(bakes["chunks_s"], bakes["whole_s"]),
        }
    line = {
        "bench": "bake_speed",
        "clip": args.clip.rstrip("/").split("/")[-1],
        "frames": clip.T,
        "height": clip.H,
        "width": clip.W,
        "chunk": args.chunk,
        "methods": figures,
        "threads": torch.get_num_threads(),
        "versions": versions(),
    }
    print(json.dumps(line))
    return line


if __name__ == "__main__":
    main()
