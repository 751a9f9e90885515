"""The run folder: one directory carries a fit's state from `fit` to `edit`, `render` and `eval`.

    RUN/run.json                  method, config, clip source and options, versions, status
    RUN/flow.safetensors          cached optical flow (reused by every representation)
    RUN/checkpoints/step_N.*      safetensors (model + optimiser tensors) + JSON (step, scalars)
    RUN/canonical/                baked CanonicalVideo: layer_K.png, bake.safetensors
    RUN/renders/                  reconstruction.mp4, compare.mp4
    RUN/metrics.json              eval figures
    RUN/edits/NAME/               one folder per edit: textures, edit.json, video.mp4

Every file is written atomically; a run counts as finished only when run.json says "done".
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from . import __version__
from .atomic import atomic_path, write_json
from .errors import UserError

KEEP_CHECKPOINTS = 2


def versions() -> dict[str, str]:
    import numpy

    return {
        "canon_edit": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


@dataclass
class RunFolder:
    path: Path

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def canonical(self) -> Path:
        return self.path / "canonical"

    @property
    def renders(self) -> Path:
        return self.path / "renders"

    @property
    def edits(self) -> Path:
        return self.path / "edits"

    @property
    def flow(self) -> Path:
        return self.path / "flow.safetensors"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @staticmethod
    def create(path: str | Path, *, resume: bool = False, force: bool = False) -> RunFolder:
        """Open a run folder for fitting, refusing to clobber an existing one by accident."""
        run = RunFolder(Path(path))
        if resume:
            if not run.run_json.is_file():
                raise UserError(
                    f"--resume: {run.path} holds no run (no run.json); start a new fit without --resume"
                )
            return run
        if run.path.exists() and any(run.path.iterdir()):
            if not force:
                raise UserError(
                    f"output folder {run.path} already exists; pass --resume to continue it "
                    "or --force to overwrite it"
                )
            shutil.rmtree(run.path)
        try:
            run.path.mkdir(parents=True, exist_ok=True)
            probe = run.path / ".write_test"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise UserError(
                f"cannot write to {run.path} ({e.strerror}); choose a writable output folder"
            ) from None
        return run

    @staticmethod
    def open(path: str | Path, need_done: bool = True) -> RunFolder:
        run = RunFolder(Path(path))
        if not run.run_json.is_file():
            raise UserError(
                f"{run.path} is not a canon-edit run (no run.json); create one with 'canon-edit fit'"
            )
        if need_done and run.info().get("status") != "done":
            raise UserError(
                f"the run in {run.path} is not finished (status '{run.info().get('status')}'); "
                "finish it with 'canon-edit fit ... --resume'"
            )
        return run

    def info(self) -> dict[str, Any]:
        return json.loads(self.run_json.read_text())

    def write_info(self, **fields: Any) -> None:
        info = self.info() if self.run_json.is_file() else {}
        info.update(fields)
        info["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_json(self.run_json, info)

    def checkpoint_paths(self) -> list[Path]:
        """Complete checkpoints (tensors and JSON both present), oldest first."""
        if not self.checkpoints.is_dir():
            return []
        done = [p for p in self.checkpoints.glob("step_*.json") if p.with_suffix(".safetensors").is_file()]
        return sorted(done, key=lambda p: int(p.stem.split("_")[1]))

    def save_checkpoint(
        self,
        step: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        extra: dict[str, Any] | None = None,
    ) -> Path:
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        opt = optimizer.state_dict()
        for pid, st in opt["state"].items():
            for k, v in st.items():
                t = v if isinstance(v, Tensor) else torch.tensor(v)
                tensors[f"optim.{pid}.{k}"] = t.detach().cpu().contiguous()
        groups = [
            {k: v for k, v in g.items() if k != "params"} | {"params": g["params"]}
            for g in opt["param_groups"]
        ]
        stem = self.checkpoints / f"step_{step:07d}"
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        with atomic_path(stem.with_suffix(".safetensors")) as tmp:
            save_file(tensors, str(tmp))
        write_json(stem.with_suffix(".json"), {"step": step, "param_groups": groups, **(extra or {})})
        for old in self.checkpoint_paths()[:-KEEP_CHECKPOINTS]:
            old.with_suffix(".safetensors").unlink(missing_ok=True)
            old.unlink(missing_ok=True)
        return stem

    def load_checkpoint(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> dict[str, Any] | None:
        """Restore the newest checkpoint into model and optimiser; None when there is none."""
        paths = self.checkpoint_paths()
        if not paths:
            return None
        meta = json.loads(paths[-1].read_text())
        tensors = load_file(str(paths[-1].with_suffix(".safetensors")))
        device = next(model.parameters()).device
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        state: dict[int, dict[str, Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, pid, name = k.split(".", 2)
                state.setdefault(int(pid), {})[name] = v if name == "step" else v.to(device)
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        return meta


def check_writable_parent(path: str | Path) -> None:
    parent = Path(path).resolve().parent
    if not os.access(parent if parent.exists() else parent.parent, os.W_OK):
        raise UserError(f"cannot write to {parent}; choose a writable output path")
