"""What a representation is to the core: the `Representation` base, the `Bake` protocol, the registry.

The core never imports a representation. Representations are plugins: classes named in the
`canon_edit.representations` entry-point group of an installed package (the built-ins register
there from pyproject.toml), in `$CANON_EDIT_REPRESENTATIONS` (`name=module:Class,...`, for a plugin
that is not packaged), or through `register`. A run folder only ever selects a registered name: the
module that runs is chosen by the user's installation and environment, never by a file in a run.

A representation is built from a `Clip`, its `Flow` (None when `needs_flow` is False), a config
dataclass and whatever its `prepare` hook computed; the fitting loop (`train.optimise`) calls only
`param_groups`, `sample` and `losses`; `bake` turns the fitted fields into the fast, editable form,
an instance of `bake_class`, which `load_bake` reads back from a finished run.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from .canonical import CanonicalVideo
from .errors import UserError
from .memory import FitCost
from .run import RunFolder
from .video import Clip

ENTRY_POINT_GROUP = "canon_edit.representations"
ENV_REGISTRY = "CANON_EDIT_REPRESENTATIONS"

_registered: dict[str, str] = {}


class Bake(Protocol):
    """What a representation bakes to and every command renders (CanonicalVideo, PortraitAsset, ...)."""

    fps: float

    @property
    def T(self) -> int: ...

    def render(self, frames: Any = None, textures: Any = None) -> Tensor: ...

    def save(self, folder: str | Path) -> None: ...

    @classmethod
    def load(cls, folder: str | Path) -> Bake: ...


class EditableBake(Bake, Protocol):
    """A bake that edits itself (a portrait's Gaussians), where the core edits a `CanonicalVideo`'s textures.

    The edit commands validate their inputs and hold the run's lock; these methods do the editing and
    return the edited bake and what edit.json should record. `save_edit` writes the edited state into
    an edit folder, `load_edit` reads it back onto this (unedited) bake. Two more are looked up by name
    when a command needs them: `relight(options, progress, checkpoints)` and `stylize(style, options,
    vgg, progress, checkpoints)`, with the same return shape. `checkpoints(kind)` opens the edit's
    checkpoint (`canon_edit.edit.checkpoint.EditCheckpoint`): a long loop saves into it and resumes from it.
    """

    def lift_keyframe(
        self,
        frame: int,
        edited: Tensor,
        source: Tensor,
        mask: Tensor | None,
        overrides: dict[str, Any] | None,
        progress: bool,
    ) -> tuple[Bake, dict[str, Any]]: ...

    def diffusion_edit(
        self, request: Any, progress: bool, checkpoints: Callable[[str], Any] | None = None
    ) -> tuple[Bake, dict[str, Any]]:
        """`checkpoints(kind)` opens the edit's checkpoint (`canon_edit.edit.checkpoint`)."""
        ...

    def transfer_appearance(self, reference: Tensor) -> tuple[Bake, dict[str, Any]]: ...

    def save_edit(self, folder: Path) -> None: ...

    def load_edit(self, folder: Path) -> Bake: ...


class Representation(nn.Module):
    name: ClassVar[str]
    config_class: ClassVar[type]
    bake_class: ClassVar[type]
    # importable package holding the method's YAML presets (`<preset>.yaml`); "" = none
    presets: ClassVar[str] = ""
    needs_flow: ClassVar[bool] = True  # False: the fit computes no optical flow and passes flow=None
    # entries of the run folder this method writes besides the core's (removed by `fit --force`)
    run_files: ClassVar[frozenset[str]] = frozenset()
    # a CPU fit's peak memory as bench/fit_memory.py measures it; `fit` refuses a clip that would need
    # more than the machine has available (canon_edit.memory). None: not checked
    fit_memory: ClassVar[FitCost | None] = None

    @classmethod
    def memory_cost(cls, device: torch.device) -> FitCost | None:
        """`fit_memory` where it was measured, on the CPU; None on a GPU, whose fields and optimiser
        live in its own memory, not the machine's."""
        return cls.fit_memory if device.type == "cpu" else None

    @classmethod
    def segmentable(cls) -> bool:
        """Whether a long clip can be fitted as segments: their seams are joined by lifting a 2D bake's
        frames into the next canonical, so only methods that bake a `CanonicalVideo` split."""
        return issubclass(cls.bake_class, CanonicalVideo)

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

    @classmethod
    def demo(cls, out: Path, force: bool, quick: bool, show_progress: bool) -> dict[str, Any]:
        """Fit and edit the method's own procedural example into `out` (`canon-edit demo --NAME`)."""
        raise UserError(f"{cls.name} has no demo of its own; run 'canon-edit demo' for the 2D one")


def register(name: str, target: str) -> None:
    """Make method `name` load `target` ("module:Class"); for plugins and tests."""
    _registered[name] = target


def registry() -> dict[str, str]:
    """name → "module:Class" from entry points, then the environment, then `register` (later wins)."""
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    for item in filter(None, (s.strip() for s in os.environ.get(ENV_REGISTRY, "").split(","))):
        name, sep, target = item.partition("=")
        if not sep or ":" not in target:
            raise UserError(f"${ENV_REGISTRY}: '{item}' is not name=module:Class; fix the variable")
        found[name.strip()] = target.strip()
    return found | _registered


def get_representation(name: str) -> type[Representation]:
    known = registry()
    if name not in known:
        raise UserError(f"unknown method '{name}'; choose one of: {', '.join(sorted(known)) or 'none'}")
    module, _, attr = known[name].partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except ImportError as e:
        raise UserError(
            f"method '{name}' cannot load ({e}); install what it needs (see the README's extras)"
        ) from None
    except AttributeError:
        raise UserError(
            f"method '{name}' names {known[name]}, which does not exist; fix its registration"
        ) from None
    return cls


def load_bake(run: RunFolder) -> Bake:
    """The bake of a finished run, read by the bake class of the method run.json names (a segmented
    run's, by `SegmentedVideo` from its segments' runs)."""
    from .segments import SEGMENTS_FILE, SegmentedVideo

    if (run.canonical / SEGMENTS_FILE).is_file():
        return SegmentedVideo.load(run.canonical)
    cls = get_representation(str(run.info().get("method")))
    return cls.bake_class.load(run.canonical)
