"""Executors: Ray fits equal local fits bit for bit, a task killed mid-fit is retried and resumes, a
failing task is retried once and reported by name without losing the finished ones, a bad input is
not retried, a missing Ray names its extra, and `fit-many` checks its clips before any work."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_cli import assert_one_line_error, run_cli

from canon_edit.cli import main
from canon_edit.errors import UserError
from canon_edit.executors import Task, TasksFailed, run_tasks
from canon_edit.fit_many import fit_many, fit_one
from canon_edit.procedural import make_clip
from canon_edit.run import RunFolder
from canon_edit.video import write_pngs

# a fit of a few seconds on a 2-core CPU
FIT = {"method": "codef", "preset": "codef_demo", "overrides": {"patches": 16, "train": {"steps": 10}}}
FIT_FLAGS = ("--preset", "codef_demo", "--set", "patches=16", "--steps", "10", "--quiet")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    """Two tiny procedural clips as frame folders (different textures and motion seeds)."""
    root = tmp_path_factory.mktemp("clips")
    for seed, name in enumerate(("alpha", "beta")):
        write_pngs(root / name, make_clip(frames=4, height=32, width=48, seed=seed).clip.frames)
    return [root / "alpha", root / "beta"]


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray instance as CI has it: 2 CPUs, no dashboard, no network."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    # the workers cannot import this test module (tests/ is not on their path): send its task
    # functions by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


@pytest.fixture(scope="module")
def local_runs(clips, tmp_path_factory) -> dict[str, Path]:
    runs = tmp_path_factory.mktemp("runs") / "local"
    return fit_many(clips, runs, executor="local", threads=1, show_progress=False, **FIT).runs


def _metrics(run: Path) -> dict:
    figures = json.loads(RunFolder(run).metrics.read_text())
    figures.pop("run")  # the run's path
    return figures


def test_ray_fits_equal_local_fits_bit_for_bit(clips, local_runs, ray_session, tmp_path):
    ray_runs = fit_many(clips, tmp_path / "ray", executor="ray", threads=1, show_progress=False, **FIT).runs
    assert list(ray_runs) == list(local_runs) == ["alpha", "beta"]
    bakes = {}
    for name in local_runs:
        assert RunFolder(ray_runs[name]).info()["status"] == "done"
        local = load_file(str(local_runs[name] / "canonical" / "bake.safetensors"))
        remote = load_file(str(ray_runs[name] / "canonical" / "bake.safetensors"))
        assert local.keys() == remote.keys() and local
        for key in local:
            assert torch.equal(local[key], remote[key]), (name, key)
        assert _metrics(ray_runs[name]) == _metrics(local_runs[name])
        bakes[name] = local
    key = next(iter(bakes["alpha"]))
    assert not torch.equal(bakes["alpha"][key], bakes["beta"][key])  # two different fits compared


def _fit_killed_once(marker: str, **fit: object) -> str:
    """`fit_one`, but on the first attempt the worker dies (os._exit) once the fit saved a checkpoint."""
    if not Path(marker).exists():
        Path(marker).write_text("first attempt")
        checkpoints = Path(str(fit["out"])) / "checkpoints"

        def kill_after_first_checkpoint() -> None:
            while not list(checkpoints.glob("step_*.json")):
                time.sleep(0.005)
            os._exit(1)

        threading.Thread(target=kill_after_first_checkpoint, daemon=True).start()
    return fit_one(**fit)


def test_a_task_killed_mid_fit_is_retried_and_resumes(clips, ray_session, tmp_path):
    out = tmp_path / "runs" / "alpha"
    fit = {
        "out": str(out), "clip": {"source": str(clips[0])}, "method": "codef", "preset": "codef_demo",
        "overrides": {"patches": 16, "train": {"steps": 150, "checkpoint_every": 10}}, "device": "cpu",
        "resume": False, "stamp": None, "show_progress": False,
    }  # fmt: skip
    marker = tmp_path / "attempted"
    task = Task("alpha", _fit_killed_once, {"marker": str(marker), **fit})
    assert run_tasks([task], executor="ray", threads=1, show_progress=False) == {"alpha": str(out)}
    info = RunFolder(out).info()
    assert marker.exists() and info["status"] == "done" and info["steps"] == 150
    assert len(info["resumed"]) == 1  # the retry continued the killed attempt's checkpoint


def _count(counter: str) -> int:
    """Append one attempt to `counter`; the number of attempts so far."""
    with open(counter, "a") as f:
        f.write("x")
    return len(Path(counter).read_text())


def _fails_once(counter: str) -> str:
    if _count(counter) == 1:
        raise RuntimeError("transient")
    return "second attempt"


def _always_fails(counter: str) -> None:
    _count(counter)
    raise RuntimeError("boom")


def _bad_input(counter: str) -> None:
    _count(counter)
    raise UserError("clip x.mp4 is corrupt; fit another")


def _writes(path: str) -> str:
    Path(path).write_text("kept")
    return "ok"


@pytest.fixture(params=["local", "ray"])
def executor(request) -> str:
    if request.param == "ray":
        request.getfixturevalue("ray_session")
    return request.param


def test_a_task_that_fails_once_is_retried(executor, tmp_path):
    counter = str(tmp_path / "attempts")
    result = run_tasks([Task("flaky", _fails_once, {"counter": counter})], executor=executor)
    assert result == {"flaky": "second attempt"}
    assert Path(counter).read_text() == "xx"


def test_a_failure_is_reported_by_name_and_the_finished_are_kept(executor, tmp_path, capsys):
    counter, kept = tmp_path / "attempts", tmp_path / "kept"
    tasks = [
        Task("broken", _always_fails, {"counter": str(counter)}),
        Task("fine", _writes, {"path": str(kept)}),
    ]
    with pytest.raises(TasksFailed) as failed:
        run_tasks(tasks, executor=executor, show_progress=False)
    assert failed.value.failures == {"broken": "RuntimeError: boom"}
    assert failed.value.results == {"fine": "ok"}
    assert str(failed.value).startswith("1 of 2 tasks failed: broken (RuntimeError: boom); 1 finished task")
    assert counter.read_text() == "xx" and kept.read_text() == "kept"  # retried once; the other ran
    assert "broken: failed (RuntimeError: boom)" in capsys.readouterr().err


def test_a_user_error_is_not_retried(executor, tmp_path):
    counter = tmp_path / "attempts"
    with pytest.raises(TasksFailed) as failed:
        run_tasks([Task("bad", _bad_input, {"counter": str(counter)})], executor=executor)
    assert failed.value.failures == {"bad": "clip x.mp4 is corrupt; fit another"}
    assert "none finished" in str(failed.value)
    assert counter.read_text() == "x"


def test_without_ray_the_error_names_the_extra(clips, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails
    kept = tmp_path / "kept"
    with pytest.raises(UserError, match=r"pip install 'canon-edit\[cluster\]'"):
        run_tasks([Task("t", _writes, {"path": str(kept)})], executor="ray")
    assert not kept.exists()
    runs = tmp_path / "runs"
    code, err = run_cli(capsys, "fit-many", *map(str, clips), "-o", str(runs), "--executor", "ray")
    assert_one_line_error(code, err, "--executor ray", "canon-edit[cluster]")
    assert not runs.exists()


def test_fit_many_refuses_two_clips_of_one_name_before_any_work(clips, tmp_path, capsys):
    twins = [tmp_path / "a" / "alpha", tmp_path / "b" / "alpha"]
    for twin in twins:
        shutil.copytree(clips[0], twin)
    runs = tmp_path / "runs"
    code, err = run_cli(capsys, "fit-many", *map(str, twins), "-o", str(runs), *FIT_FLAGS)
    assert_one_line_error(code, err, str(twins[0]), str(twins[1]), "rename one")
    assert not runs.exists()
    code, err = run_cli(capsys, "fit-many", str(clips[0]), str(tmp_path / "nope"), "-o", str(runs))
    assert_one_line_error(code, err, "nope", "does not exist")
    assert not runs.exists()


def test_resume_skips_done_runs_and_continues_unfinished_ones(clips, local_runs, tmp_path, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(local_runs["alpha"].parent, runs)
    RunFolder(runs / "beta").write_info(status="fitting")  # as if killed after its last checkpoint
    done_before = (runs / "alpha" / "run.json").stat().st_mtime_ns
    code = main(["fit-many", *map(str, clips), "-o", str(runs), "--resume", *FIT_FLAGS])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "alpha: skipped" in err
    assert (runs / "alpha" / "run.json").stat().st_mtime_ns == done_before  # not fitted again
    beta = RunFolder(runs / "beta").info()
    assert beta["status"] == "done" and len(beta["resumed"]) == 1
    lines = out.strip().splitlines()
    assert [json.loads(line)["psnr"] for line in lines[:2]] == [
        _metrics(runs / name)["psnr"] for name in ("alpha", "beta")
    ]
    assert lines[2] == f"fit-many: 2 runs in {runs} (1 skipped)"


def test_an_unreachable_ray_address_fails_at_once():
    from canon_edit.executors import _check_reachable

    with pytest.raises(UserError, match="cannot reach the Ray cluster at 127.0.0.1:1"):
        _check_reachable("127.0.0.1:1")  # nothing listens on port 1: refused, not minutes of retries
    _check_reachable("auto")  # Ray's own forms are left to Ray
