"""`fit-many`: fit several clips, each into RUNS/<clip name>, as one task per clip on an executor.

Everything the user can get wrong (method, options, device, clips, their names, the run folders) is
checked for every clip before the first fit starts, as `fit` does, so bad input costs nothing. A
task gets only plain, picklable arguments and reads and writes its run by path, so it can run on any
node of a Ray cluster that sees the same filesystem. A retried task (its worker was killed) resumes
what its first attempt wrote instead of starting over.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .executors import Task, check_executor, run_tasks
from .fitting import ClipOptions, check_fit_options, fit_video, resume_fit
from .representation import get_representation
from .run import RunFolder


@dataclass(frozen=True)
class FitManyResult:
    """What `fit-many` leaves: every clip's run folder, and which of them it found done."""

    runs: dict[str, Path]  # clip name -> its run folder, in the order the clips were given
    skipped: tuple[str, ...]  # names of runs that were already done (resume)


def _stamp(out: Path) -> list[int] | None:
    """Identifies run.json's current version (it is replaced atomically: a new inode on every write)."""
    try:
        st = (out / "run.json").stat()
    except OSError:
        return None
    return [st.st_ino, st.st_mtime_ns]


def fit_one(
    *,
    out: str,
    clip: dict[str, Any],
    method: str,
    preset: str | None,
    overrides: dict[str, Any] | None,
    device: str,
    resume: bool,
    stamp: list[int] | None,
    show_progress: bool,
) -> str:
    """Fit one clip of `fit-many` into `out` (a module-level function of plain arguments: a Ray task).

    `stamp` is run.json's version when the job was planned: a run written since then is this job's
    own (an earlier attempt of this task), so it is continued like a run the user asked to resume.
    """
    options = ClipOptions(**clip)
    run = RunFolder(out)
    if (resume or _stamp(run.path) != stamp) and run.run_json.is_file():
        if run.info().get("status") == "done":
            return out  # an earlier attempt finished before its worker died
        if run.checkpoint_paths():
            common = {"overrides": overrides, "device": device, "show_progress": show_progress}
            return str(resume_fit(out, method=method, preset=preset, source=options, **common).path)
    # the user's consent to replace a run already there was checked when the job was planned
    fitted = fit_video(
        options, out, method, force=True, preset=preset, overrides=overrides, device=device,
        show_progress=show_progress,
    )  # fmt: skip
    return str(fitted.path)


def _run_name(clip: Path) -> str:
    return clip.resolve().name if clip.is_dir() else clip.stem


def fit_many(
    clips: Sequence[str | Path],
    runs_dir: str | Path,
    *,
    method: str = "codef",
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    max_frames: int | None = None,
    stride: int = 1,
    size: int | None = None,
    executor: str = "local",
    address: str | None = None,
    threads: int | None = None,
    resume: bool = False,
    force: bool = False,
    device: str = "auto",
    show_progress: bool = True,
) -> FitManyResult:
    """Fit every clip into `runs_dir`/<its name>; with `resume`, done runs are skipped, runs with
    checkpoints continued and the others started afresh. `executor`, `address` and `threads` are
    those of `run_tasks`. Raises `TasksFailed` (finished runs kept) when some fits failed."""
    if not clips:
        raise UserError("give at least one clip to fit")
    check_executor(executor, address, threads)
    cls = get_representation(method)
    names: dict[str, str] = {}
    for clip in map(Path, clips):
        if not clip.exists():
            raise UserError(f"input: {clip} does not exist; check the path")
        name = _run_name(clip)
        if name in names:
            raise UserError(
                f"{names[name]} and {clip} would both be fitted into {Path(runs_dir) / name}; "
                "rename one (each run is named after its clip) or fit them in separate runs folders"
            )
        names[name] = str(clip)
    tasks, skipped = [], []
    for name, clip in names.items():
        out = Path(runs_dir) / name
        info = RunFolder(out).info() if (out / "run.json").is_file() else None
        if resume and info is not None and info.get("status") == "done":
            print(f"canon-edit: {name}: skipped, {out} is done", file=sys.stderr)
            skipped.append(name)
            continue
        check_fit_options(cls, out, preset, overrides, device, force=force or resume)
        options = ClipOptions(source=clip, max_frames=max_frames, stride=stride, size=size)
        kwargs = {
            "out": str(out), "clip": asdict(options), "method": method, "preset": preset,
            "overrides": overrides, "device": device, "resume": resume, "stamp": _stamp(out),
            "show_progress": show_progress and executor == "local",  # workers' bars would interleave
        }  # fmt: skip
        tasks.append(Task(name, fit_one, kwargs))
    results = run_tasks(
        tasks, executor=executor, address=address, threads=threads, show_progress=show_progress
    )
    runs = {name: Path(results.get(name, Path(runs_dir) / name)) for name in names}
    return FitManyResult(runs=runs, skipped=tuple(skipped))
