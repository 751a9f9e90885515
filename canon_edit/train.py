"""One fitting loop for every representation: LR schedule, progress bar with ETA and live PSNR,
periodic checkpoints (steps and wall time), Ctrl-C checkpoint, NaN guard, time budget, resume.

Batches are drawn from a generator seeded by (seed, step), so a resumed fit takes exactly the
steps an uninterrupted one would have taken.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .config import QUALITY_SECONDS
from .errors import Interrupted, TrainingDiverged, UserError
from .run import RunFolder


@dataclass
class TrainConfig:
    steps: int = 3000
    checkpoint_every: int = 500
    checkpoint_seconds: float = 120.0
    time_budget: float = 0.0  # seconds of fitting; 0 = run all steps
    quality: str = ""  # draft | default | best (QUALITY_SECONDS) in place of steps and time_budget
    # this method's steps per second on the reference CPU: a quality's step cap, so a device that
    # runs faster (a GPU) takes the same steps in less time rather than more steps
    reference_rate: float = 0.0
    seed: int = 0
    warmup_steps: int = 50
    final_lr_fraction: float = 0.1  # cosine decay from the group's lr to this fraction of it

    def validate(self, prefix: str = "train.") -> None:
        """Refuse values the loop cannot honour, before anything runs."""
        checks = [
            ("steps", self.steps >= 1, ">= 1"),
            ("checkpoint_every", self.checkpoint_every >= 1, ">= 1"),
            ("checkpoint_seconds", self.checkpoint_seconds > 0, "> 0"),
            ("time_budget", self.time_budget >= 0, ">= 0 (0 = no budget)"),
            ("warmup_steps", self.warmup_steps >= 0, ">= 0"),
            ("final_lr_fraction", 0 <= self.final_lr_fraction <= 1, "between 0 and 1"),
            ("reference_rate", self.reference_rate >= 0, ">= 0"),
        ]
        if self.quality and self.quality not in QUALITY_SECONDS:
            raise UserError(
                f"option {prefix}quality must be one of {', '.join(QUALITY_SECONDS)} (or empty), "
                f"got {self.quality!r}"
            )
        for name, ok, rule in checks:
            if not ok or not math.isfinite(float(getattr(self, name))):
                raise UserError(f"option {prefix}{name} must be {rule}, got {getattr(self, name)}")


def with_quality(cfg: TrainConfig) -> TrainConfig:
    """The steps and time budget `cfg.quality` stands for; `cfg` itself without a quality."""
    if not cfg.quality:
        return cfg
    seconds = QUALITY_SECONDS[cfg.quality]
    steps = math.ceil(cfg.reference_rate * seconds) if cfg.reference_rate > 0 else cfg.steps
    return replace(cfg, steps=steps, time_budget=seconds)


def plan_line(cfg: TrainConfig, peak_bytes: float | None = None) -> str:
    """What a fit will spend, said before it starts: time and steps, and memory where it is known."""
    spend = (
        f"up to {cfg.time_budget / 60:g} min and {cfg.steps} steps (fewer on a busy or slower machine)"
        if cfg.time_budget
        else f"{cfg.steps} steps"
    )
    named = f"quality '{cfg.quality}': " if cfg.quality else ""
    memory = f"; about {peak_bytes / 1e9:.1f} GB of memory at its peak" if peak_bytes else ""
    return f"{named}fitting for {spend}{memory}"


class Trainable(Protocol):
    """What the loop needs from a representation (see canon_edit.representation.Representation)."""

    def param_groups(self) -> list[dict[str, Any]]: ...
    def sample(self, step: int, generator: torch.Generator) -> dict[str, Tensor]: ...
    def losses(self, batch: dict[str, Tensor], step: int) -> tuple[dict[str, Tensor], dict[str, float]]: ...


def lr_factor(step: int, cfg: TrainConfig, total: int) -> float:
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    progress = min(1.0, step / max(1, total))
    cosine = cfg.final_lr_fraction + (1 - cfg.final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * progress))
    return warm * cosine


def make_optimizer(model: Trainable) -> torch.optim.Optimizer:
    """Adam, fused (one pass over each parameter per step) where the device has the fused kernel.

    The grid encodings hold millions of features that every step updates: on the CPU the per-op
    `foreach` Adam took about a seventh of an atlas step, the fused one a sixth of that time
    (bench/RESULTS.md); the values agree to float32 rounding.
    """
    groups = model.param_groups()
    for g in groups:
        g["initial_lr"] = g["lr"]
    params = [p for g in groups for p in g["params"]]
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    return torch.optim.Adam(groups, betas=(0.9, 0.99), eps=1e-15, fused=fused, foreach=not fused)


def _seconds(value: Any) -> float | None:
    """A recorded number of seconds, or None for anything else (a hand-edited or damaged record)."""
    ok = (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    )
    return float(value) if ok else None


def _spent(run: RunFolder, meta: dict[str, Any]) -> float:
    """Seconds of fitting before the checkpoint `meta`. One that predates `fit_seconds` counts a
    finished run's own record when it is the finished step (it spent its budget), else 0."""
    seconds = _seconds(meta.get("fit_seconds"))
    if seconds is not None:
        return seconds
    try:
        info = run.info()
    except UserError:
        return 0.0
    return (_seconds(info.get("fit_seconds")) or 0.0) if info.get("steps") == meta["step"] else 0.0


