"""Bad input through the CLI: one line naming the problem and the fix, exit 2, nothing left behind."""

from __future__ import annotations

import pytest
import torch

from canon_edit.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err
    return code, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


def test_missing_video(tmp_path, capsys):
    code, err = run_cli(capsys, "fit", str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "run"))
    assert_one_line_error(code, err, "nope.mp4")
    assert not (tmp_path / "run").exists()


def test_corrupt_video(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00garbage" * 100)
    code, err = run_cli(capsys, "fit", str(bad), "-o", str(tmp_path / "run"))
    assert_one_line_error(code, err, "bad.mp4")
    assert not (tmp_path / "run").exists()


def test_zero_frames(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, err = run_cli(capsys, "fit", str(tmp_path / "empty"), "-o", str(tmp_path / "run"))
    assert_one_line_error(code, err, "empty")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("picks", "fix"),
    [(["--max-frames", "1"], "a larger --max-frames"), (["--stride", "9"], "a smaller --stride")],
)
def test_one_frame_is_refused_before_the_run_folder(tmp_path, clip_dir, capsys, picks, fix):
    code, err = run_cli(capsys, "fit", str(clip_dir), "-o", str(tmp_path / "run"), *picks)
    assert_one_line_error(code, err, "gives 1 frame", "at least 2", fix)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("option", "rule"),
    [("patches=0", "patches must be >= 1"), ("flow_weight=-1", "flow_weight must be >= 0"),
     ("lr_mlp=-0.1", "lr_mlp must be >= 0"), ("anneal_start=0.9", "must be between 0 and anneal_end")],
)  # fmt: skip
def test_option_values_a_fit_cannot_use_are_refused_before_it_starts(
    tmp_path, clip_dir, capsys, option, rule
):
    """patches=0 showed only as a NaN loss at step 0, with a run folder left behind."""
    code, err = run_cli(capsys, "fit", str(clip_dir), "-o", str(tmp_path / "run"), "--set", option)
    assert_one_line_error(code, err, rule)
    assert not (tmp_path / "run").exists()


def test_mask_count_mismatch(tmp_path, clip_dir, capsys):
    (clip_dir / "masks" / "00005.png").unlink()
    code, err = run_cli(capsys, "fit", str(clip_dir), "-o", str(tmp_path / "run"))
    assert_one_line_error(code, err, "5", "6")
    assert not (tmp_path / "run").exists()


def test_unknown_method_and_option(tmp_path, clip_dir, capsys):
    code, err = run_cli(capsys, "fit", str(clip_dir), "-o", str(tmp_path / "run"), "--method", "nerf")
    assert_one_line_error(code, err, "nerf", "codef")
    code, err = run_cli(capsys, "fit", str(clip_dir), "-o", str(tmp_path / "run"), "--set", "lr_gird=1")
    assert_one_line_error(code, err, "lr_gird")
    code, err = run_cli(capsys, "fit", str(clip_dir), "-o", str(tmp_path / "run"), "--bogus")
    assert_one_line_error(code, err, "--bogus")
    assert not (tmp_path / "run").exists()


def test_existing_output_and_unwritable_output(tmp_path, clip_dir, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "something").write_text("x")
    for force in ([], ["--force"]):  # a folder canon-edit did not make is never replaced
        code, err = run_cli(capsys, "fit", str(clip_dir), "-o", str(out), *force)
        assert_one_line_error(code, err, "not a canon-edit run", "another output folder")
        assert (out / "something").read_text() == "x" and len(list(out.iterdir())) == 1
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = run_cli(capsys, "fit", str(clip_dir), "-o", str(blocker / "run"))
    assert_one_line_error(code, err, "is a file")
    code, err = run_cli(capsys, "fit", str(clip_dir), "-o", str(blocker))
    assert_one_line_error(code, err, "is a file")
    assert blocker.read_text() == "x"


def test_resume_without_a_run(tmp_path, clip_dir, capsys):
    code, err = run_cli(capsys, "fit", str(clip_dir), "-o", str(tmp_path / "run"), "--resume")
    assert_one_line_error(code, err, "no run to resume")


def test_portrait_without_its_body_model_files_leaves_no_run(tmp_path, clip_dir, capsys):
    out = tmp_path / "run"
    code, err = run_cli(
        capsys, "fit", str(clip_dir), "-o", str(out), "--method", "portrait",
        "--body", "smplx", "--body-model-dir", "/nonexistent",
    )  # fmt: skip
    assert_one_line_error(code, err, "SMPL-X", "/nonexistent")
    assert not out.exists()
    code, err = run_cli(capsys, "fit", str(clip_dir), "-o", str(out), "--tracking", "t.json")
    assert_one_line_error(code, err, "--method portrait")
    assert not out.exists()
    out.mkdir()  # a folder the user made is left as it was, not removed with the failed run
    code, err = run_cli(
        capsys, "fit", str(clip_dir), "-o", str(out), "--method", "portrait",
        "--body", "smplx", "--body-model-dir", "/nonexistent",
    )  # fmt: skip
    assert_one_line_error(code, err, "SMPL-X")
    assert out.is_dir() and list(out.iterdir()) == []


