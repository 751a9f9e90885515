"""The Representation protocol and the registry that maps method names to classes.

A representation is built from a `Clip`, its `Flow` (None when `needs_flow` is False), a config
dataclass and whatever its `prepare` hook computed (tracking, a body model, ...); the shared fitting
loop (`canon_edit.train.fit`) only calls `param_groups`, `sample` and `losses`; `bake` turns the
fitted fields into the fast, editable form.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from canon_edit.errors import UserError
from canon_edit.evaluate import Bake
from canon_edit.run import RunFolder
from canon_edit.video import Clip

# name → (module, class); imported lazily so a method's heavy dependencies load only when used
REGISTRY: dict[str, tuple[str, str]] = {
    "codef": ("representations.codef", "CoDeF"),
    "atlas": ("representations.atlas", "Atlas"),
    "portrait": ("representations.portrait.model", "Portrait"),
}


class Representation(nn.Module):
    name: ClassVar[str]
    config_class: ClassVar[type]
    needs_flow: ClassVar[bool] = True  # False: the fit computes no optical flow and passes flow=None

    @classmethod
    def prepare(
        cls, clip: Clip, cfg: Any, run: RunFolder, show_progress: bool
    ) -> tuple[Clip, dict[str, Any]]:
        """Per-clip work before the model is built, cached in `run` so --resume does not redo it.

        Returns the clip (possibly completed, e.g. with masks) that the constructor, the bake and the
        metrics all see, and extra keyword arguments for the constructor.
        """
        return clip, {}

    def param_groups(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def sample(self, step: int, generator: torch.Generator) -> dict[str, Tensor]:
        raise NotImplementedError

    def losses(self, batch: dict[str, Tensor], step: int) -> tuple[dict[str, Tensor], dict[str, float]]:
        raise NotImplementedError

    @torch.no_grad()
    def bake(self) -> Bake:
        raise NotImplementedError

    def extra_metrics(self, clip: Clip, cv: Bake) -> dict[str, Any]:
        """The method's own figures for metrics.json and the benchmark line (e.g. alpha IoU)."""
        return {}


def get_representation(name: str) -> type[Representation]:
    if name not in REGISTRY:
        raise UserError(f"unknown method '{name}'; choose one of: {', '.join(sorted(REGISTRY))}")
    module, cls = REGISTRY[name]
    return getattr(importlib.import_module(module), cls)