def optimise(
    model: Any, run: RunFolder, cfg: TrainConfig, *, resume: bool = False, show_progress: bool = True
) -> int:
    """Optimise `model` for cfg.steps (or until the time budget); returns the last step done.

    On resume the learning rates come from the model's (possibly changed) config, not from the
    checkpoint, so a resume with changed learning rates takes effect; unchanged, they are the same.
    The steps and the time budget are the fit's in all: checkpoints record the seconds spent, and a
    resumed fit spends what is left, planning its schedule at the rate the fit has run so far, so a
    kill does not restart the coarse-to-fine schedule and a finished fit is not fitted again.
    """
    optimizer = make_optimizer(model)
    start, spent, meta = 0, 0.0, None
    if resume:
        initial = [g["initial_lr"] for g in optimizer.param_groups]
        meta = run.load_checkpoint(model, optimizer)
        start, spent = (meta["step"], _spent(run, meta)) if meta else (0, 0.0)
        for g, lr in zip(optimizer.param_groups, initial, strict=True):
            g["initial_lr"] = lr
    left = cfg.time_budget - spent if cfg.time_budget else math.inf
    if start >= cfg.steps or left <= 0:
        if meta and _seconds(meta.get("fit_seconds")) is None:
            # taken from run.json, which this pass rewrites: keep it with the checkpoint
            run.annotate_checkpoint(start, fit_seconds=round(spent, 3))
        return start
    total = cfg.steps
    if cfg.time_budget and start and spent:
        total = min(cfg.steps, max(start + 1, start + int(start * left / spent)))
        if show_progress:
            print(
                f"resuming at step {start}: {spent:.0f} s of the {cfg.time_budget:g} s budget spent, "
                f"about {total} steps in all",
                file=sys.stderr,
            )
    if hasattr(model, "schedule_steps"):
        model.schedule_steps = total
    device = next(model.parameters()).device
    gen = torch.Generator(device="cpu")
    bar = tqdm(
        total=total,
        initial=start,
        desc="fit",
        unit="step",
        disable=not show_progress,
        dynamic_ncols=True,
        mininterval=0.5,
    )
    t0 = last_ckpt = time.monotonic()
    last_good = start
    mse_ema: float | None = None
    done = start

    def save(budget_reached: bool = False) -> None:
        """Checkpoint with the seconds spent; a fit its budget ended has spent all of it (the plan is
        re-estimated every 20 steps, so it may end a moment early), and --resume adds no step."""
        seconds = spent + time.monotonic() - t0
        seconds = max(seconds, cfg.time_budget) if budget_reached else seconds
        run.save_checkpoint(done, model, optimizer, {"fit_seconds": round(seconds, 3)})

    budget_reached = False
    try:
        for step in range(start, cfg.steps):
            if step >= total:
                # stderr, with the bar: stdout carries the figures the commands and benchmarks print
                bar.write(f"time budget of {cfg.time_budget:g}s reached at step {done}", file=sys.stderr)
                budget_reached = True
                break
            gen.manual_seed(cfg.seed * 1_000_003 + step)
            batch = {k: v.to(device) for k, v in model.sample(step, gen).items()}
            for g in optimizer.param_groups:
                g["lr"] = g["initial_lr"] * lr_factor(step, cfg, total)
            terms, stats = model.losses(batch, step)
            loss = sum(terms.values())
            if not torch.isfinite(loss):
                bad = ", ".join(k for k, v in terms.items() if not torch.isfinite(v))
                raise TrainingDiverged(
                    f"the loss became non-finite at step {step} ({bad}); the last good checkpoint "
                    f"(step {last_good}) is kept in {run.checkpoints}",
                    run.path,
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            mse = stats.get("mse")
            if mse is not None:
                mse_ema = mse if mse_ema is None else 0.9 * mse_ema + 0.1 * mse
                bar.set_postfix(psnr=f"{-10 * math.log10(max(mse_ema, 1e-10)):.2f}", refresh=False)
            done = step + 1
            bar.update(1)
            now = time.monotonic()
            if done % cfg.checkpoint_every == 0 or now - last_ckpt > cfg.checkpoint_seconds:
                save()
                last_good, last_ckpt = done, now
            ran = done - start
            if cfg.time_budget and ran % 20 == 0:
                # fit the LR schedule to the steps the budget allows, re-estimated often: a slow
                # start (warm-up, a busy machine) must not end a fit that later runs fast
                total = min(cfg.steps, start + int(ran * left / max(now - t0, 1e-6)))
                total = min(cfg.steps, max(total, done + 1)) if now - t0 < left else done
                bar.total = total
                if hasattr(model, "schedule_steps"):  # coarse-to-fine schedules follow the plan
                    model.schedule_steps = total
    except KeyboardInterrupt:
        save()
        raise Interrupted(
            f"interrupted at step {done}; checkpoint saved in {run.checkpoints}", run.path
        ) from None
    finally:
        bar.close()
    save(budget_reached)
    return done
