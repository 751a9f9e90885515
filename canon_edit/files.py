"""Reading what a run folder holds: every JSON and safetensors file goes through these two loaders.

A run folder may be truncated by a full disk, damaged by a copy, or come from someone else. Whatever
it holds, reading it ends in data or in one `CorruptFile` line naming the file and the way to
recover; never in a traceback and never in code being run (JSON and safetensors only: nothing is
unpickled).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
