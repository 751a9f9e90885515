"""Each layer's initial per-frame affines and extent, kept in the run folder for `fit --resume`.

The photometric refinement of the chained flow affines costs 6-10 s a layer on an 84-frame 240p
clip (breakdance; 10-26 s before its gradients were written out, bench/init_speed.py), and a
resumed fit needs the first pass's values exactly: the checkpoint holds the fitted affines, but
the texture sizes are derived from the initial ones. So the first pass writes them to
``RUN/layer_init.safetensors`` with a key of what they were computed from (the frames, the layer
weights and the options that change them), and a later pass whose key matches reads them back. A
missing, unreadable or mismatched file is computed again and replaced.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from canon_edit.atomic import atomic_path
from canon_edit.flow import frames_key

INIT_FILE = "layer_init.safetensors"
FORMAT = "1"
LayerInit = tuple[Tensor, Tensor, Tensor]  # T×2×3 affines, lo (2), hi (2)
_NAMES = ("affines", "lo", "hi")


def init_key(frames: Tensor, weights: Tensor, options: dict[str, object]) -> str:
    """What the initialisation depends on: the frames, the layer weights (L×T×H×W) and `options`.

    Both are keyed as the flow cache keys frames (a subsample, chunk by chunk), so a long 480p clip
    is not copied whole to be hashed."""
    settings = ",".join(f"{k}={v}" for k, v in sorted(options.items()))
    return f"{FORMAT};{frames_key(frames)};{frames_key(weights.transpose(0, 1))};{settings}"


def _read(path: Path, key: str, frames: int) -> list[LayerInit] | None:
    """The layers' inits in `path` if it holds them for `key` with `frames` frames each, else None."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("key") != key:
                return None
            inits = [
                tuple(f.get_tensor(f"{k}.{name}") for name in _NAMES) for k in range(int(meta["layers"]))
            ]
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError):
        return None
    shapes = [(frames, 2, 3), (2,), (2,)]
    fit = all(
        [tuple(t.shape) for t in init] == shapes
        and all(t.dtype == torch.float32 and bool(torch.isfinite(t).all()) for t in init)
        for init in inits
    )
    return inits if inits and fit else None  # type: ignore[return-value]


def cached_inits(
    path: Path | None, key: str, frames: int, compute: Callable[[], list[LayerInit]]
) -> list[LayerInit]:
    """`compute()`, or what `path` holds for `key`; written to `path` (atomically) when computed."""
    if path is not None and path.is_file():
        stored = _read(path, key, frames)
        if stored is not None:
            return stored
    inits = compute()
    if path is not None:
        tensors = {
            f"{k}.{name}": t.contiguous()
            for k, init in enumerate(inits)
            for name, t in zip(_NAMES, init, strict=True)
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"key": key, "layers": str(len(inits))})
    return inits
