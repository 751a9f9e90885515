"""What a long edit's checkpoint costs: seconds to save and to restore, and its size; one JSON line.

    python bench/edit_checkpoint.py [--layers 2] [--texture 2048] [--repeats 3]

An SDS/DDS edit of a 2D run optimises each layer's RGB texture with Adam; its checkpoint
(`canon_edit.edit.checkpoint`, written every minute and on Ctrl-C) holds the textures and both
moments. Here: `--layers` textures of `--texture`² texels after one Adam step, saved and restored
through `EditCheckpoint` as the edit does, into a temporary run folder; best of `--repeats`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from canon_edit.edit.checkpoint import EditCheckpoint, checkpoint_path
from canon_edit.run import RunFolder, versions


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--texture", type=int, default=2048, help="texture side in texels")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    params = [torch.rand(3, args.texture, args.texture, requires_grad=True) for _ in range(args.layers)]
    opt = torch.optim.Adam(params, lr=0.01)
    sum(x.sum() for x in params).backward()
    opt.step()
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        run = RunFolder.create(Path(tmp) / "run")
        request = {"mode": "sds", "prompt": "a bench"}
        saves, restores = [], []
        for _ in range(args.repeats):
            cp = EditCheckpoint(run, "bench", request, resume=False, restart=True)
            t0 = time.perf_counter()
            cp.save(1, 300, opt, device, {}, {})
            saves.append(time.perf_counter() - t0)
            size = checkpoint_path(run, "bench").stat().st_size
            t0 = time.perf_counter()
            resumed = EditCheckpoint(run, "bench", request, resume=True, restart=False)
            resumed.restore(opt, device, 300, {}, {})
            restores.append(time.perf_counter() - t0)
    figures = {
        "bench": "edit_checkpoint",
        "layers": args.layers,
        "texture": args.texture,
        "size_mb": round(size / 2**20, 1),
        "size_bytes": size,
        "save_seconds": round(min(saves), 3),
        "restore_seconds": round(min(restores), 3),
        "threads": torch.get_num_threads(),
        "device": "cpu",
        "versions": versions(),
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
