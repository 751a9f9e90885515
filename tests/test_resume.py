"""A fit killed with SIGKILL resumes from its last checkpoint and ends where an uninterrupted fit ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from canon_edit.run import RunFolder

STEPS = 160


def fit_cmd(clip, out, *extra):
    return [
        sys.executable,
        "-m",
        "canon_edit.cli",
        "fit",
        str(clip),
        "-o",
        str(out),
        "--preset",
        "codef_demo",
        "--steps",
        str(STEPS),
        "--set",
        "train.checkpoint_every=40",
        "--set",
        "patches=32",
        "--quiet",
        *extra,
    ]


def final_state(run: RunFolder) -> dict:
    return load_file(str(run.checkpoint_paths()[-1].with_suffix(".safetensors")))


# mined patches: the error map they are drawn from is in the checkpoints
@pytest.mark.parametrize("options", [(), ("--set", "mined_share=0.5")], ids=["uniform", "mined"])
def test_resume_after_sigkill_matches_an_uninterrupted_fit(tmp_path, clip_dir, options):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref"
    subprocess.run(fit_cmd(clip_dir, ref, *options), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        fit_cmd(clip_dir, killed, *options), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while not RunFolder(killed).checkpoint_paths() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run = RunFolder(killed)
    assert run.info()["status"] == "fitting"  # a killed run never looks finished
    done_at_kill = json.loads(run.checkpoint_paths()[-1].read_text())["step"]
    assert 0 < done_at_kill < STEPS

    subprocess.run(fit_cmd(clip_dir, killed, *options, "--resume"), check=True, env=env, capture_output=True)
    assert run.info()["status"] == "done" and run.info()["steps"] == STEPS
    a, b = final_state(RunFolder(ref)), final_state(run)
    assert a.keys() == b.keys() and ("model.error_map" in a) == bool(options)
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-4, k
    ref_psnr = json.loads(RunFolder(ref).metrics.read_text())["psnr"]
    assert abs(json.loads(run.metrics.read_text())["psnr"] - ref_psnr) < 0.05
