"""Shared fixtures: a small procedural clip with known truth, and a finished run built from it."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Under pytest-xdist each worker gets its share of the cores, set before torch is imported (and inherited by
# the CLI subprocesses tests start): two workers of two threads each on two cores slow each other many times.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ["OMP_NUM_THREADS"] = str(max(1, cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

import pytest  # noqa: E402

from canon_edit.fitting import finish_run  # noqa: E402
from canon_edit.procedural import ProceduralClip, make_clip  # noqa: E402
from canon_edit.run import RunFolder  # noqa: E402
from canon_edit.video import read_clip, write_pngs  # noqa: E402


@pytest.fixture(scope="session")
def smplx_dir(tmp_path_factory):
    """A synthetic SMPL-X model file (the smplx package's full key set, no licensed data)."""
    from canon_edit_representations.portrait.synthetic_body import write_synthetic_smplx

    folder = tmp_path_factory.mktemp("smplx")
    write_synthetic_smplx(folder)
    return folder


@pytest.fixture(scope="session")
def body(smplx_dir):
    from canon_edit_representations.portrait.body import SMPLXBody

    return SMPLXBody(smplx_dir)


@pytest.fixture(scope="session")
def portrait(body):
    """The procedural portrait: known body, poses, Gaussians and landmarks, 6 frames of 64²."""
    from canon_edit_representations.portrait.procedural import make_portrait_clip

    return make_portrait_clip(body, frames=6, size=64)


@pytest.fixture(scope="session")
def procedural() -> ProceduralClip:
    return make_clip(frames=12, height=48, width=80)


def make_truth_run(path, proc: ProceduralClip) -> RunFolder:
    """A finished run whose bake is the procedural truth: edits and renders without a fit."""
    clip_dir = path / "clip"
    write_pngs(clip_dir / "frames", proc.clip.frames)
    write_pngs(clip_dir / "masks", proc.clip.masks.expand(-1, 3, -1, -1))
    clip = read_clip(clip_dir)
    run = RunFolder.create(path / "run")
    run.save_clip(clip)
    run.write_info(method="codef", clip={"source": str(clip_dir)}, status="fitting", fps=clip.fps)
    finish_run(run, proc.truth, clip)
    run.write_info(status="done")
    return run


@pytest.fixture
def truth_run(tmp_path, procedural) -> RunFolder:
    return make_truth_run(tmp_path, procedural)


@pytest.fixture
def clip_dir(tmp_path, procedural):
    """The first 6 frames of the procedural clip as a clip folder (frames/ + masks/)."""
    d = tmp_path / "clip"
    write_pngs(d / "frames", procedural.clip.frames[:6])
    write_pngs(d / "masks", procedural.clip.masks[:6].expand(-1, 3, -1, -1))
    return d
