"""Nothing a user has is ever lost, and every bad input is one clear line (exit 2, no traceback).

Each test runs the real CLI on a tiny finished CoDeF run (built once per session) or a copy of it,
and checks the exit code, the message, and that every file the user had is still there, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from canon_edit.cli import main
from canon_edit.run import RunFolder
from canon_edit.video import read_image, write_image, write_pngs

TINY = [
    "--preset",
    "codef_demo",
    "--steps",
    "30",
    "--set",
    "patches=16",
    "--set",
    "photometric_init=false",
    "--quiet",
]


def cli(capsys, *argv: str | Path) -> tuple[int, str]:
    """Exit code and stderr of `canon-edit ARGV`; an escaping exception fails the test (a traceback)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        code = e.code
    captured = capsys.readouterr()
    return code, captured.err


def refused(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 3 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def finished(tmp_path_factory, procedural) -> Path:
    """A finished tiny run with one edit, made through the CLI from a clip folder."""
    root = tmp_path_factory.mktemp("finished")
    clip = root / "clip"
    write_pngs(clip / "frames", procedural.clip.frames[:6])
    write_pngs(clip / "masks", procedural.clip.masks[:6].expand(-1, 3, -1, -1))
    run = root / "run"
    assert main(["fit", str(clip), "-o", str(run), *TINY, "--set", "train.checkpoint_every=20"]) == 0
    layer = read_image(run / "canonical" / "layer_0.png")
    layer[:3, 5:15, 5:15] = 1.0
    write_image(root / "layer0_painted.png", layer)
    frame = root / "frame2.png"
    assert main(["render", str(run), "--frame", "2", "--source", "-o", str(frame)]) == 0
    painted = read_image(frame)
    painted[:, 10:20, 20:40] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    write_image(root / "painted.png", painted)
    assert (
        main(["edit", str(run), "--keyframe", "2", "--image", str(root / "painted.png"), "--name", "red"])
        == 0
    )
    return root


@pytest.fixture
def work(tmp_path, finished) -> Path:
    """A private copy of the finished run and its clip."""
    shutil.copytree(finished, tmp_path / "w")
    return tmp_path / "w"


@pytest.mark.parametrize("name", ["..", ".", "a/b", ".hidden", "../../x", ""])
def test_edit_names_are_plain_names(work, capsys, name):
    before = snapshot(work)
    code, err = cli(capsys, "edit", work / "run", "--canonical", work / "painted.png", "--name", name)
    refused(code, err, "not a plain name")
    assert snapshot(work) == before


def test_an_existing_edit_is_replaced_only_with_force(work, capsys):
    before = snapshot(work)
    argv = ["edit", work / "run", "--keyframe", "3", "--image", work / "painted.png", "--name", "red"]
    refused(*cli(capsys, *argv), "already exists")
    assert snapshot(work) == before
    assert cli(capsys, *argv, "--force")[0] == 0
    assert json.loads((work / "run/edits/red/edit.json").read_text())["frame"] == 3


def test_force_never_replaces_a_folder_canon_edit_did_not_make(work, capsys):
    clip = work / "clip"
    (clip / "notes.txt").write_text("mine")
    before = snapshot(work)
    for argv in (["fit", clip, "-o", clip, "--force"], ["demo", "-o", clip, "--force"]):
        refused(*cli(capsys, *argv), "not a canon-edit")
    # a run folder that also holds the user's files: --force refuses rather than delete them
    (work / "run" / "footage.mp4").write_bytes(b"precious")
    refused(*cli(capsys, "fit", clip, "-o", work / "run", "--force", *TINY), "did not make", "footage.mp4")
    assert snapshot(work) == before | {"run/footage.mp4": hashlib.sha256(b"precious").hexdigest()}


def test_force_replaces_a_canon_edit_run(work, capsys):
    (work / "run" / ".notes.tmp").write_text("mine")  # hidden, not one of canon-edit's temp names
    (work / "run" / ".canonical.k2j4.tmp").mkdir()  # what a killed atomic write leaves
    code, err = cli(capsys, "fit", work / "clip", "-o", work / "run", "--force", *TINY)
    assert code == 0, err
    assert (work / "run" / ".notes.tmp").read_text() == "mine"
    assert not (work / "run" / ".canonical.k2j4.tmp").exists()
    assert not (work / "run" / "edits").exists()  # the old run, edits included, was replaced as asked
    assert (work / "clip" / "frames" / "00000.png").is_file()


def test_a_fit_that_fails_early_removes_only_what_it_wrote(work, capsys, monkeypatch):
    """A fit refused inside the fitting loop, before any checkpoint, leaves no half-made run; an entry
    it owns that is a link (here `renders`, pointing at the user's folder) goes, what it points to stays."""
    import canon_edit.fitting as fitting
    from canon_edit.errors import UserError

    mine = work / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")

    def refuse(run, *args, **kwargs):
        (run.path / "renders").symlink_to(mine, target_is_directory=True)
        raise UserError("refused for the test")

    monkeypatch.setattr(fitting, "_fit", refuse)
    code, err = cli(capsys, "fit", work / "clip", "-o", work / "new", *TINY)
    refused(code, err, "refused for the test")
    assert not (work / "new").exists()  # the folder this fit made, emptied and removed
    assert (mine / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "option, needle",
    [
        (["--set", "train.checkpoint_every=0"], "train.checkpoint_every"),
        (["--set", "train.steps=-5"], "train.steps"),
        (["--time-budget", "-1"], "train.time_budget"),
        (["--device", "meta"], "meta"),
        (["--device", "cuda:7"], "cuda:7"),
        (["--max-frames", "0"], "max_frames"),
        (["--fps", "-3"], "fps"),
    ],
)
def test_bad_options_fail_before_any_work(work, capsys, option, needle):
    before = snapshot(work)
    out = work / "new"
    refused(*cli(capsys, "fit", work / "clip", "-o", out, *option), needle)
    assert not out.exists() and snapshot(work) == before


def test_a_fit_that_would_outgrow_memory_is_refused_before_reading(work, capsys, monkeypatch):
    """The method's measured cost against what the machine has: one line that names the segments that
    would fit; the clip is not read and nothing is written; segments too long, or a clip too long to be
    read whole for its segments, are refused alike."""
    import canon_edit.fitting
    from canon_edit import memory
    from canon_edit.representation import get_representation

    height, width = read_image(work / "clip" / "frames" / "00000.png").shape[1:]
    cost = get_representation("codef").fit_memory
    room = cost.peak(3.5, height, width)  # 3 frames fit
    monkeypatch.setattr(memory, "available_memory", lambda: int(room))

    def no_reading(*args, **kwargs):
        raise AssertionError("the clip was read")

    monkeypatch.setattr(canon_edit.fitting, "read_clip", no_reading)
    before, out = snapshot(work), work / "new"
    refused(
        *cli(capsys, "fit", work / "clip", "-o", out, *TINY), "clip whole (6 frames)", "--segment-frames 3"
    )
    refused(
        *cli(capsys, "fit", work / "clip", "-o", out, *TINY, "--segment-frames", "5"),
        "a segment of 5 frames",
        "shorter segments (--segment-frames 3)",
    )
    # a segmented fit reads the whole clip once, to store it: room for 3 frames of that, not 6
    room = memory.READ_COST.peak(3.5, height, width)
    monkeypatch.setattr(memory, "available_memory", lambda: int(room))
    refused(
        *cli(capsys, "fit", work / "clip", "-o", out, *TINY, "--segment-frames", "4"),
        "reading the clip (6 frames",
        "--max-frames 3",
    )
    assert not out.exists() and snapshot(work) == before
    # each mask label is a layer: room for the clip whole with its one label is not room with three
    labels = work / "three_labels"
    labels.mkdir()
    for path in sorted((work / "clip" / "masks").glob("*.png")):
        mask = np.asarray(Image.open(path).convert("L")) > 127
        mask = mask.astype(np.uint8)
        mask[:4, :4], mask[-4:, -4:] = 2, 3
        Image.fromarray(mask).save(labels / path.name)
    before = snapshot(work)
    room = cost.peak(6.5, height, width)
    monkeypatch.setattr(memory, "available_memory", lambda: int(room))
    fits = int((room - cost.peak(0, height, width, 3)) // cost.per_frame(height, width, 3))
    assert 2 <= fits < 6
    refused(
        *cli(capsys, "fit", work / "clip", "--masks", labels, "-o", out, *TINY),
        "clip whole (6 frames)",
        f"--segment-frames {fits}",
    )
    with pytest.raises(AssertionError, match="the clip was read"):
        main(["fit", str(work / "clip"), "-o", str(out), *TINY])
    assert not out.exists() and snapshot(work) == before
    monkeypatch.setenv(memory.NO_CHECK_ENV, "1")  # the way past a wrong estimate: on to reading
    with pytest.raises(AssertionError, match="the clip was read"):
        main(["fit", str(work / "clip"), "-o", str(out), *TINY])


def test_keyframe_checks_and_resampling(work, capsys):
    run = work / "run"
    painted = read_image(work / "painted.png")
    write_image(work / "square.png", torch.zeros(3, 40, 40))
    before = snapshot(work)
    refused(*cli(capsys, "edit", run, "--keyframe", "99", "--image", work / "painted.png"), "out of range")
    refused(*cli(capsys, "edit", run, "--keyframe", "2", "--image", work / "square.png"), "aspect")
    refused(
        *cli(capsys, "edit", run, "--keyframe", "2", "--image", work / "painted.png",
             "--change-mask", work / "square.png"),
        "aspect",
    )  # fmt: skip
    assert snapshot(work) == before
    # painted at twice the run's resolution (e.g. on the source video): resampled, lands the same
    big = torch.nn.functional.interpolate(painted[None], scale_factor=2, mode="nearest")[0]
    write_image(work / "big.png", big)
    code, err = cli(capsys, "edit", run, "--keyframe", "2", "--image", work / "big.png", "--name", "big")
    assert code == 0, err
    from safetensors.torch import load_file

    a = load_file(str(run / "edits/red/textures.safetensors"))
    b = load_file(str(run / "edits/big/textures.safetensors"))
    assert all((a[k] - b[k]).abs().mean() < 0.01 for k in a)


def test_render_checks_its_output_before_rendering(work, capsys):
    blocker = work / "afile"
    blocker.write_text("x")
    before = snapshot(work)
    refused(*cli(capsys, "render", work / "run", "-o", blocker / "x.mp4"), "is a file")
    refused(*cli(capsys, "render", work / "run", "--source", "-o", work / "s.mp4"), "--frame")
    refused(*cli(capsys, "render", work / "run", "-o", work / "x.gif"), ".gif")
    for name in ("x.GIF", "x.webm"):  # readable, not writable: refused before rendering, the formats named
        refused(*cli(capsys, "render", work / "run", "-o", work / name), ".mp4, .m4v, .mov, .mkv, .avi")
    assert snapshot(work) == before


def test_render_replaces_only_its_own_outputs_and_only_when_forced(work, capsys):
    """The user's frames, videos and run folders are never written over, forced or not; a render's
    own video, frame or frame folder is replaced with --force only."""
    frames, run = work / "footage", work / "run"
    frames.mkdir()
    for t in range(3):  # frames from another tool: no canon-edit tag
        Image.fromarray(np.full((8, 8, 3), 40 * t, np.uint8)).save(frames / f"{t:05d}.png")
    (work / "mine.mp4").write_bytes(b"a video of the user's")
    before = snapshot(work)
    for target in (frames, run, run / "canonical", work / "mine.mp4", frames / "00001.png"):
        extra = ["--frame", "1"] if target.suffix == ".png" else []
        refused(*cli(capsys, "render", run, *extra, "-o", target, "--force"), "canon-edit never replaces")
    assert snapshot(work) == before
    for out, extra in ((work / "r.mp4", []), (work / "f.png", ["--frame", "1"]), (work / "pngs", [])):
        assert cli(capsys, "render", run, *extra, "-o", out)[0] == 0
        refused(*cli(capsys, "render", run, *extra, "-o", out), "--force")
        assert cli(capsys, "render", run, *extra, "-o", out, "--force")[0] == 0
    assert sorted(p.name for p in (work / "pngs").iterdir()) == [".canon-edit.json"] + [
        f"{t:05d}.png" for t in range(6)
    ]


def test_render_encodes_at_the_crf_and_preset_asked(work, capsys):
    from test_video import x264_options

    run, out = work / "run", work / "slow.mp4"
    for bad, words in [(["--crf", "60"], "0..51"), (["--x264-preset", "turbo"], "unknown x264 preset")]:
        refused(*cli(capsys, "render", run, "-o", out, *bad), words)
        assert not out.exists()
    assert cli(capsys, "render", run, "-o", out, "--crf", "22", "--x264-preset", "slow")[0] == 0
    assert (x264_options(out)["crf"], x264_options(out)["subme"]) == ("22.0", "8")


def test_a_file_that_lands_at_the_output_while_rendering_is_kept(work, capsys, monkeypatch):
    """The output is checked again as it takes its name: a file another program (or the user) put
    there during the minutes a render takes is not replaced, forced or not, and no temp file stays."""
    import canon_edit.edit.commands as commands

    run, landed = work / "run", {}
    real_chunks, real_frame = commands.render_chunks, commands._frame

    def land(path: Path) -> None:
        if path.suffix:
            path.write_bytes(b"the user's")
        else:
            path.mkdir()
            Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path / "00000.png")
        landed.update({k: v for k, v in snapshot(work).items() if k.startswith(path.name)})

    def chunks(*args, **kwargs):
        for k, chunk in enumerate(real_chunks(*args, **kwargs)):
            if k == 1:
                land(target)
            yield chunk

    def frame(*args):
        land(target)
        return real_frame(*args)

    monkeypatch.setattr(commands, "render_chunks", chunks)
    monkeypatch.setattr(commands, "_frame", frame)
    for target, extra in ((work / "r.mp4", []), (work / "pngs", []), (work / "f.png", ["--frame", "1"])):
        for force in ([], ["--force"]):
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
            before, landed = snapshot(work), {}
            code, err = cli(capsys, "render", run, *extra, "-o", target, *force)
            refused(code, err, str(target))
            assert landed and snapshot(work) == before | landed, err  # what landed, as it was; no temp


def test_a_canonical_painted_in_place_is_never_rebaked_over(work, capsys):
    """Painting RUN/canonical/layer_0.png itself (or saving a file beside it) is kept: a resumed fit,
    which rewrites that folder, is refused before it trains, until the file is moved out."""
    run, layer = work / "run", work / "run" / "canonical" / "layer_0.png"
    painted = read_image(layer)
    painted[:3, :4, :4] = 0.0
    Image.fromarray((painted[:3].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(layer)
    before = snapshot(work)
    refused(*cli(capsys, "fit", "--resume", "-o", run, "--steps", "40"), "layer_0.png", "move them out")
    assert snapshot(work) == before
    layer.rename(work / "my_layer_0.png")
    (run / "canonical" / "notes.txt").write_text("mine")
    refused(*cli(capsys, "fit", "--resume", "-o", run, "--steps", "40"), "notes.txt")
    (run / "canonical" / "notes.txt").unlink()
    assert cli(capsys, "fit", "--resume", "-o", run, "--steps", "40", "--quiet")[0] == 0
    assert layer.is_file() and (work / "my_layer_0.png").is_file()


def test_resume_keeps_the_run_and_records_safe_changes(work, capsys):
    run = work / "run"
    before = snapshot(work)
    refused(*cli(capsys, "fit", "-o", run, "--resume", "--method", "atlas"), "codef")
    refused(*cli(capsys, "fit", "-o", run, "--resume", "--set", "patches=8"), "patches")
    refused(*cli(capsys, "fit", "-o", run, "--resume", "--set", "train.seed=3"), "train.seed")
    other = work / "other"
    shutil.copytree(work / "clip", other)
    refused(*cli(capsys, "fit", other, "-o", run, "--resume"), "source")
    refused(*cli(capsys, "fit", "-o", run, "--resume", "--fps", "24"), "--fps")
    assert {k: v for k, v in snapshot(work).items() if not k.startswith("other/")} == before
    code, err = cli(
        capsys, "fit", work / "clip", "-o", run, "--resume", "--steps", "40", "--time-budget", "100",
        "--set", "lr_grid=0.005", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    info = RunFolder(run).info()
    assert info["steps"] == 40 and info["config"]["lr_grid"] == 0.005
    assert info["resumed"][-1]["changes"] == {"train.steps": 40, "train.time_budget": 100.0, "lr_grid": 0.005}
    # a quality on resume stands for its steps and time budget, as on a new fit (a cap of 12 steps here)
    quality = ["--quality", "draft", "--set", "train.reference_rate=0.1", "--quiet"]
    assert cli(capsys, "fit", "-o", run, "--resume", *quality)[0] == 0
    info = RunFolder(run).info()
    assert info["steps"] == 40 and info["config"]["train"]["time_budget"] == 120.0  # 40 done, the cap is 12
    assert info["resumed"][-1]["changes"] == {
        "train.steps": 12, "train.time_budget": 120.0, "train.quality": "draft", "train.reference_rate": 0.1
    }  # fmt: skip


def test_edits_a_resumed_fit_left_on_the_old_canonical_are_named(work, capsys):
    """An edit's textures line up with the canonical it was made on: a fit resumed to more steps names
    the edits it leaves behind, and so does every later use of one; a re-finish at the same step and
    an edit from before edits recorded their step say nothing."""
    run = work / "run"
    record = run / "edits" / "red" / "edit.json"
    assert json.loads(record.read_text())["fit_steps"] == 30
    code, err = cli(capsys, "fit", "-o", run, "--resume", "--quiet")  # finished: re-finished at step 30
    assert code == 0 and "note" not in err, err
    code, err = cli(capsys, "render", run, "--edit", "red", "--frame", "1", "-o", work / "a.png")
    assert code == 0 and "note" not in err, err
    code, err = cli(capsys, "fit", "-o", run, "--resume", "--steps", "40", "--quiet")
    assert code == 0 and "the canonical changed under 1 earlier edit(s) (red)" in err, err
    code, err = cli(capsys, "render", run, "--edit", "red", "--frame", "1", "-o", work / "b.png")
    assert code == 0 and "edit 'red' was made on the canonical of step 30" in err and "step 40" in err, err
    legacy = {k: v for k, v in json.loads(record.read_text()).items() if k != "fit_steps"}
    record.write_text(json.dumps(legacy))
    code, err = cli(capsys, "render", run, "--edit", "red", "--frame", "1", "-o", work / "c.png")
    assert code == 0 and "note" not in err, err


def test_frame_rate_of_frame_folders(work, capsys):
    code, _ = cli(capsys, "fit", work / "clip", "-o", work / "r30", *TINY)
    assert code == 0 and RunFolder(work / "r30").info()["fps"] == 30
    (work / "clip" / "fps.txt").write_text("24\n")
    code, _ = cli(capsys, "fit", work / "clip", "-o", work / "r24", *TINY)
    assert code == 0 and RunFolder(work / "r24").info()["fps"] == 24
    code, _ = cli(capsys, "fit", work / "clip", "-o", work / "r12", "--fps", "12.5", *TINY)
    assert code == 0 and RunFolder(work / "r12").clip().fps == 12.5


def test_a_run_from_a_relative_path_works_from_anywhere_and_when_moved(work, capsys, monkeypatch):
    monkeypatch.chdir(work)
    assert cli(capsys, "fit", "clip", "-o", "rel", *TINY)[0] == 0
    assert Path(RunFolder(work / "rel").info()["clip"]["source"]).is_absolute()
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    shutil.move(str(work / "rel"), str(elsewhere / "moved"))
    shutil.rmtree(work / "clip")  # the run owns its input: eval, compare and keyframe edits still work
    assert cli(capsys, "eval", "moved")[0] == 0
    assert cli(capsys, "render", "moved", "--compare", "-o", "c.mp4")[0] == 0
    code, err = cli(capsys, "edit", "moved", "--keyframe", "2", "--image", work / "painted.png")
    assert code == 0, err


def test_presets_ship_inside_the_packages():
    from canon_edit.config import resolve_preset

    for package, name, group in [
        ("canon_edit_representations.presets", "codef", ""),
        ("canon_edit.presets", "sds", "edit"),
    ]:
        path = Path(str(resolve_preset(name, package, group)))
        assert path.is_file() and "presets" in path.parts


def _lock_holder(run: Path) -> subprocess.Popen:
    """Another process that holds the run's write lock until killed."""
    code = (
        "import sys, time\n"
        "from canon_edit.lock import run_lock\n"
        f"with run_lock({str(run)!r}, 'fit'):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_two_writers_the_second_refuses_and_a_killed_lock_is_taken_over(work, capsys):
    run = work / "run"
    holder = _lock_holder(run)
    try:
        code, err = cli(capsys, "edit", run, "--canonical", work / "painted.png", "--name", "x")
        refused(code, err, "being written by process", str(holder.pid))
        refused(*cli(capsys, "fit", "-o", run, "--resume", "--quiet"), str(holder.pid))
        refused(*cli(capsys, "fit", work / "clip", "-o", run, "--force", *TINY), str(holder.pid))
        assert cli(capsys, "eval", run)[0] == 0  # readers never block
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    code, err = cli(capsys, "fit", "-o", run, "--resume", "--quiet")
    assert code == 0, err
    assert not (run / ".lock").exists()


def test_a_lock_another_process_took_over_is_left_to_it(tmp_path):
    from canon_edit.lock import LOCK_NAME, run_lock

    other = json.dumps({"pid": 1, "host": "elsewhere", "command": "fit"})
    with run_lock(tmp_path, "edit"):
        (tmp_path / LOCK_NAME).write_text(other)
    assert (tmp_path / LOCK_NAME).read_text() == other


def test_a_killed_fit_is_refused_while_alive_and_resumes_after(work, capsys):
    out = work / "killed"
    argv = ["fit", work / "clip", "-o", out, "--preset", "codef_demo", "--steps", "5000", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "canon_edit.cli", *map(str, argv)], env=env)
    deadline = time.monotonic() + 120
    while not (out / "run.json").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        refused(*cli(capsys, "fit", "-o", out, "--resume", "--quiet"), "being written", str(proc.pid))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    code, err = cli(capsys, "fit", "-o", out, "--resume", "--steps", "20", "--quiet")
    assert code == 0, err
    assert RunFolder(out).info()["status"] == "done"


CORRUPTIONS = {"truncated": lambda b: b[: len(b) // 2], "random": lambda b: os.urandom(max(len(b), 64))}


def _run_files(finished: Path) -> list[str]:
    return [k for k in snapshot(finished / "run") if not k.endswith(".lock")]


def test_every_corrupt_file_is_recovered_or_one_line(tmp_path, finished, capsys):
    """Fuzz: each file of a run truncated or replaced by random bytes; four commands on each."""
    for rel in _run_files(finished):
        for how, corrupt in CORRUPTIONS.items():
            w = tmp_path / f"{how}-{rel.replace('/', '_')}"
            shutil.copytree(finished, w)
            target = w / "run" / rel
            target.write_bytes(corrupt(target.read_bytes()))
            user_files = {k: v for k, v in snapshot(w).items() if not k.startswith("run/")}
            edit_files = {k: v for k, v in snapshot(w).items() if k.startswith("run/edits/red/")}
            commands = [
                ["eval", w / "run"],
                ["render", w / "run", "--edit", "red", "-o", w / "out.mp4"],
                ["edit", w / "run", "--canonical", w / "layer0_painted.png", "--layer", "0", "--name", "new"],
                ["fit", "-o", w / "run", "--resume", "--quiet"],
            ]
            codes = []
            for argv in commands:
                code, err = cli(capsys, *argv)
                codes.append(code)
                assert code in (0, 2), (rel, how, argv, err)
                assert "Traceback" not in err, (rel, how, argv, err)
                if code == 2:
                    assert len(err.strip().splitlines()) == 1, (rel, how, argv, err)
            if rel.startswith(
                ("renders/", "flow", "layer_init", "checkpoints/", "metrics", "edits/red/video", ".canon")
            ):
                assert codes == [0, 0, 0, 0], (rel, how)  # not needed, rebuilt, or an older one is used
            if rel.startswith("canonical/bake"):
                assert codes[-1] == 0, (rel, how)  # fit --resume rebuilds the bake
            after = snapshot(w)
            assert {k: after.get(k) for k in user_files} == user_files, (rel, how)
            assert {k: after.get(k) for k in edit_files} == edit_files, (rel, how)
