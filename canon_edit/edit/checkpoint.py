"""A long edit's checkpoint, RUN/edits/.NAME.partial.safetensors, so a stopped edit resumes.

Score distillation (SDS/DDS) and a portrait's iterative dataset update (InstructPix2Pix, IC-Light)
run for hundreds of UNet steps: an hour and more on a CPU. Their loops save the optimised
parameters, the optimiser's moments and what else they keep (an edited dataset) every
`every_seconds`, and when Ctrl-C asks them to stop (at the end of the step in flight; a second
Ctrl-C stops at once). Their random draws are seeded per step, so `edit ... --resume` continues
where it stopped, bit for bit on the same device. The file also holds what the edit was asked (its
request) and the device: a resume must ask the same.

One safetensors file, the JSON in its header, written atomically: a kill leaves the previous
checkpoint or the new one. It is canon-edit's own: removed once the edit is saved, replaced only by
an edit started over (force); a hidden name, which no edit name can take.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..atomic import atomic_path
from ..errors import EditResumeRefused, EditStopped, UserError
from ..optim_state import load_optimizer, optimizer_tensors, parameters
from ..run import RunFolder

CHECKPOINT_SECONDS = 60.0
GENERATOR = "generator"  # a CheckpointedLoop's stream of draws, kept with its tensors


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:120]


def checkpoint_path(run: RunFolder, name: str) -> Path:
    """Hidden and beside the edit folders: no edit name starts with a dot, `list_edits` skips it."""
    return run.edits / f".{name}.partial.safetensors"


class EditCheckpoint:
    """The checkpoint of edit `name`: checked against the request when opened, saved by the loop."""

    def __init__(
        self, run: RunFolder, name: str, request: dict[str, Any], resume: bool, restart: bool
    ) -> None:
        """One line when the request cannot go ahead: a stopped edit of that name is neither resumed
        nor started over, or a resume finds nothing to resume, or asks something else."""
        self.path, self.name, self.request = checkpoint_path(run, name), name, request
        self.every_seconds = CHECKPOINT_SECONDS
        self._saved: dict[str, Any] | None = None
        self._last = time.monotonic()
        if not self.path.is_file():
            if resume:
                raise UserError(
                    f"edit '{name}' has no checkpoint to resume ({self.path.name} is not in {run.edits}; "
                    "sds, dds, and a portrait's ip2p, IC-Light, albedo-refit relight and texture stylize "
                    "edits keep one); make it without resuming"
                )
            return
        if restart and not resume:
            self.path.unlink()
            return
        saved = self._header()
        if not resume:
            stopped = f"edit '{name}' was stopped at step {saved['step']} of {saved['steps']}"
            raise EditStopped(stopped, name, can_restart=True)
        changed = [
            k
            for k in sorted(set(saved["request"]) | set(request))
            if saved["request"].get(k) != request.get(k)
        ]
        if changed:
            was = ", ".join(f"{k}={saved['request'].get(k)!r}" for k in changed)
            raise EditResumeRefused(f"edit '{name}' was started with {was}", name)
        self._saved = saved

    def _header(self) -> dict[str, Any]:
        try:
            with safe_open(str(self.path), "pt") as f:
                header = json.loads((f.metadata() or {})["canon_edit"])
        except (SafetensorError, OSError, KeyError, ValueError) as e:
            raise EditResumeRefused(f"{self.path} is corrupt ({_first_line(e)})", self.name) from None
        if not isinstance(header, dict) or not {"step", "steps", "request", "device"} <= header.keys():
            raise EditResumeRefused(
                f"{self.path} is corrupt (its header lacks the step and request)", self.name
            )
        return header

    def restore(
        self,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        steps: int,
        state: dict[str, Any],
        tensors: dict[str, Tensor],
    ) -> int:
        """Load the saved parameters and moments into `optimizer`, and the loop's own `state` (JSON
        values) and `tensors` into those dicts; the step to go on from (0: none)."""
        if self._saved is None:
            return 0
        saved = self._saved
        if saved["device"] != device.type:
            raise EditResumeRefused(
                f"edit '{self.name}' was started on {saved['device']}, whose random draws this "
                f"{device.type} device cannot repeat",
                self.name,
            )
        if saved["steps"] != steps:
            raise EditResumeRefused(
                f"edit '{self.name}' was started for {saved['steps']} steps, not {steps}", self.name
            )
        try:
            stored = load_file(str(self.path))
            with torch.no_grad():
                for i, p in enumerate(parameters(optimizer)):
                    p.copy_(stored[f"param.{i}"].to(p.device))
            load_optimizer(optimizer, stored, saved["param_groups"])
        except (SafetensorError, OSError, KeyError, IndexError, ValueError, RuntimeError) as e:
            raise EditResumeRefused(
                f"{self.path} does not fit this edit ({str(e)[:80]})", self.name
            ) from None
        state.update(saved.get("state", {}))
        for key, value in stored.items():  # onto the device and dtype of the loop's own entries
            if key.startswith("extra."):
                like = tensors.get(key[6:])
                tensors[key[6:]] = value.to(device) if like is None else value.to(like)
        print(f"canon-edit: resuming edit '{self.name}' at step {saved['step']} of {steps}", file=sys.stderr)
        return int(saved["step"])

    def save(
        self,
        step: int,
        steps: int,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        state: dict[str, Any],
        tensors: dict[str, Tensor],
    ) -> None:
        """Write the state after `step` steps (atomically: the previous checkpoint until it is whole)."""
        stored, groups = optimizer_tensors(optimizer)
        stored |= {f"param.{i}": p.detach().cpu().contiguous() for i, p in enumerate(parameters(optimizer))}
        stored |= {f"extra.{k}": v.detach().cpu().contiguous() for k, v in tensors.items()}
        header = {
            "step": step,
            "steps": steps,
            "request": self.request,
            "device": device.type,
            "param_groups": groups,
            "state": state,
        }
        with atomic_path(self.path) as tmp:
            save_file(stored, str(tmp), metadata={"canon_edit": json.dumps(header)})
        self._last = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.every_seconds

    def discard(self) -> None:
        """The edit is saved: its checkpoint goes (it is canon-edit's own file)."""
        self.path.unlink(missing_ok=True)


# what an edit command hands a bake: the edit's checkpoint for a kind of edit (its default name)
Checkpoints = Callable[[str], EditCheckpoint]


class StopRequest:
    """Set by the first Ctrl-C while a checkpointed loop runs; the loop stops at the end of its step."""

    requested = False


@contextmanager
def stop_at_step_end() -> Iterator[StopRequest]:
    """Ctrl-C asks the loop to stop after its step (a checkpoint then keeps every finished step); a
    second Ctrl-C stops at once. Off the main thread (a server, a Ray worker) Ctrl-C is left as it is."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handle(signum: int, frame: Any) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True
        print("\ncanon-edit: stopping after this step (Ctrl-C again stops at once)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def per_step_seed(seed: int, step: int, stream: int = 0) -> int:
    """The seed of step `step`'s draws from `stream` (streams do not share numbers): a resumed loop
    draws what the uninterrupted one would have."""
    return (seed * 1_000_003 + step) * 4 + stream


class CheckpointedLoop:
    """A loop of `steps` optimiser steps that resumes from `checkpoint` (None: plain, from step 0).

    Use: `with loop.running(): for step in range(loop.start, steps): ...; loop.step_done(step)`.
    """

    def __init__(
        self,
        checkpoint: EditCheckpoint | None,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        steps: int,
        state: dict[str, Any] | None = None,
        tensors: dict[str, Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        """`state` (JSON values) and `tensors`, what the loop keeps besides its parameters, are saved
        with them and restored into these same dicts; so is the state of `generator`, a loop's one
        stream of draws (where its draws are not seeded per step)."""
        self.checkpoint, self.optimizer, self.device, self.steps = checkpoint, optimizer, device, steps
        self.state = state if state is not None else {}
        self.tensors = tensors if tensors is not None else {}
        self.generator = generator
        if generator is not None:
            self.tensors[GENERATOR] = generator.get_state()
        self.start = 0
        if checkpoint is not None:
            self.start = checkpoint.restore(optimizer, device, steps, self.state, self.tensors)
        if generator is not None:
            generator.set_state(self.tensors[GENERATOR].cpu())
        self._stop = StopRequest()

    @contextmanager
    def running(self) -> Iterator[None]:
        if self.checkpoint is None:
            yield
            return
        with stop_at_step_end() as self._stop:
            yield

    def step_done(self, step: int) -> None:
        """After step `step`: save when due, and save and stop when Ctrl-C asked."""
        cp = self.checkpoint
        if cp is None:
            return
        done = step + 1
        if self._stop.requested or (cp.due() and done < self.steps):
            if self.generator is not None:
                self.tensors[GENERATOR] = self.generator.get_state()
            cp.save(done, self.steps, self.optimizer, self.device, self.state, self.tensors)
        if self._stop.requested:
            raise EditStopped(f"edit '{cp.name}' stopped at step {done} of {self.steps}", cp.name)
