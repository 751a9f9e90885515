"""`fit`: clip → prepare (+ flow) → representation → fitting loop → bake → renders and metrics.

Everything the user can get wrong (method, options, device, output folder, the clip) is validated
before anything is written. The run stores the clip it fits (RunFolder.save_clip), so `--resume`,
`eval`, keyframe edits and `--compare` never depend on the source staying where it was. A resumed
fit continues the stored run: it accepts changes that are safe mid-fit (the `train.*` options but
the seed, and learning rates), records them in run.json, and refuses every other change.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_dir
from .config import deep_merge, from_dict, load_config, to_dict
from .device import pick_device
from .edit.store import edits_made_before
from .errors import UserError
from .evaluate import evaluate_video, render_chunks
from .flow import load_or_compute_flow
from .lock import run_lock
from .memory import check_fit_memory, check_read_memory
from .outputs import MARKER, changed_since_written, claim_folder, write_manifest
from .representation import Bake, Representation, get_representation
from .run import RUN_ENTRIES, RunFolder, StoredClip, versions
from .segments import SEGMENTS_DIR
from .train import optimise, plan_line, with_quality
from .video import FPS_FILE, Clip, VideoPair, clip_shape, mask_channels, read_clip, stated_fps


@dataclass
class ClipOptions:
    """Where a clip comes from and how it is read (the `fit` options that shape the input)."""

    source: str
    masks: str | None = None
    max_frames: int | None = None
    stride: int = 1
    size: int | None = None
    fps: float | None = None

    def read(self, as_uint8: bool = False) -> Clip:
        """The clip, refused in one line when it has one frame: flow, warping error and every method
        need two (a one-frame fit failed only in its evaluation, after the run folder was made)."""
        clip = read_clip(
            self.source,
            self.masks,
            max_frames=self.max_frames,
            stride=self.stride,
            size=self.size,
            fps=self.fps,
            as_uint8=as_uint8,
        )
        if clip.T < 2:
            if self.max_frames is not None and self.max_frames < 2:
                picked, fix = " with --max-frames 1", "a larger --max-frames"
            elif self.stride > 1:
                picked, fix = f" with --stride {self.stride}", "a smaller --stride"
            else:
                picked, fix = "", "a clip of two frames or more"
            raise UserError(f"{self.source} gives 1 frame{picked}; a video edit needs at least 2: give {fix}")
        return clip

    def check_memory(self, cls: type[Representation], device: str, segment: int | None = None) -> None:
        """Refuse, before reading, a CPU fit of this clip (or of its segments of `segment` frames)
        that would need more memory than the machine has available."""
        dev = pick_device(device)
        if dev.type != "cpu":
            return  # the fields and their optimiser live on the GPU: the figures are the CPU's
        cost = cls.memory_cost(dev)  # None (not measured) checks only the read of a segmented clip
        shape = clip_shape(self.source, max_frames=self.max_frames, stride=self.stride, size=self.size)
        labels = mask_channels(self.source, self.masks, max_frames=self.max_frames, stride=self.stride)
        if shape is None or segment is None:
            check_fit_memory(cls.name, cost, shape, labels, whole=not cls.segmentable())
            return
        check_read_memory(shape, labels)  # the whole clip is read once, to be stored for its segments
        part = (min(shape[0], segment), *shape[1:])
        check_fit_memory(cls.name, cost, part, labels, segments=True)

    def record(self, run: Path) -> dict[str, Any]:
        """For run.json: absolute paths, and the source relative to the run (for a moved pair)."""
        out = asdict(self)
        for key in ("source", "masks"):
            if out[key]:
                out[key] = str(Path(out[key]).resolve())
        out["source_relative_to_run"] = os.path.relpath(out["source"], run.resolve())
        return out


def owned_entries(cls: type[Representation], out: str | Path) -> frozenset[str]:
    """What `--force` may remove at `out`: the core's entries, this method's, and those of the method
    of the run being replaced (from its run.json; when that is unreadable, none of its own)."""
    names = set(RUN_ENTRIES | cls.run_files)
    try:
        replaced = json.loads((Path(out) / "run.json").read_text()).get("method")
        names |= get_representation(str(replaced)).run_files
    except (OSError, ValueError, AttributeError, UserError):
        pass  # no run there, or one whose files are not known: they count as the user's
    return frozenset(names)


def config_of(cls: type[Representation], preset: str | None, overrides: dict[str, Any] | None) -> Any:
    """A new fit's config: preset, then overrides, then the quality preset's steps and time budget.

    Steps or a time budget given as overrides replace the preset's quality (an explicit one stays).
    """
    preset = preset or (cls.name if cls.presets else None)
    return _with_quality(
        load_config(cls.config_class, preset, overrides, package=cls.presets or None), overrides
    )


def _with_quality(cfg: Any, overrides: dict[str, Any] | None) -> Any:
    """`cfg` with the steps and time budget of its quality, unless the overrides give either alone."""
    asked = (overrides or {}).get("train") or {}
    if ("steps" in asked or "time_budget" in asked) and "quality" not in asked:
        cfg = replace(cfg, train=replace(cfg.train, quality=""))
    return replace(cfg, train=with_quality(cfg.train))


def fit_clip(
    clip: Clip,
    out: str | Path,
    method: str = "codef",
    *,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    clip_options: ClipOptions | None = None,
    force: bool = False,
    device: str = "auto",
    show_progress: bool = True,
) -> RunFolder:
    """Fit `clip` into a new run folder `out`, then bake, render and evaluate it."""
    cls = get_representation(method)
    cfg = config_of(cls, preset, overrides)
    dev = pick_device(device)
    owned = owned_entries(cls, out)
    created = not Path(out).exists()
    run = RunFolder.create(out, force=force, owned=owned)
    try:
        with run_lock(run.path, "fit"):
            run.save_clip(clip)
            run.write_info(**start_record(run, method, preset, cfg, clip, clip_options, str(dev)))
            try:
                return _fit(run, cls, cfg, clip, dev, resume=False, show_progress=show_progress)
            except UserError:
                if run.info().get("status") == "fitting" and not run.checkpoint_paths():
                    _remove_entries(run, owned)  # failed before any work worth keeping
                raise
    except UserError:
        if created:
            with contextlib.suppress(OSError):
                run.path.rmdir()  # the folder this fit made, if nothing is left in it
        raise


def start_record(
    run: RunFolder,
    method: str,
    preset: str | None,
    cfg: Any,
    clip: Clip,
    clip_options: ClipOptions | None,
    device: str,
) -> dict[str, Any]:
    """run.json of a fit that starts: what it fits, how, with what versions."""
    cls = get_representation(method)
    return {
        "method": method,
        "preset": preset or (method if cls.presets else None),
        "config": to_dict(cfg),
        "status": "fitting",
        "clip": clip_options.record(run.path) if clip_options else {"source": clip.source or "in memory"},
        "frames": clip.T,
        "height": clip.H,
        "width": clip.W,
        "fps": clip.fps,
        "versions": versions(),
        "device": device,
    }


def _remove_entries(run: RunFolder, owned: frozenset[str]) -> None:
    """Remove what this fit wrote (it claimed the folder, so every owned entry in it is its own)."""
    for name in (*owned, MARKER):
        target = run.path / name
        if target.is_dir() and not target.is_symlink():  # a link goes, never what it points to
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)


def note_stale_edits(run: RunFolder) -> RunFolder:
    """`run`, after one line naming the edits a resumed fit's further steps left on the old canonical."""
    stale = edits_made_before(run)
    if stale:
        print(
            f"canon-edit: note: the canonical changed under {len(stale)} earlier edit(s) "
            f"({', '.join(stale)}): they keep their textures and videos, which may no longer line up "
            "with it; make them again",
            file=sys.stderr,
        )
    return run


