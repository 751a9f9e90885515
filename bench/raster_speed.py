"""Speed of the CPU Gaussian rasterizer, forward and backward, against the reference: one JSON line.

    OMP_NUM_THREADS=1 python bench/raster_speed.py [--repeats 7]

Scene: the procedural portrait's Gaussians (representations/portrait/procedural.py: one per texel of a
128² UV map over the front of the synthetic SMPL-X body, scales 0.8/0.8/0.3 texel, opacity 0.95) seen
by its camera at 454×256 (focal 1.8·height: head and shoulders fill the frame), with 16 feature
channels as the portrait model rasterizes. So the footprints are the ones a fit starts from. Each
variant is the reference plus one lever, then the levers combined; all run in one process at one
thread, interleaved round robin, so their ratios hold even on a loaded machine. The variants:
opacity_footprint and few_float64 are the reference's pair list with one lever each, torch_fast
both (the fallback without numba); tiles16_early_stop is 3DGS's tile layout in numba;
scatter_no_early_stop and final are the numba default, without and with early termination. Pairs
are the (Gaussian, pixel) pairs the reference composites (α ≥ 1/255); pairs/s divides them by
forward + backward time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable

import torch

from canon_edit.run import versions
from canon_edit_representations.portrait.body import SMPLXBody
from canon_edit_representations.portrait.camera import Camera
from canon_edit_representations.portrait.gaussians import texel_binding, texel_sizes
from canon_edit_representations.portrait.raster_fast import numba_available, pixel_boxes, rasterize_fast
from canon_edit_representations.portrait.raster_reference import project, rasterize_torch
from canon_edit_representations.portrait.render import posed_gaussians
from canon_edit_representations.portrait.synthetic_body import write_synthetic_smplx
from canon_edit_representations.portrait.tracking import look_at_viewmat

WIDTH, HEIGHT, CHANNELS = 454, 256, 16


def portrait_scene(texel_resolution: int = 128) -> dict[str, torch.Tensor]:
    """The procedural portrait's Gaussians at rest pose, its camera at WIDTH×HEIGHT, random features."""
    with tempfile.TemporaryDirectory() as folder:
        write_synthetic_smplx(folder)
        body = SMPLXBody(folder)
    shape = torch.zeros(1, body.n_shape)
    pose, expression = torch.zeros(body.n_joints, 3), torch.zeros(body.n_expression)
    with torch.no_grad():
        rest = body(pose[None], expression[None], shape).vertices[0]
        tri = rest[body.faces]
        normals = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
        centres = tri.mean(1)
        front = (centres[:, 1] > -0.15) & ((normals[:, 2] > 0) | (centres[:, 1] > 0.0))
        tri_id, bary = texel_binding(body.uv, body.uv_faces, texel_resolution, front)
        texel = texel_sizes(rest, body.faces, body.uv, body.uv_faces, tri_id, texel_resolution)
        n = len(tri_id)
        local = torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1)
        means, quats = posed_gaussians(body, pose, expression, shape, tri_id, bary, torch.zeros(n, 3), local)
    f = 1.8 * HEIGHT
    return {
        "means": means,
        "quats": quats,
        "scales": texel[:, None] * torch.tensor([0.8, 0.8, 0.3]),
        "opacities": torch.full((n,), 0.95),
        "colors": torch.randn(n, CHANNELS, generator=torch.Generator().manual_seed(0)),
        "viewmat": look_at_viewmat(torch.tensor([0.0, 0.12, 0.75]), torch.tensor([0.0, 0.12, 0.0])),
        "K": torch.tensor([[f, 0.0, WIDTH / 2], [0.0, f, HEIGHT / 2], [0.0, 0.0, 1.0]]),
    }


