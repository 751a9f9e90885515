"""An optimiser's state as flat tensors and JSON groups: what a checkpoint stores, with no pickle.

`torch.optim.Optimizer.state_dict()` is nested Python (a pickle's job); safetensors holds only named
tensors, so the moments become `optim.<param index>.<name>` and the groups' hyper-parameters JSON.
Fits and long edits checkpoint through these two functions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def parameters(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    """The optimiser's parameters in the order its state is keyed by (group after group)."""
    return [p for g in optimizer.param_groups for p in g["params"]]


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    """(`optim.<pid>.<name>` → CPU tensor, the parameter groups without tensors) of `optimizer`."""
    opt = optimizer.state_dict()
    tensors = {}
    for pid, st in opt["state"].items():
        for k, v in st.items():
            t = v if isinstance(v, Tensor) else torch.tensor(v)
            tensors[f"optim.{pid}.{k}"] = t.detach().cpu().contiguous()
    groups = [
        {k: v for k, v in g.items() if k != "params"} | {"params": g["params"]} for g in opt["param_groups"]
    ]
    return tensors, groups


def load_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], groups: list[dict[str, Any]]
) -> None:
    """Restore what `optimizer_tensors` saved: each moment onto its parameter's device (an edit may
    keep its parameters on the CPU and its diffusion model on a GPU); Adam's step stays on the CPU.

    Raises ValueError, KeyError, IndexError or RuntimeError when the saved state holds other parameters.
    """
    params = parameters(optimizer)
    state: dict[int, dict[str, Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v if name == "step" else v.to(params[int(pid)].device)
    optimizer.load_state_dict({"state": state, "param_groups": regrouped(groups, optimizer, state)})


def regrouped(
    saved: list[dict[str, Any]], optimizer: torch.optim.Optimizer, state: dict[int, dict]
) -> list[dict]:
    """The checkpoint's parameter groups, or the optimiser's own where the same parameters were regrouped.

    A learning rate given to part of a group (`--set lr_grid_background=...` on resume) splits it. The
    state is keyed by the parameters' order, which the split keeps; each state tensor's shape is checked
    against its parameter, so a truly different model is still refused.
    """
    current = optimizer.state_dict()["param_groups"]
    if [len(g["params"]) for g in saved] == [len(g["params"]) for g in current]:
        return saved
    params = parameters(optimizer)
    fits = sum(len(g["params"]) for g in saved) == len(params) and all(
        0 <= i < len(params) and all(v.ndim == 0 or v.shape == params[i].shape for v in st.values())
        for i, st in state.items()
    )
    if not fits:
        raise ValueError("its optimiser state holds other parameters")
    return current