def _fit(
    run: RunFolder, cls: type[Representation], cfg: Any, clip: Clip, dev: torch.device, *,
    resume: bool, show_progress: bool,
) -> RunFolder:  # fmt: skip
    t0 = time.monotonic()
    clip, extra_kwargs = cls.prepare(clip, cfg, run, show_progress)
    flow = (
        load_or_compute_flow(run.flow, clip.frames, show_progress=show_progress) if cls.needs_flow else None
    )
    if show_progress:
        cost = cls.memory_cost(dev)
        labels = 0 if clip.masks is None else clip.masks.shape[1]
        peak = None if cost is None else cost.peak(clip.T, clip.H, clip.W, labels)
        print(plan_line(cfg.train, peak), file=sys.stderr)
    torch.manual_seed(cfg.train.seed)  # same seed, same fit
    model = cls(clip, flow, cfg, **extra_kwargs).to(dev)
    del flow  # the model keeps what it needs of it; the rest is 18 bytes a pixel of the clip, unused
    steps = optimise(model, run, cfg.train, resume=resume, show_progress=show_progress)
    bake = model.bake()
    finish_run(run, bake, clip, model.extra_metrics(clip, bake))
    run.write_info(status="done", steps=steps, fit_seconds=round(time.monotonic() - t0, 1))
    return run