@torch.no_grad()
def reference_pairs(scene: dict[str, torch.Tensor]) -> int:
    """(Gaussian, pixel) pairs the reference composites: α ≥ 1/255 inside its 3σ boxes."""
    means2d, conics, depths, cov2d = project(
        scene["means"], scene["quats"], scene["scales"], scene["viewmat"], scene["K"]
    )
    boxes, valid = pixel_boxes(
        means2d, conics, cov2d, depths, scene["opacities"], WIDTH, HEIGHT, near=0.01, max_radius=64
    )
    total = 0
    for g in valid.nonzero().squeeze(1).tolist():
        x0, x1, y0, y1 = boxes[g].tolist()
        ys, xs = torch.meshgrid(torch.arange(y0, y1) + 0.5, torch.arange(x0, x1) + 0.5, indexing="ij")
        dx, dy = xs - means2d[g, 0], ys - means2d[g, 1]
        a, b, c = conics[g].tolist()
        power = -0.5 * (a * dx**2 + c * dy**2) - b * dx * dy
        alpha = (scene["opacities"][g] * power.exp()).clamp(max=0.99)
        total += int(((alpha >= 1 / 255) & (power <= 0)).sum())
    return total


def time_once(
    render: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    scene: dict[str, torch.Tensor],
    weights: torch.Tensor,
) -> tuple[float, float]:
    """Forward and backward milliseconds of one render + a fixed linear loss on image and alpha."""
    inputs = {k: v.clone().requires_grad_(k in ("means", "scales", "opacities", "colors", "quats"))
              for k, v in scene.items()}  # fmt: skip
    t0 = time.perf_counter()
    viewmat, K = inputs.pop("viewmat"), inputs.pop("K")
    image, alpha = render(**inputs, camera=Camera(viewmat, K, WIDTH, HEIGHT))
    t1 = time.perf_counter()
    (torch.cat([image, alpha], -1) * weights).sum().backward()
    t2 = time.perf_counter()
    return 1e3 * (t1 - t0), 1e3 * (t2 - t1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    torch.set_num_threads(1)
    scene = portrait_scene()
    pairs = reference_pairs(scene)
    variants: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {
        "reference": rasterize_torch,
        "opacity_footprint": lambda **kw: rasterize_fast(**kw, kernel="torch", few_float64=False),
        "few_float64": lambda **kw: rasterize_fast(**kw, kernel="torch", opacity_footprint=False),
        "torch_fast": lambda **kw: rasterize_fast(**kw, kernel="torch"),
    }
    if numba_available():
        variants["tiles16_early_stop"] = lambda **kw: rasterize_fast(**kw, kernel="tiles")
        variants["scatter_no_early_stop"] = lambda **kw: rasterize_fast(**kw, kernel="scatter", t_min=0.0)
        variants["final"] = lambda **kw: rasterize_fast(**kw, kernel="scatter")
    weights = torch.randn(HEIGHT, WIDTH, CHANNELS + 1, generator=torch.Generator().manual_seed(1))
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for rep in range(args.repeats + 1):  # round robin, so load from other processes hits every variant alike
        for name, render in variants.items():
            fwd_bwd = time_once(render, scene, weights)
            if rep > 0:  # the first round warms up (numba loads its cached kernels there)
                times[name].append(fwd_bwd)
    results = {}
    for name, samples in times.items():
        fwd = statistics.median(f for f, _ in samples)
        bwd = statistics.median(b for _, b in samples)
        results[name] = {"forward_ms": round(fwd, 2), "backward_ms": round(bwd, 2),
                         "pairs_per_s": round(pairs / (fwd + bwd) * 1e3)}  # fmt: skip
    ref = results["reference"]
    for r in results.values():
        r["speedup"] = round(
            (ref["forward_ms"] + ref["backward_ms"]) / (r["forward_ms"] + r["backward_ms"]), 2
        )
    print(
        json.dumps(
            {
                "bench": "raster_speed",
                "device": "cpu",
                "threads": torch.get_num_threads(),
                "width": WIDTH,
                "height": HEIGHT,
                "gaussians": len(scene["means"]),
                "channels": CHANNELS,
                "pairs": pairs,
                "repeats": args.repeats,
                "numba": numba_available(),
                "variants": results,
                "versions": versions(),
            }
        )
    )


if __name__ == "__main__":
    main()
