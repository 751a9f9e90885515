"""Device selection, shared by fitting and editing: one place that turns a name into a torch device."""

from __future__ import annotations

import torch

from .errors import UserError


def pick_device(name: str = "auto") -> torch.device:
    """'auto' (CUDA when present), 'cpu' or 'cuda[:N]'; anything else is one line naming the choices."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{name}' requested but this torch has no CUDA; use the CPU")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}'; use auto, cpu or cuda[:N]") from None
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"device '{name}' cannot run canon-edit; use auto, cpu or cuda[:N]")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"device '{name}' does not exist; this machine has {torch.cuda.device_count()} GPUs")
    return dev