def finish_run(
    run: RunFolder, bake: Bake, clip: Clip | StoredClip, extra: dict[str, Any] | None = None
) -> None:
    """Save the bake, the reconstruction and side-by-side videos, and the metrics.

    One render pass, a chunk of frames at a time, feeds both videos and the metrics.
    """
    check_canonical_untouched(run)
    with atomic_dir(run.canonical) as tmp:
        bake.save(tmp)
        write_manifest(tmp)
    with VideoPair(run.renders / "reconstruction.mp4", run.renders / "compare.mp4", clip.fps) as videos:
        evaluate_video(run, clip, render_chunks(bake.render, bake.T), extra=extra, each=videos.write)


def check_canonical_untouched(run: RunFolder) -> None:
    """A re-bake rewrites RUN/canonical (and each segment's) as a whole: refuse while it holds what
    the user changed there."""
    folders = [run.canonical, *sorted((run.path / SEGMENTS_DIR).glob("*/canonical"))]
    changed = [f"{folder / name}" for folder in folders for name in changed_since_written(folder)]
    if changed:
        shown = ", ".join(changed[:3]) + (", ..." if len(changed) > 3 else "")
        raise UserError(
            f"files in the run's canonical folder were changed or added since the fit wrote them "
            f"({shown}), and the fit rewrites that folder: move them out of the run (edit from there, "
            "e.g. --canonical my_layer_0.png) and run it again"
        )


def fps_origin(options: ClipOptions) -> str:
    """Where the clip's frame rate came from, for the line `fit` prints."""
    source = Path(options.source)
    if options.fps:
        return "as given"
    if source.is_file():
        return "the video's"
    if stated_fps(source) is not None:
        return f"from {FPS_FILE}"
    return f"the frame-folder default, as no {FPS_FILE} states one"


def fit_video(
    options: ClipOptions, out: str | Path, method: str = "codef", *, force: bool = False, **kwargs: Any
) -> RunFolder:
    """Read the clip described by `options` and fit it into a new run folder `out`."""
    cls = get_representation(method)
    check_fit_options(
        cls, out, kwargs.get("preset"), kwargs.get("overrides"), kwargs.get("device", "auto"), force
    )
    options.check_memory(cls, kwargs.get("device", "auto"))
    clip = options.read()
    return fit_clip(clip, out, method, clip_options=options, force=force, **kwargs)


def check_fit_options(
    cls: type[Representation],
    out: str | Path,
    preset: str | None,
    overrides: dict[str, Any] | None,
    device: str,
    force: bool,
) -> None:
    """Bad options, device or output folder fail here, before any reading or writing."""
    config_of(cls, preset, overrides)
    pick_device(device)
    claim_folder(out, "run", owned_entries(cls, out), force=force, legacy="run.json", dry_run=True)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def safe_to_change(key: str) -> bool:
    """Options a resumed fit may change: the loop's own (`train.*`) but the seed, and learning rates."""
    last = key.rsplit(".", 1)[-1]
    return (key.startswith("train.") and key != "train.seed") or last.startswith("lr")


