"""Executors: where the independent jobs of one command (the clips of `fit-many`, the segments of a
long clip) run, so the same command scales from one process to a cluster.

`local` runs them here, one after another. `ray` makes each one a Ray task: this process (the driver)
only schedules them and shows progress; each task runs in a worker process on some node, with one
GPU when the cluster has GPUs. Tasks read and write run folders by path, nothing else travels: on a
cluster every node must see the clips and the runs at the same path (a shared filesystem).

A task that fails is retried once (a worker killed mid-fit, a transient error), except on a
`UserError`: bad input fails the same way twice, so it is reported at once. A failure never stops
the other tasks; once all have run, `TasksFailed` names the failed ones and the finished ones are
kept. With `threads` set, every task computes with that many torch threads on either executor, so
their results are identical bit for bit.
"""

from __future__ import annotations

import os
import socket
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from .allocator import keep_freed_memory
from .errors import Interrupted, UserError
from .extras import require

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Task:
    """One job: `fn(**kwargs)`. For Ray, `fn` is a module-level function (pickled by reference) and
    `kwargs` and the result are picklable."""

    name: str  # unique; shown in progress and in failure reports
    fn: Callable[..., Any]
    kwargs: dict[str, Any]


class TasksFailed(UserError):
    """Some tasks failed (after their retry); `results` holds the finished ones' results."""

    def __init__(self, failures: dict[str, str], results: dict[str, Any]):
        total = len(failures) + len(results)
        named = ", ".join(f"{name} ({reason})" for name, reason in failures.items())
        self.problem = f"{len(failures)} of {total} tasks failed: {named}"
        n = len(results)
        self.kept = f"{n} finished task{'s are' if n > 1 else ' is'} kept" if n else "none finished"
        super().__init__(f"{self.problem}; {self.kept}: resume to run the failed ones again")
        self.failures, self.results = failures, results


def _reason(e: BaseException) -> str:
    """An exception in a few words, for a one-line report."""
    if isinstance(e, UserError):
        return str(e)
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:150]}" if lines else type(e).__name__


class _Report:
    """The overall bar (tasks, ETA), a line per finished or failed task, and the tally."""

    def __init__(self, tasks: Sequence[Task], show_progress: bool):
        self.order = [t.name for t in tasks]
        self.show = show_progress
        self.results: dict[str, Any] = {}
        self.failures: dict[str, str] = {}
        self.bar = tqdm(
            total=len(tasks), desc="tasks", unit="task", disable=not show_progress, dynamic_ncols=True
        )

    def __enter__(self) -> _Report:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def say(self, line: str) -> None:
        self.bar.write(line, file=sys.stderr)

    def finished(self, name: str, result: Any) -> None:
        self.results[name] = result
        if self.show:
            self.say(f"{name}: done")
        self.bar.update(1)

    def failed(self, name: str, reason: str, detail: str = "") -> None:
        """Failures are reported even without progress: they are what the user must act on."""
        self.failures[name] = reason
        self.say(f"{name}: failed ({reason})")
        if detail:
            self.say(detail.rstrip())
        self.bar.update(1)

    def outcome(self) -> dict[str, Any]:
        results = {name: self.results[name] for name in self.order if name in self.results}
        if self.failures:
            failures = {name: self.failures[name] for name in self.order if name in self.failures}
            raise TasksFailed(failures, results)
        return results


def _run(fn: Callable[..., Any], kwargs: dict[str, Any], threads: int | None) -> Any:
    """`fn(**kwargs)` with torch on `threads` threads (restored afterwards), so executors agree exactly."""
    if threads is None:
        return fn(**kwargs)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn(**kwargs)
    finally:
        torch.set_num_threads(before)


def _run_local(tasks: Sequence[Task], threads: int | None, report: _Report) -> None:
    for task in tasks:
        for attempt in (1, 2):
            try:
                result = _run(task.fn, task.kwargs, threads)
            except Interrupted:
                raise  # Ctrl-C: stop everything (the fit saved its checkpoint)
            except UserError as e:
                report.failed(task.name, str(e))
            except Exception as e:
                if attempt == 1:
                    report.say(f"{task.name}: {_reason(e)}; retrying once")
                    continue
                report.failed(task.name, _reason(e), traceback.format_exc())
            else:
                report.finished(task.name, result)
            break


def _remote_call(fn: Callable[..., Any], kwargs: dict[str, Any], threads: int | None) -> tuple[bool, Any]:
    """The body of a Ray task. A `UserError` comes back as a value, so Ray does not retry it.

    A worker is a process of Ray's, not the CLI's, so it keeps freed memory as the CLI does here.
    """
    keep_freed_memory()
    try:
        return True, _run(fn, kwargs, threads)
    except UserError as e:
        return False, str(e)


