"""Re-render speed of a baked CanonicalVideo at 480p: one JSON line.

    python bench/render_speed.py [--layers 2] [--frames 50] [--device cpu]

The bake is synthetic (random textures, smooth uv, soft alpha) at the size a 480p fit produces;
rendering is a pure gather, so its speed does not depend on what the textures show.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from canon_edit.canonical import CanonicalVideo, Layer
from canon_edit.run import versions
from canon_edit_representations.motion import pixel_grid_ndc


def synthetic_bake(frames: int, height: int, width: int, layers: int, device: str) -> CanonicalVideo:
    g = torch.Generator().manual_seed(0)
    grid = pixel_grid_ndc(height, width)
    out = []
    for k in range(layers):
        uv = torch.stack([grid * (0.7 + 0.1 * t / frames) + 0.05 * k for t in range(frames)]).half()
        alpha = None if k == 0 else torch.rand(frames, height, width, generator=g).half()
        tex = torch.rand(3, round(height * 1.4), round(width * 1.4), generator=g)
        out.append(
            Layer(texture=tex.to(device), uv=uv.to(device), alpha=None if alpha is None else alpha.to(device))
        )
    return CanonicalVideo(layers=out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=50)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=854)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--chunk", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    cv = synthetic_bake(args.frames, args.height, args.width, args.layers, args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    with torch.no_grad():
        cv.render([0, 1], chunk=args.chunk)
        times = []
        for _ in range(args.repeats):
            sync()
            t0 = time.perf_counter()
            cv.render(chunk=args.chunk)
            sync()
            times.append(time.perf_counter() - t0)
    best = min(times)
    print(
        json.dumps(
            {
                "bench": "render_speed",
                "fps": round(args.frames / best, 1),
                "frames": args.frames,
                "height": args.height,
                "width": args.width,
                "layers": args.layers,
                "device": args.device,
                "threads": torch.get_num_threads(),
                "chunk": args.chunk,
                "versions": versions(),
            }
        )
    )


if __name__ == "__main__":
    main()
