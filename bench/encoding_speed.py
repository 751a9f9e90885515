"""Time one CoDeF-style fitting step (forward + backward + Adam) with hash grids vs feature planes.

The model is the CoDeF recipe: a 3D (x, y, t) deformation encoding + MLP giving a
2D offset, annealed level by level, then a 2D canonical encoding + MLP giving RGB at the deformed
point. Prints one JSON line: median milliseconds per step after warm-up, per encoding kind and
Adam implementation, plus forward+backward alone (so Adam's share is visible) and the two
encodings alone (so the MLPs' share is).

    OMP_NUM_THREADS=1 python bench/encoding_speed.py [--device cpu] [--samples 32768]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from canon_edit_representations.encoding import (
    MLP,
    EncodingConfig,
    apply_level_weights,
    build_encoding,
    coarse_to_fine_weights,
)

# CoDeF's sizes for the hash grids; for the planes, the same 32 output features per encoding and a
# canonical pyramid up to 1024^2 (8 x 4 features, ~5.6M parameters vs the hash grid's ~6.7M), and
# deformation planes up to 128 with a 100-frame time axis, as in the project's first CoDeF prototype.
SETUPS = {
    "hash": (
        EncodingConfig(kind="hash", n_levels=16, n_features=2, log2_table_size=19, per_level_scale=1.44),
        EncodingConfig(kind="hash", n_levels=16, n_features=2, log2_table_size=19, per_level_scale=1.38),
    ),
    "planes": (
        EncodingConfig(kind="planes", n_levels=8, n_features=4, base_resolution=8, per_level_scale=2.0),
        EncodingConfig(
            kind="planes",
            n_levels=4,
            n_features=8,
            base_resolution=16,
            per_level_scale=2.0,
            max_time_resolution=100,
        ),
    ),
}


class CodefLike(nn.Module):
    """Deformation field then canonical field, as one CoDeF layer."""

    def __init__(self, canonical: EncodingConfig, deformation: EncodingConfig) -> None:
        super().__init__()
        self.deform_enc = build_encoding(deformation, 3)
        self.deform_mlp = MLP(self.deform_enc.out_dim, 2, zero_init_last=True)
        self.canon_enc = build_encoding(canonical, 2)
        self.canon_mlp = MLP(self.canon_enc.out_dim, 3)

    def forward(self, xyt: Tensor, level_weights: Tensor) -> Tensor:
        features = apply_level_weights(self.deform_enc(xyt), level_weights, self.deform_enc.n_features)
        return self.canon_mlp(self.canon_enc(xyt[:, :2] + self.deform_mlp(features)))


def _median_ms(fn: Callable[[], None], device: torch.device, warmup: int, steps: int) -> float:
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 2)


def bench_kind(kind: str, device: torch.device, n_samples: int, warmup: int, steps: int) -> dict:
    """Timings and sizes for one encoding kind; the Adam variants start from the same weights."""
    canonical, deformation = SETUPS[kind]
    torch.manual_seed(0)
    model = CodefLike(canonical, deformation).to(device)
    xyt = torch.rand(n_samples, 3, device=device)
    target = torch.rand(n_samples, 3, device=device)
    weights = coarse_to_fine_weights(6000, 4000, 8000, deformation.n_levels).to(device)

    def forward_backward() -> None:
        F.mse_loss(model(xyt, weights), target).backward()

    def encodings_only() -> None:
        (model.deform_enc(xyt).sum() + model.canon_enc(xyt[:, :2]).sum()).backward()

    result: dict = {
        "canonical": dataclasses.asdict(canonical),
        "deformation": dataclasses.asdict(deformation),
        "modules": [type(model.canon_enc).__name__, type(model.deform_enc).__name__],
        "params": sum(p.numel() for p in model.parameters()),
        "encoding_params": sum(
            p.numel() for enc in (model.canon_enc, model.deform_enc) for p in enc.parameters()
        ),
        "ms_encodings_fwd_bwd": _median_ms(encodings_only, device, warmup, steps),
        "ms_fwd_bwd": _median_ms(forward_backward, device, warmup, steps),
    }
    for variant in ("foreach", "fused"):
        try:
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, **{variant: True})

            def step(optimizer: torch.optim.Optimizer = optimizer) -> None:
                optimizer.zero_grad(set_to_none=True)
                forward_backward()
                optimizer.step()

            result[f"ms_step_adam_{variant}"] = _median_ms(step, device, warmup, steps)
        except RuntimeError as exc:
            result[f"ms_step_adam_{variant}"] = None
            result[f"adam_{variant}_error"] = str(exc).splitlines()[0]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--samples", type=int, default=32768)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    device = torch.device(args.device)
    report = {
        "bench": "encoding_speed",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_avg_1min_at_start": round(os.getloadavg()[0], 2),
        "n_samples": args.samples,
        "warmup": args.warmup,
        "steps": args.steps,
    }
    for kind in SETUPS:
        report[kind] = bench_kind(kind, device, args.samples, args.warmup, args.steps)
    hash_ms, planes_ms = report["hash"]["ms_step_adam_foreach"], report["planes"]["ms_step_adam_foreach"]
    report["hash_over_planes_step"] = round(hash_ms / planes_ms, 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
