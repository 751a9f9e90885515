"""Reading what a run folder holds: every JSON and safetensors file goes through these loaders.

A run folder may be truncated by a full disk, damaged by a copy, or come from someone else. Whatever
it holds, reading it ends in data or in one `CorruptFile` line naming the file and the way to
recover; never in a traceback and never in code being run (JSON and safetensors only: nothing is
unpickled).
"""

from __future__ import annotations

import json
import math
import mmap
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from .errors import UserError

# the fix of a file that resuming the fit rebuilds (the CLI words it as a command)
RESUME_FIX = "rebuild it by resuming the fit"


class CorruptFile(UserError):
    """A file canon-edit wrote earlier cannot be read back; the message says how to rebuild it."""

    def __init__(self, path: Path, reason: str, fix: str):
        super().__init__(f"{path} is corrupt ({reason}); {fix}")
        self.path, self.reason, self.fix = path, reason, fix


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:120]


def read_json(path: str | Path, fix: str, kind: type = dict) -> Any:
    """The JSON object in `path`; a missing, unreadable or non-`kind` file is one `CorruptFile` line."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptFile(path, _reason(e), fix) from None
    if not isinstance(data, kind):
        raise CorruptFile(path, f"expected a JSON {kind.__name__}", fix)
    return data


def read_tensors(path: str | Path, fix: str, required: tuple[str, ...] = ()) -> dict[str, Tensor]:
    """The tensors in a safetensors file, holding at least `required`; anything else is `CorruptFile`."""
    path = Path(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CorruptFile(path, _reason(e), fix) from None
    missing = [k for k in required if k not in tensors]
    if missing:
        raise CorruptFile(path, f"no tensor {missing[0]!r}", fix)
    return tensors


# safetensors dtype → (numpy dtype the bytes are read as, torch dtype they are viewed as)
_DTYPES = {
    "F64": (np.float64, torch.float64),
    "F32": (np.float32, torch.float32),
    "F16": (np.float16, torch.float16),
    "BF16": (np.int16, torch.bfloat16),
    "I64": (np.int64, torch.int64),
    "I32": (np.int32, torch.int32),
    "I16": (np.int16, torch.int16),
    "I8": (np.int8, torch.int8),
    "U8": (np.uint8, torch.uint8),
    "BOOL": (np.bool_, torch.bool),
}
MAX_HEADER = 100_000_000  # safetensors' own limit


class MappedTensors:
    """The tensors of a safetensors file as zero-copy views of one private mapping of it.

    A tensor costs nothing until it is read, and then only the pages read; so a long clip's bake,
    frames or flow open at once and a reader walks them a chunk at a time. Touched pages count in
    the process's resident memory for as long as they stay mapped, so such a reader calls `release`
    after each chunk: MADV_DONTNEED drops them (they stay in the page cache, so reading them again
    is a minor fault, not a disk read). Measured rendering a 480p 2-layer bake (2026-11-30): peak
    RSS 1075 MiB at 150 frames and 2867 at 600 without `release`, 482 and 485 with it, at the speed
    of rendering the bake from memory. Explicit reads per chunk would keep memory as flat, but a
    mapping hands out real tensors, which the training and edit code index (`layer.uv[t]`). The
    mapping is copy-on-write and its views are read-only by contract: `release` would discard what
    was written into them.
    """

    def __init__(self, path: str | Path, fix: str, required: tuple[str, ...] = ()) -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, 2)
                if size < 8:
                    raise ValueError(f"{size} bytes, shorter than a safetensors header")
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
            n = int.from_bytes(self._map[:8], "little")
            if n > min(MAX_HEADER, size - 8):
                raise ValueError(f"a header of {n} bytes in a file of {size}")
            header = json.loads(self._map[8 : 8 + n])
            if not isinstance(header, dict):
                raise ValueError("the header is not a JSON object")
            self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
            if not isinstance(self.metadata, dict):
                raise ValueError("the metadata is not a JSON object")
            self.tensors = {k: self._view(k, v, 8 + n, size) for k, v in header.items()}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            raise CorruptFile(self.path, _reason(e), fix) from None
        missing = [k for k in required if k not in self.tensors]
        if missing:
            raise CorruptFile(self.path, f"no tensor {missing[0]!r}", fix)

    def _view(self, name: str, info: dict[str, Any], start: int, size: int) -> Tensor:
        """Tensor `name` as a view of the mapping, after checking its entry against the file."""
        if info.get("dtype") not in _DTYPES:
            raise ValueError(f"tensor {name!r} has an unknown dtype")
        np_dtype, dtype = _DTYPES[info["dtype"]]
        shape = [int(d) for d in info["shape"]]
        begin, end = (int(o) for o in info["data_offsets"])
        count = math.prod(shape)
        if min(shape, default=0) < 0 or not 0 <= begin <= end or end - begin != count * dtype.itemsize:
            raise ValueError(f"tensor {name!r} has a malformed entry")
        if start + end > size:
            raise ValueError(f"truncated: tensor {name!r} ends past the end of the file")
        array = np.frombuffer(self._map, np_dtype, count, start + begin)
        if not array.flags.aligned:  # safetensors aligns its data; an unaligned file is read eagerly
            array = array.copy()
        return torch.from_numpy(array).view(dtype).reshape(shape)

    def release(self) -> None:
        """Drop the pages read so far from resident memory; the tensors stay valid."""
        if hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED)
