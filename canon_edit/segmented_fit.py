"""`fit --segment-frames N --overlap K`: a long clip fitted as segments, each one executor task.

The top-level run stores the whole clip and the plan; each segment is fitted into its own run
folder under RUN/segments/ by `fit_segment`, a task that reads its frames from the top-level run by
path (so a Ray worker on another node needs only the shared filesystem). A segment that is done is
skipped and one with checkpoints is resumed, which makes `--resume` and a retried task the same
thing. When every segment is done the run is finished like any other: the cross-faded
reconstruction, the comparison video and the metrics of the whole clip.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .device import pick_device
from .errors import UserError
from .evaluate import clip_flow
from .executors import Task, check_executor, run_tasks
from .fitting import (
    ClipOptions,
    check_fit_options,
    config_of,
    finish_run,
    fit_clip,
    owned_entries,
    resume_fit,
    start_record,
)
from .lock import run_lock
from .memory import check_fit_memory
from .representation import get_representation, load_bake
from .run import RunFolder, StoredClip
from .segments import SEGMENTS_DIR, Segment, SegmentedVideo, plan_by_motion, plan_segments

AUTO_STRETCH = 1.0  # `--segments auto`: one frame size of camera travel per segment
AUTO_LONGEST = 200  # ... and at most this many frames (each frame's uv is held per segment)


def default_overlap(length: int) -> int:
    """A tenth of the segment, at least two frames: enough to cross-fade and to carry an edit."""
    return max(2, length // 10)


def fit_segmented_video(
    options: ClipOptions,
    out: str | Path,
    method: str = "codef",
    *,
    length: int | None = None,
    overlap: int | None = None,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    device: str = "auto",
    executor: str = "local",
    address: str | None = None,
    threads: int | None = None,
    show_progress: bool = True,
) -> RunFolder:
    """Fit the clip `options` describes as segments of `length` frames sharing `overlap` frames, or
    (`length` None) as segments cut by camera travel (`segments.plan_by_motion`)."""
    cls = get_representation(method)
    if not cls.segmentable():
        raise UserError(
            f"--segment-frames splits 2D fits (codef, atlas); method '{method}' is fitted whole: drop it"
        )
    longest = AUTO_LONGEST if length is None else length  # 0 is a length (refused), not "auto"
    if overlap is None:
        overlap = default_overlap(AUTO_LONGEST // 2 if length is None else length)
    plan_segments(longest + 1, longest, overlap)  # bad values fail here, before any file is written
    check_executor(executor, address, threads)
    check_fit_options(cls, out, preset, overrides, device, force)
    if executor == "local":  # a Ray task fits on whichever worker has room
        options.check_memory(cls, device, segment=longest)
    clip = options.read(as_uint8=True)  # stored, not fitted: float frames would take four times as much
    cfg = config_of(cls, preset, overrides)
    run = RunFolder.create(out, force=force, owned=owned_entries(cls, out))
    with run_lock(run.path, "fit"):
        run.save_clip(clip)
        record = start_record(run, method, preset, cfg, clip, options, device)
        del clip  # planned and fitted from the stored clip, a chunk or a segment at a time
        stored = run.stored_clip()
        if length is None:
            flow, _ = clip_flow(run, stored, show_progress)
            masks = stored.read_masks if stored.has_masks else None
            segments = plan_by_motion(flow, masks, AUTO_STRETCH, overlap, AUTO_LONGEST)
            del flow
        else:
            segments = plan_segments(stored.T, length, overlap)
        run.write_info(**record, segments=[asdict(seg) for seg in segments], overlap=overlap)
        return fit_segments(run, device, executor, address, threads, show_progress)


def fit_segments(
    run: RunFolder,
    device: str,
    executor: str,
    address: str | None,
    threads: int | None,
    show_progress: bool,
    overrides: dict[str, Any] | None = None,
) -> RunFolder:
    """Fit (or finish fitting) every segment of `run`, then bake, render and evaluate the whole."""
    t0 = time.monotonic()
    segments = [Segment(**s) for s in run.info()["segments"]]
    local = executor == "local"
    tasks = [
        Task(
            seg.name,
            fit_segment,
            {
                "run": str(run.path.resolve()),
                "index": k,
                "device": device,
                "overrides": overrides,
                "show_progress": show_progress and local,
            },
        )
        for k, seg in enumerate(segments)
    ]
    results = run_tasks(
        tasks, executor=executor, address=address, threads=threads, show_progress=show_progress
    )
    subs = [RunFolder(run.path / SEGMENTS_DIR / seg.name) for seg in segments]
    bakes = [load_bake(sub) for sub in subs]
    clip = run.stored_clip()  # read a chunk at a time as the whole is evaluated
    finish_run(run, SegmentedVideo(segments, bakes, clip.fps), clip)
    run.write_info(
        status="done",
        steps=sum(int(sub.info().get("steps") or 0) for sub in subs),
        fit_seconds=round(time.monotonic() - t0, 1),
        segment_seconds={name: result["fit_seconds"] for name, result in results.items()},
    )
    return run


def fit_segment(
    run: str, index: int, device: str, overrides: dict[str, Any] | None, show_progress: bool
) -> dict[str, Any]:
    """Fit segment `index` of the run at path `run` (an executor task): skipped when done, resumed
    from its checkpoints when it has some, else started afresh."""
    top = RunFolder(Path(run))
    info = top.info()
    seg = Segment(**info["segments"][index])
    sub = RunFolder(top.path / SEGMENTS_DIR / seg.name)
    status = sub.info().get("status") if sub.run_json.is_file() else None
    if status != "done":
        if sub.checkpoint_paths():
            resume_fit(sub.path, overrides=overrides, device=device, show_progress=show_progress)
        else:
            stored = top.stored_clip()
            if not isinstance(stored, StoredClip):
                raise UserError(f"{top.clip_file} is missing; fit the clip again into a new folder")
            # on the machine that runs the task (a Ray worker), before its segment is fitted
            cost = get_representation(str(info["method"])).memory_cost(pick_device(device))
            shape = (seg.frames, stored.H, stored.W)
            check_fit_memory(str(info["method"]), cost, shape, stored.labels, segments=True)
            fit_clip(
                stored.part(seg.start, seg.end),
                sub.path,
                str(info["method"]),
                preset=info.get("preset"),
                overrides=info["config"],
                force=True,
                device=device,
                show_progress=show_progress,
            )
    done = sub.info()
    return {"segment": seg.name, "skipped": status == "done", "fit_seconds": done.get("fit_seconds")}
