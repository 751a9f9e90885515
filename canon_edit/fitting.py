"""`fit`: clip → prepare (+ flow) → representation → fitting loop → bake → renders and metrics.

Everything the user can get wrong (paths, masks, options) is validated before the run folder is
created; what only the representation's `prepare` hook can check (a body model's files, a tracking
file) removes the fresh run folder when it fails, so bad input leaves nothing behind that looks
like a run.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_dir
from .config import load_config
from .errors import UserError
from .evaluate import Bake, evaluate_run
from .flow import load_or_compute_flow
from .run import RunFolder, versions
from .train import fit
from .video import Clip, read_clip, write_video


@dataclass
class ClipOptions:
    source: str
    masks: str | None = None
    max_frames: int | None = None
    stride: int = 1
    size: int | None = None

    def read(self) -> Clip:
        return read_clip(
            self.source, self.masks, max_frames=self.max_frames, stride=self.stride, size=self.size
        )


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{name}' requested but this torch has no CUDA; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}'; use auto, cpu or cuda[:N]") from None


def fit_clip(
    clip: Clip,
    out: str | Path,
    method: str = "codef",
    *,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    clip_options: ClipOptions | None = None,
    resume: bool = False,
    force: bool = False,
    device: str = "auto",
    show_progress: bool = True,
) -> RunFolder:
    """Fit `clip` into run folder `out` and bake, render and evaluate it."""
    from representations.base import get_representation

    cls = get_representation(method)
    cfg = load_config(cls.config_class, preset or method, overrides)
    dev = pick_device(device)
    run = RunFolder.create(out, resume=resume, force=force)
    if not resume:
        run.write_info(
            method=method,
            preset=preset or method,
            config=asdict(cfg),
            status="fitting",
            clip=asdict(clip_options) if clip_options else {"source": clip.source},
            frames=clip.T,
            height=clip.H,
            width=clip.W,
            fps=clip.fps,
            versions=versions(),
            device=str(dev),
        )
    t0 = time.monotonic()
    try:
        clip, extra_kwargs = cls.prepare(clip, cfg, run, show_progress)
    except UserError:
        if not resume:
            shutil.rmtree(run.path, ignore_errors=True)
        raise
    flow = (
        load_or_compute_flow(run.flow, clip.frames, show_progress=show_progress) if cls.needs_flow else None
    )
    torch.manual_seed(cfg.train.seed)  # same seed, same fit
    model = cls(clip, flow, cfg, **extra_kwargs).to(dev)
    steps = fit(model, run, cfg.train, resume=resume, show_progress=show_progress)
    cv = model.bake()
    finish_run(run, cv, clip, model.extra_metrics(clip, cv))
    run.write_info(status="done", steps=steps, fit_seconds=round(time.monotonic() - t0, 1))
    return run


def finish_run(run: RunFolder, cv: Bake, clip: Clip, extra: dict[str, Any] | None = None) -> None:
    """Save the bake, the reconstruction and side-by-side videos, and the metrics."""
    with atomic_dir(run.canonical) as tmp:
        cv.save(tmp)
    recon = cv.render().clamp(0, 1)
    write_video(run.renders / "reconstruction.mp4", recon, clip.fps)
    write_video(run.renders / "compare.mp4", torch.cat([clip.frames, recon], dim=3), clip.fps)
    evaluate_run(run, clip=clip, cv=cv, extra=extra, video=recon)


def fit_video(options: ClipOptions, out: str | Path, method: str = "codef", **kwargs: Any) -> RunFolder:
    """Read the clip described by `options` (or, on resume, by the run) and fit it."""
    if kwargs.get("resume") and (Path(out) / "run.json").is_file():
        info = RunFolder(Path(out)).info()
        options = ClipOptions(**info["clip"])
        method = info["method"]
        kwargs["preset"] = info.get("preset")
        kwargs["overrides"] = info["config"]
    clip = options.read()
    return fit_clip(clip, out, method, clip_options=options, **kwargs)


def load_clip(run: RunFolder) -> Clip:
    """Re-read the source clip exactly as the run read it."""
    return ClipOptions(**run.info()["clip"]).read()