def _check_reachable(address: str | None) -> None:
    """A wrong HOST:PORT leaves Ray retrying for minutes; one quick connection says so at once."""
    host, colon, port = (address or "").rpartition(":")
    if not colon or "://" in host or not port.isdigit():
        return  # none, or one of Ray's own forms ("auto", "local", "ray://..."): Ray reports those
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise UserError(
            f"cannot reach the Ray cluster at {address} ({e.strerror or e}); start it with "
            "'ray start --head --port=6379' on the head node, or check the address"
        ) from None


@contextmanager
def _ray_session(address: str | None) -> Iterator[Any]:
    """The `ray` module, initialised: reused when it already is, else started (or connected) and shut
    down (or disconnected) afterwards."""
    ray = require("ray", "cluster", "--executor ray")
    if ray.is_initialized():
        yield ray
        return
    _check_reachable(address or os.environ.get("RAY_ADDRESS"))
    try:
        ray.init(address=address, include_dashboard=False)
    except (ConnectionError, ValueError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        where = f"the Ray cluster at {address}" if address else "Ray"
        raise UserError(
            f"cannot start or reach {where} ({first}); start the cluster with 'ray start --head "
            "--port=6379' and give its address as HOST:6379"
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _ray_resources(ray: Any, threads: int | None) -> dict[str, int]:
    """What each task asks for: `threads` CPUs (1 by default) and a GPU when the cluster has GPUs."""
    cpus = threads or 1
    most = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=0)
    if cpus > most:
        raise UserError(
            f"each task asks for {cpus} CPU threads but the largest Ray node has {most:g} CPUs; "
            f"use at most {most:g} threads"
        )
    return {"num_cpus": cpus, "num_gpus": 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0}


def _ray_failure(ray: Any, e: Exception) -> tuple[str, str]:
    """(reason, detail) of a failed Ray task: the task's own exception comes with its traceback."""
    if isinstance(e, ray.exceptions.RayTaskError):
        return _reason(e.cause), str(e)
    if isinstance(e, ray.exceptions.WorkerCrashedError):
        return "worker died", ""
    if isinstance(e, ray.exceptions.OutOfMemoryError):
        return "killed by Ray's memory monitor: out of memory", ""
    return _reason(e), ""


def _run_ray(
    ray: Any, tasks: Sequence[Task], resources: dict[str, int], threads: int | None, report: _Report
) -> None:
    remote = ray.remote(max_retries=1, retry_exceptions=True, **resources)(_remote_call)
    refs = {remote.options(name=t.name).remote(t.fn, t.kwargs, threads): t.name for t in tasks}
    pending = list(refs)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            name = refs[done[0]]
            try:
                ok, value = ray.get(done[0])
            except ray.exceptions.RayError as e:
                report.failed(name, *_ray_failure(ray, e))
                continue
            if ok:
                report.finished(name, value)
            else:
                report.failed(name, value)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref)  # a KeyboardInterrupt inside the task: a fit saves its checkpoint
        if pending:
            ray.wait(pending, num_returns=len(pending), timeout=60)  # let them save before Ray stops
        raise


def check_executor(executor: str, address: str | None = None, threads: int | None = None) -> None:
    """Refuse a bad executor choice (or a missing Ray) before any work, as `run_tasks` would."""
    if executor not in EXECUTORS:
        raise UserError(f"unknown executor '{executor}'; use {' or '.join(EXECUTORS)}")
    if address is not None and executor != "ray":
        raise UserError("a Ray address applies to --executor ray; add it or drop the address")
    if threads is not None and threads < 1:
        raise UserError(f"threads must be >= 1, got {threads}")
    if executor == "ray":
        require("ray", "cluster", "--executor ray")


def run_tasks(
    tasks: Sequence[Task],
    *,
    executor: str = "local",
    address: str | None = None,
    threads: int | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """name -> fn(**kwargs) result for every task, in the order given.

    `executor` is "local" (in this process, in order) or "ray" (one Ray task each; `address` names a
    running cluster, None starts a local instance unless Ray is already initialised, which is then
    reused and left running). `threads` fixes torch's thread count inside every task (and the CPUs a
    Ray task asks for). Raises `TasksFailed` once every task has run if any failed after its retry.
    """
    check_executor(executor, address, threads)
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"task names must be unique, got {names}")
    if executor == "local":
        with _Report(tasks, show_progress) as report:
            _run_local(tasks, threads, report)
        return report.outcome()
    with _ray_session(address) as ray:
        resources = _ray_resources(ray, threads)
        with _Report(tasks, show_progress) as report:
            _run_ray(ray, tasks, resources, threads, report)
    return report.outcome()