def test_edit_and_render_errors(truth_run, tmp_path, capsys):
    code, err = run_cli(capsys, "edit", str(tmp_path / "norun"), "--canonical", "x.png")
    assert_one_line_error(code, err, "not a canon-edit run")
    code, err = run_cli(capsys, "edit", str(truth_run.path), "--canonical", str(tmp_path / "missing.png"))
    assert_one_line_error(code, err, "missing.png")
    code, err = run_cli(capsys, "edit", str(truth_run.path), "--keyframe", "2")
    assert_one_line_error(code, err, "--image")
    code, err = run_cli(
        capsys, "render", str(truth_run.path), "--edit", "nope", "-o", str(tmp_path / "o.mp4")
    )
    assert_one_line_error(code, err, "nope")
    code, err = run_cli(capsys, "render", str(truth_run.path), "--frame", "99", "-o", str(tmp_path / "f.png"))
    assert_one_line_error(code, err, "out of range")
    assert not (tmp_path / "o.mp4").exists()


def test_edit_render_and_eval_round_trip(truth_run, tmp_path, capsys):
    frame = tmp_path / "frame.png"
    assert main(["render", str(truth_run.path), "--frame", "3", "--source", "-o", str(frame)]) == 0
    from canon_edit.video import read_image, write_image

    img = read_image(frame)
    img[0, 10:20, 10:30], img[1:, 10:20, 10:30] = 1.0, 0.0
    write_image(frame, img)
    assert main(["edit", str(truth_run.path), "--keyframe", "3", "--image", str(frame), "--name", "red"]) == 0
    assert (truth_run.edits / "red" / "video.mp4").stat().st_size > 0
    capsys.readouterr()
    assert main(["eval", str(truth_run.path), "--edit", "red"]) == 0
    import json

    figures = json.loads(capsys.readouterr().out)
    assert figures["edit"] == "red" and figures["psnr"] < 40  # the edit changed the video
    assert (
        main(["render", str(truth_run.path), "--edit", "red", "--compare", "-o", str(tmp_path / "c.mp4")])
        == 0
    )


def test_outputs_are_written_atomically_and_readable(tmp_path):
    from canon_edit.atomic import atomic_path, write_json

    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    write_json(target, {"a": 1})
    assert target.stat().st_mode & 0o044  # group/other can read it, as with any normal file


def test_quality_is_given_instead_of_steps_not_beside_them(tmp_path, clip_dir, capsys):
    code, err = run_cli(
        capsys, "fit", str(clip_dir), "-o", str(tmp_path / "run"), "--quality", "draft", "--steps", "5"
    )
    assert_one_line_error(code, err, "--quality", "--steps")
    code, err = run_cli(capsys, "fit", str(clip_dir), "-o", str(tmp_path / "run"), "--quality", "fast")
    assert code == 2 and "draft" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("port", ["99999", "0", "-1", "http"])
def test_view_refuses_a_port_that_is_none(tmp_path, capsys, port):
    """viser would try the ports after an impossible one without end: refused before anything starts."""
    code, err = run_cli(capsys, "view", str(tmp_path / "run"), "--port", port)
    assert_one_line_error(code, err, "--port", f"'{port}' is not a port", "1 to 65535")


def test_ctrl_c_outside_a_fit_is_one_line_and_leaves_no_output(truth_run, tmp_path, capsys, monkeypatch):
    """A render stopped mid-way: exit 130, one line, no traceback, no partial video."""
    from canon_edit import video

    write = video.VideoWriter.write

    def stop_after_first_chunk(self, frames):
        write(self, frames)
        raise KeyboardInterrupt

    monkeypatch.setattr(video.VideoWriter, "write", stop_after_first_chunk)
    out = tmp_path / "out.mp4"
    code, err = run_cli(capsys, "render", str(truth_run.path), "-o", str(out))
    assert code == 130 and "render stopped (Ctrl-C)" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


@pytest.mark.parametrize(
    "error, where",
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "GPU"),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB"), "CPU"),
        (MemoryError(), "CPU"),
    ],
)
def test_running_out_of_memory_is_one_line_and_leaves_no_output(
    truth_run, tmp_path, capsys, monkeypatch, error, where
):
    """Memory that runs out mid-render (the GPU's, or the CPU allocator's): exit 2, one line naming
    which memory, no traceback, no partial video. Any other RuntimeError is a bug and stays loud."""
    from canon_edit import video

    write = video.VideoWriter.write

    def fail_after_first_chunk(self, frames, raised=error):
        write(self, frames)
        raise raised

    monkeypatch.setattr(video.VideoWriter, "write", fail_after_first_chunk)
    out = tmp_path / "out.mp4"
    code, err = run_cli(capsys, "render", str(truth_run.path), "-o", str(out))
    assert code == 2 and f"render ran out of {where} memory" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_a_runtime_error_that_is_not_memory_is_not_hidden(truth_run, tmp_path, monkeypatch):
    from canon_edit import video

    def broken(self, frames):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(video.VideoWriter, "write", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        main(["render", str(truth_run.path), "-o", str(tmp_path / "out.mp4")])