def _same_source(options: ClipOptions, recorded: dict[str, Any], run: Path) -> str | None:
    """The first clip option that differs from what the run recorded, or None.

    The source matches at its recorded absolute path or, for a run moved along with its clip, at
    its recorded path relative to the run.
    """
    mine = options.record(run)
    for key in ("source", "masks", "max_frames", "stride", "size", "fps"):
        if mine[key] is None:
            continue  # not given: the run's own
        theirs = recorded.get(key, 1 if key == "stride" else None)
        accepted = {theirs}
        if key == "source" and recorded.get("source_relative_to_run"):
            accepted.add(str((run / recorded["source_relative_to_run"]).resolve()))
        if mine[key] not in accepted:
            return key
    return None


def resume_fit(
    out: str | Path,
    *,
    method: str | None = None,
    preset: str | None = None,
    source: ClipOptions | None = None,
    overrides: dict[str, Any] | None = None,
    device: str = "auto",
    show_progress: bool = True,
    executor: str = "local",
    address: str | None = None,
    threads: int | None = None,
) -> RunFolder:
    """Continue the run in `out` from its newest readable checkpoint (or re-finish a done run).

    A segmented run continues segment by segment on `executor`: finished segments are skipped.
    """
    if not (Path(out) / "run.json").is_file():
        raise UserError(f"{out} holds no run to resume; start a new fit instead")
    run = RunFolder.open(out, need_done=False)
    info = run.info()
    stored = str(info.get("method"))
    if method and method != stored:
        raise UserError(f"{run.path} is a '{stored}' run; a resumed fit keeps its method")
    if preset and preset != info.get("preset"):
        raise UserError(f"{run.path} was fitted with preset '{info.get('preset')}'; a resumed fit keeps it")
    if source is not None and isinstance(info.get("clip"), dict) and "source" in info["clip"]:
        differs = _same_source(source, info["clip"], run.path)
        if differs:
            raise UserError(
                f"the clip's {differs} differs from the run's ({info['clip'].get(differs)}); "
                "a resumed fit keeps its clip: fit the new one into a new folder"
            )
    check_canonical_untouched(run)  # before any training: the re-bake at the end would fail on it
    if info.get("segments"):
        from .segmented_fit import fit_segments

        with run_lock(run.path, "fit --resume"):
            run.write_info(status="fitting")
            return note_stale_edits(
                fit_segments(run, device, executor, address, threads, show_progress, overrides)
            )
    cls = get_representation(stored)
    config = dict(info.get("config") or {})
    for key in getattr(cls.config_class, "LEGACY_KEYS", ()):
        if config.pop(key, None) is not None:
            print(
                f"canon-edit: note: the run's option '{key}' is no longer read from run folders",
                file=sys.stderr,
            )
    cfg = _with_quality(from_dict(cls.config_class, deep_merge(config, overrides or {})), overrides)
    before = _flatten(config)
    after = _flatten(json.loads(json.dumps(to_dict(cfg))))  # as run.json holds it: tuples are lists
    asked = _flatten(overrides or {})
    # a key a run from an older version lacks takes its default silently; only what differs counts
    changes = {k: after[k] for k in after if (k in before or k in asked) and before.get(k) != after[k]}
    unsafe = [k for k in changes if not safe_to_change(k)]
    if unsafe:
        raise UserError(
            f"option '{unsafe[0]}' cannot change in a resumed fit (only train.* and learning rates can); "
            "fit into a new folder to change it"
        )
    dev = pick_device(device)
    with run_lock(run.path, "fit --resume"):
        clip = run.clip()
        history = list(info.get("resumed") or [])
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        history.append({"at": stamp, "changes": changes})
        run.write_info(config=to_dict(cfg), status="fitting", resumed=history, device=str(dev))
        return note_stale_edits(_fit(run, cls, cfg, clip, dev, resume=True, show_progress=show_progress))
