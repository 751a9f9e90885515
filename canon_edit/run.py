"""The run folder: one directory carries a fit's state from `fit` to `edit`, `render` and `eval`.

    RUN/run.json                  method, config, clip source and options, versions, status
    RUN/clip.safetensors          the clip the fit saw (frames at fit resolution, masks, fps)
    RUN/flow.safetensors          cached optical flow (reused by every representation)
    RUN/checkpoints/step_N.*      safetensors (model + optimiser tensors) + JSON (step, scalars)
    RUN/canonical/                the bake: layer_K.png + bake.safetensors, or a representation's own
    RUN/renders/                  reconstruction.mp4, compare.mp4
    RUN/metrics.json              eval figures
    RUN/edits/NAME/               one folder per edit: textures, edit.json, video.mp4
    RUN/segments/seg_K/           a long clip's segments, each a run of its own (segments.py)
    RUN/.canon-edit.json, .lock   the output marker (outputs.py) and the writer's lock (lock.py)

Every file is written atomically; a run counts as finished only when run.json says "done". The run
owns its input: evaluation, keyframe edits, `--compare` and `--resume` read the clip stored here, so
a run keeps working when its source moves or was never a file (a procedural clip).
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from . import __version__
from .atomic import atomic_path, write_json
from .errors import ResumeNeeded, UserError
from .files import CorruptFile, MappedTensors, read_json, read_tensors
from .optim_state import load_optimizer, optimizer_tensors
from .outputs import claim_folder
from .video import Clip, to_uint8

KEEP_CHECKPOINTS = 2
# what canon-edit itself writes in a run folder (a representation adds its own `run_files`)
RUN_ENTRIES = frozenset(
    {"run.json", "clip.safetensors", "flow.safetensors", "checkpoints", "canonical", "renders",
     "metrics.json", "edits", "segments"}
)  # fmt: skip


def versions() -> dict[str, str]:
    import numpy

    return {
        "canon_edit": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def _exact_uint8(x: Tensor) -> bool:
    """Whether values in [0,1] are exactly k/255 (frames of 8-bit files): then uint8 is lossless."""
    return bool(torch.equal(x.mul(255).round().div(255), x))


def _pack(x: Tensor) -> Tensor:
    if x.dtype == torch.uint8:  # frames read as they are stored (`read_clip(as_uint8=True)`)
        return x.contiguous()
    packed = x.mul(255).round().to(torch.uint8) if _exact_uint8(x) else x.float()
    return packed.contiguous()


def _unpack(x: Tensor) -> Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


class MappedFrames:
    """T×3×H×W frames indexed like a tensor, each read converted to float in [0, 1]: uint8 (mapped from
    a file, its pages released after each read) or float frames already in memory. What reads a frame
    or a chunk at a time (a viewer, a portrait's backdrop) then holds those, not 12 bytes a pixel of
    every frame."""

    def __init__(self, frames: Tensor, storage: MappedTensors | None = None) -> None:
        self.frames, self.storage = frames, storage

    @property
    def shape(self) -> torch.Size:
        return self.frames.shape

    def __len__(self) -> int:
        return self.frames.shape[0]

    def __getitem__(self, ids: int | slice | list[int] | Tensor) -> Tensor:
        picked = _unpack(self.frames[ids])
        if self.storage is not None:
            self.storage.release()
        return picked

    def uint8(self) -> Tensor:
        """Every frame as 8 bits, contiguous (as stored, when stored so)."""
        return to_uint8(self.frames).contiguous()


@dataclass
class StoredClip:
    """The clip a run stores, mapped: frames read a chunk at a time, so memory does not grow with it."""

    file: MappedTensors
    fps: float
    source: str

    @property
    def T(self) -> int:
        return int(self.file.tensors["frames"].shape[0])

    @property
    def H(self) -> int:
        return int(self.file.tensors["frames"].shape[2])

    @property
    def W(self) -> int:
        return int(self.file.tensors["frames"].shape[3])

    def mapped_frames(self) -> MappedFrames:
        """The frames, indexed like a tensor and read as they are indexed."""
        return MappedFrames(self.file.tensors["frames"], self.file)

    def read(self, start: int, stop: int) -> Tensor:
        """Frames [start, stop) as float in [0, 1]; the pages read are released."""
        frames = _unpack(self.file.tensors["frames"][start:stop])
        self.file.release()
        return frames

    def read_uint8(self, start: int, stop: int) -> Tensor:
        """Frames [start, stop) as stored, uint8 0..255, copied out before the pages are released."""
        frames = to_uint8(self.file.tensors["frames"][start:stop]).clone()
        self.file.release()
        return frames

    @property
    def has_masks(self) -> bool:
        return "masks" in self.file.tensors

    @property
    def labels(self) -> int:
        """Mask channels (one a label; 0 without masks)."""
        masks = self.file.tensors.get("masks")
        return 0 if masks is None else int(masks.shape[1])

    def read_masks(self, start: int, stop: int) -> Tensor:
        """The masks of frames [start, stop) (B×K×H×W, float in [0, 1]) of a clip that has them."""
        masks = _unpack(self.file.tensors["masks"][start:stop]).clone()
        self.file.release()
        return masks

    def read_foreground(self, start: int, stop: int) -> Tensor | None:
        """The union of the masks' labels over frames [start, stop) (B×H×W), or None without masks."""
        masks = self.file.tensors.get("masks")
        if masks is None:
            return None
        union = _unpack(masks[start:stop].amax(1))
        self.file.release()
        return union

    def part(self, start: int, stop: int) -> Clip:
        """Frames [start, stop) and their masks in memory (a segment of a long clip), copied out."""
        masks = self.file.tensors.get("masks")
        clip = Clip(
            frames=self.read(start, stop).clone(),
            fps=self.fps,
            masks=None if masks is None else _unpack(masks[start:stop]).clone(),
            source=f"{self.source} frames {start}..{stop - 1}",
        )
        self.file.release()
        return clip

    def clip(self) -> Clip:
        """All of it in memory, as the fit saw it (frames, masks, fps)."""
        masks = self.file.tensors.get("masks")
        return Clip(
            frames=_unpack(self.file.tensors["frames"]),
            fps=self.fps,
            masks=None if masks is None else _unpack(masks),
            source=self.source,
        )


@dataclass
class RunFolder:
    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def clip_file(self) -> Path:
        return self.path / "clip.safetensors"

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
    def create(path: str | Path, *, force: bool = False, owned: frozenset[str] = frozenset()) -> RunFolder:
        """A new, empty run folder; an existing one is replaced only under the policy of outputs.py."""
        return RunFolder(claim_folder(path, "run", RUN_ENTRIES | owned, force=force, legacy="run.json"))

    @staticmethod
    def open(path: str | Path, need_done: bool = True) -> RunFolder:
        run = RunFolder(Path(path))
        if not run.run_json.is_file():
            raise UserError(
                f"{run.path} is not a canon-edit run (no run.json); create one with 'canon-edit fit'"
            )
        status = run.info().get("status")
        if need_done and status != "done":
            raise ResumeNeeded(f"the run in {run.path} is not finished (status '{status}')", run.path)
        return run

    def info(self) -> dict[str, Any]:
        return read_json(self.run_json, "the run's record is lost: fit the clip again into a new folder")

    def write_info(self, **fields: Any) -> None:
        info = self.info() if self.run_json.is_file() else {}
        info.update(fields)
        info["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_json(self.run_json, info)

    def save_clip(self, clip: Clip) -> None:
        """Store the clip the fit sees, losslessly (uint8 where the frames came from 8-bit files)."""
        tensors = {"frames": _pack(clip.frames)}
        if clip.masks is not None:
            tensors["masks"] = _pack(clip.masks)
        meta = {"fps": repr(float(clip.fps)), "source": clip.source}
        with atomic_path(self.clip_file) as tmp:
            save_file(tensors, str(tmp), metadata=meta)

    def clip(self) -> Clip:
        """The clip the fit saw, exactly (frames, masks, fps)."""
        stored = self.stored_clip()
        return stored if isinstance(stored, Clip) else stored.clip()

    def stored_clip(self) -> StoredClip | Clip:
        """The clip the fit saw, mapped to be read a chunk at a time (in memory for a legacy run)."""
        if not self.clip_file.is_file():
            return self._legacy_clip()
        fix = "it is the run's copy of its input; fit the clip again into a new folder"
        file = MappedTensors(self.clip_file, fix, required=("frames",))
        frames = file.tensors["frames"]
        if frames.ndim != 4 or frames.dtype not in (torch.uint8, torch.float32):
            raise CorruptFile(self.clip_file, "the frames are not T×C×H×W uint8 or float32", fix)
        try:
            fps = float(file.metadata["fps"])
        except (KeyError, ValueError, TypeError):
            raise CorruptFile(self.clip_file, "no frame rate", fix) from None
        return StoredClip(file, fps, str(file.metadata.get("source", "")))

    def _legacy_clip(self) -> Clip:
        """Runs made before clip.safetensors: re-read the source as the run read it."""
        from .video import read_clip

        options = dict(self.info().get("clip") or {})
        source = options.pop("source", None)
        if not source:
            raise UserError(f"{self.path} does not record its input clip; fit the clip again")
        return read_clip(
            source,
            options.get("masks"),
            max_frames=options.get("max_frames"),
            stride=options.get("stride") or 1,
            size=options.get("size"),
            fps=options.get("fps"),
        )

    def checkpoint_paths(self) -> list[Path]:
        """Complete checkpoints (tensors and JSON both present), oldest first."""
        if not self.checkpoints.is_dir():
            return []
        done = [p for p in self.checkpoints.glob("step_*.json") if p.with_suffix(".safetensors").is_file()]
        steps = []
        for p in done:
            try:
                steps.append((int(p.stem.split("_")[1]), p))
            except (IndexError, ValueError):
                continue
        return [p for _, p in sorted(steps)]

    def save_checkpoint(
        self,
        step: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        extra: dict[str, Any] | None = None,
    ) -> Path:
        tensors, groups = optimizer_tensors(optimizer)
        tensors |= {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        stem = self._checkpoint_stem(step)
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        with atomic_path(stem.with_suffix(".safetensors")) as tmp:
            save_file(tensors, str(tmp))
        write_json(stem.with_suffix(".json"), {"step": step, "param_groups": groups, **(extra or {})})
        for old in self.checkpoint_paths()[:-KEEP_CHECKPOINTS]:
            old.with_suffix(".safetensors").unlink(missing_ok=True)
            old.unlink(missing_ok=True)
        return stem

    def _checkpoint_stem(self, step: int) -> Path:
        return self.checkpoints / f"step_{step:07d}"

    def annotate_checkpoint(self, step: int, **fields: Any) -> None:
        """Add `fields` to the record of checkpoint `step`; its tensors stay as they are."""
        path = self._checkpoint_stem(step).with_suffix(".json")
        write_json(path, read_json(path, "it is skipped") | fields)

    def load_checkpoint(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> dict[str, Any] | None:
        """Restore the newest readable checkpoint into model and optimiser; None when there is none.

        A corrupt checkpoint is skipped with a note naming it and the one used instead, so a
        damaged file costs the steps since the previous checkpoint, never the run.
        """
        paths = self.checkpoint_paths()
        for i, path in enumerate(reversed(paths)):
            try:
                return self._restore(path, model, optimizer)
            except (CorruptFile, RuntimeError, KeyError, ValueError, TypeError) as e:
                older = paths[-2 - i].stem if i + 1 < len(paths) else None
                reason = e if isinstance(e, CorruptFile) else f"{path} does not fit this model"
                print(
                    f"canon-edit: note: checkpoint {path.stem} is unusable ({str(reason).split(';')[0]}); "
                    + (f"resuming from {older}" if older else "resuming from step 0"),
                    file=sys.stderr,
                )
        return None

    def _restore(
        self, path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> dict[str, Any]:
        fix = "it is skipped"
        meta = read_json(path, fix)
        tensors = read_tensors(path.with_suffix(".safetensors"), fix)
        snapshot = {k: v.clone() for k, v in model.state_dict().items()}
        try:
            model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            load_optimizer(optimizer, tensors, meta["param_groups"])
        except Exception:
            model.load_state_dict(snapshot)  # leave the model as it was for the next candidate
            raise
        if not isinstance(meta.get("step"), int):
            raise KeyError("step")
        return meta
