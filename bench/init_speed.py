"""Time of the 2D layers' initialisation (chained flow affines, refined photometrically); one JSON line.

    python bench/init_speed.py [--clip ../shared/data/davis_breakdance] [--size 240] [--repeats 1]

What `codef` and `atlas` fits compute before their first step, as they compute it (the clip read at
`--size` with its masks, DIS flow, one layer per mask label over the background, the middle frame as
reference): `init_layer_affine` for every layer, with the photometric refinement written out
(`motion.refine_pair_photometric`, the default) and through autograd and torch.optim.Adam
(`motion.refine_pair_photometric_reference`, the code before), the two interleaved, each the best of
`--repeats`. `max_difference`: the largest difference between the two's affines (0: bit for bit).
The flow is computed once, outside the timing (`flow_seconds`). `reidentify_seconds`: what a layer
coming back into view costs (`motion.reidentify`, the last masked layer's last frame found in its first),
its correlations by FFT (`motion.correlate`) and by ATen's convolution (the code before), and
`reidentify_max_difference` between the two's affines.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from unittest import mock

import torch
import torch.nn.functional as F
from torch import Tensor

from canon_edit.canonical import composite_weights
from canon_edit.flow import compute_flow
from canon_edit.run import versions
from canon_edit.video import Clip, read_clip
from canon_edit_representations import motion
from canon_edit_representations.fields import init_layer_affine


def return_into_view(clip: Clip, weights: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """What `chain_affines` hands `reidentify` when a layer comes back: its last frame found in its first."""
    gray = motion._gray(clip.frames[[-1, 0]])
    return gray[0], gray[1], weights[-1] > 0.5, weights[0] > 0.5


def convolved(image: Tensor, kernel: Tensor) -> Tensor:
    """`motion.correlate` as ATen's convolution computes it (the code before)."""
    return F.conv2d(image, kernel, padding=(image.shape[-2] - 1, image.shape[-1] - 1))


def best_of(run: Callable[[], Tensor], repeats: int, correlate: Callable) -> tuple[float, Tensor]:
    """Seconds (best of `repeats`) and result of `run` with `motion.correlate` replaced by `correlate`."""
    seconds = float("inf")
    with mock.patch.object(motion, "correlate", correlate):
        for _ in range(repeats):
            start = time.perf_counter()
            result = run()
            seconds = min(seconds, time.perf_counter() - start)
    return seconds, result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip", default="../shared/data/davis_breakdance")
    p.add_argument("--size", type=int, default=240)
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args(argv)
    clip = read_clip(args.clip, size=args.size, max_frames=args.max_frames)
    start = time.perf_counter()
    flow = compute_flow(clip.frames)
    flow_seconds = time.perf_counter() - start
    masks = [] if clip.masks is None else list(clip.masks.unbind(1))
    weights = composite_weights([torch.ones(clip.T, clip.H, clip.W)] + masks)
    grid = motion.pixel_grid_ndc(clip.H, clip.W)
    refine = {
        "fast": motion.refine_pair_photometric,
        "reference": motion.refine_pair_photometric_reference,
    }
    seconds = {name: [float("inf")] * len(weights) for name in refine}
    affines: dict[str, list[torch.Tensor]] = {}
    for _ in range(args.repeats):
        for name, function in refine.items():
            with mock.patch.object(motion, "refine_pair_photometric", function):
                affines[name] = []
                for k, w in enumerate(weights):
                    start = time.perf_counter()
                    affines[name].append(init_layer_affine(flow, w, clip.T // 2, clip.frames, grid)[0])
                    seconds[name][k] = min(seconds[name][k], time.perf_counter() - start)
    found = {
        name: best_of(lambda: motion.reidentify(*return_into_view(clip, weights[-1])), args.repeats, patch)
        for name, patch in (("fast", motion.correlate), ("reference", convolved))
    }
    line = {
        "bench": "init_speed",
        "clip": args.clip.rstrip("/").split("/")[-1],
        "frames": clip.T,
        "height": clip.H,
        "width": clip.W,
        "layers": len(weights),
        "flow_seconds": round(flow_seconds, 1),
        "seconds": {name: [round(s, 2) for s in per_layer] for name, per_layer in seconds.items()},
        "speedup": round(sum(seconds["reference"]) / sum(seconds["fast"]), 2),
        "max_difference": max(
            float((a - b).abs().max()) for a, b in zip(affines["fast"], affines["reference"], strict=True)
        ),
        "reidentify_seconds": {name: round(t, 3) for name, (t, _) in found.items()},
        "reidentify_max_difference": float((found["fast"][1] - found["reference"][1]).abs().max()),
        "threads": torch.get_num_threads(),
        "versions": versions(),
    }
    print(json.dumps(line))
    return line


if __name__ == "__main__":
    main()
