"""`canon-edit fit --method portrait` end to end: detections → tracking → Gaussians, eval/render/resume,
and PortraitGen's smplx_track.pth imported with its camera and hand conventions."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from canon_edit import fitting
from canon_edit.cli import main
from canon_edit.errors import UserError
from canon_edit.run import RunFolder
from canon_edit.video import read_image, write_image, write_pngs
from canon_edit_representations.portrait import detect, prepare
from canon_edit_representations.portrait.body import (
    SMPLXBody,
    matrix_to_axis_angle,
    rotation_matrix,
)
from canon_edit_representations.portrait.detect import Detections
from canon_edit_representations.portrait.import_tracking import (
    fit_coefficients,
    hands_mean,
    import_portraitgen,
)
from canon_edit_representations.portrait.synthetic_body import synthetic_smplx_arrays
from canon_edit_representations.portrait.tracking import KEYPOINT_JOINTS, Tracking, project_points

FIT_STEPS = 150
FLIP_YZ = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))


def fake_detector(portrait, body, calls: list):
    """detect_clip as the real one behaves, answering with the procedural truth: face landmarks,
    shoulder and elbow keypoints (the rest of the 33 not found) and soft person masks."""

    def detect_clip(frames, cache=None, python=None, show_progress=True):
        calls.append(cache)
        tr = portrait.tracking
        joints = body(tr.pose, tr.expression, tr.shape).joints.detach()
        pose = torch.full((len(frames), 33, 3), float("nan"))
        pixels = project_points(joints, tr.viewmat, tr.K)
        for index, name in KEYPOINT_JOINTS.items():
            pose[:, index, :2], pose[:, index, 2] = pixels[:, body.joint_index(name)], 0.9
        mask = 0.1 + 0.8 * portrait.clip.masks[:, :1]  # soft segmentation; 0.5 recovers the true mask
        Detections(portrait.landmarks.clone(), pose, mask).save(cache)
        return Detections.load(cache)

    return detect_clip


def test_fit_eval_render_resume_from_detections(tmp_path, smplx_dir, body, portrait, monkeypatch, capsys):
    calls: list = []
    monkeypatch.setattr(detect, "detect_clip", fake_detector(portrait, body, calls))

    def no_flow(*args, **kwargs):
        raise AssertionError("the portrait fit needs no optical flow")

    monkeypatch.setattr(fitting, "load_or_compute_flow", no_flow)  # eval still computes it, lazily
    write_pngs(tmp_path / "clip" / "frames", portrait.clip.frames)  # no masks, no tracking file
    out = tmp_path / "run"
    fit = ["fit", str(tmp_path / "clip"), "-o", str(out), "--method", "portrait", "--body", "smplx"]
    fit += ["--body-model-dir", str(smplx_dir), "--steps", str(FIT_STEPS), "--quiet"]
    # the procedural landmarks move by almost half the face's size a frame, which the landmark
    # and trajectory filters (test_landmark_filter.py, test_trajectory_filter.py) would flatten: off here
    options = ("texel_resolution=96", "train.warmup_steps=10", "tracker.iterations=200")
    for option in (*options, "tracker.filter_min_cutoff=0", "tracker.trajectory_min_cutoff=0"):
        fit += ["--set", option]
    assert main(fit) == 0
    run = RunFolder(out)
    extra = json.loads(run.metrics.read_text())["extra"]
    assert extra["masked_psnr"] >= 28.0 and extra["landmark_error_px"] < 2.0, extra
    assert 0 < extra["masked_ssim"] <= 1
    assert (out / "detections.safetensors").is_file() and (out / "tracking_error.json").is_file()
    assert "segmentation" in run.info()["masks"] and len(calls) == 1

    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    figures = json.loads(capsys.readouterr().out)
    keys = {"run", "edit", "frames", "psnr", "ssim", "warp_error", "source_warp_error", "extra"}
    assert keys <= figures.keys() and figures["extra"] == extra
    assert main(["render", str(out), "--frame", "2", "-o", str(tmp_path / "f.png")]) == 0
    assert main(["render", str(out), "--compare", "-o", str(tmp_path / "c.mp4")]) == 0
    assert (tmp_path / "c.mp4").stat().st_size > 0
    edit_through_the_cli(out, tmp_path, capsys)

    def no_tracking(*args, **kwargs):
        raise AssertionError("a resumed fit must reuse tracking.json")

    monkeypatch.setattr(prepare, "track_landmarks", no_tracking)
    assert main([*fit, "--resume"]) == 0
    assert json.loads(run.metrics.read_text())["extra"] == extra


def edit_through_the_cli(out, tmp_path, capsys) -> None:
    """Every portrait entry point of the CLI on a fitted run: edit, render --edit/--orbit/--view, eval."""
    frame = read_image(tmp_path / "f.png")
    painted = frame.clone()
    painted[:, 28:34, 26:38] = torch.tensor([1.0, 0.0, 1.0])[:, None, None]
    write_image(tmp_path / "painted.png", painted)
    edit = ["edit", str(out), "--keyframe", "2", "--image", str(tmp_path / "painted.png")]
    assert main([*edit, "--name", "mark", "--set", "steps=40", "--set", "lr=0.3"]) == 0
    folder = out / "edits" / "mark"
    assert {"gaussians.ply", "decoder.safetensors", "edit.json", "video.mp4", "compare.mp4"} <= {
        p.name for p in folder.iterdir()
    }
    meta = json.loads((folder / "edit.json").read_text())
    assert meta["kind"] == "keyframe" and meta["frame"] == 2 and meta["config"]["steps"] == 40
    assert main(["render", str(out), "--edit", "mark", "--frame", "2", "-o", str(tmp_path / "e.png")]) == 0
    edited = read_image(tmp_path / "e.png")
    assert (edited[:, 28:34, 26:38] - painted[:, 28:34, 26:38]).abs().mean() < (
        frame[:, 28:34, 26:38] - painted[:, 28:34, 26:38]
    ).abs().mean() / 2, "the mark is not where it was painted"
    capsys.readouterr()
    assert main(["eval", str(out), "--edit", "mark"]) == 0
    assert json.loads(capsys.readouterr().out)["edit"] == "mark"
    assert main(["render", str(out), "--edit", "mark", "--orbit", "30", "-o", str(tmp_path / "o.mp4")]) == 0
    assert main(["render", str(out), "--view", "25,-10", "--frame", "1", "-o", str(tmp_path / "v.png")]) == 0
    assert read_image(tmp_path / "v.png").amax() > 0.2  # the person is in view
    reference = torch.zeros(3, 16, 16)
    reference[0], reference[2] = torch.linspace(0.2, 0.9, 16)[:, None], 0.3
    write_image(tmp_path / "ref.png", reference)
    assert main(["edit", str(out), "--appearance", str(tmp_path / "ref.png"), "--from-edit", "mark"]) == 0
    assert json.loads((out / "edits" / "appearance" / "edit.json").read_text())["from_edit"] == "mark"
    for argv, words in [
        (["edit", str(out), "--canonical", str(tmp_path / "ref.png")], "no canonical image"),
        (["edit", str(out), "--prompt", "a cat", "--mode", "img2img"], "does not apply to a portrait"),
        (["render", str(out), "--view", "30", "-o", str(tmp_path / "x.mp4")], "YAW,PITCH"),
        (["render", str(out), "--orbit", "120", "-o", str(tmp_path / "x.mp4")], "[-90, 90]"),
        (["render", str(out), "--edit", "nope", "-o", str(tmp_path / "x.mp4")], "appearance, mark"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], (argv, err)


def to_portraitgen(tracking: Tracking, hand_mean: torch.Tensor) -> dict[str, np.ndarray]:
    """`tracking` (root joint at rest) written the way PortraitGen's smplx_track.pth stores it."""
    T = tracking.T
    pose = tracking.pose.double()
    R = tracking.viewmat[:, :3, :3].double().transpose(1, 2) @ FLIP_YZ  # undo viewmat = D·Rᵀ
    trans = tracking.viewmat[:, :3, 3].double() @ FLIP_YZ
    K = tracking.K
    pad = lambda x, n: torch.cat([x, x.new_zeros(len(x), n - x.shape[1])], 1)  # noqa: E731
    arrays = {
        "body_pose": pose[:, 1:22].reshape(T, 63),
        "jaw_pose": pose[:, 22],
        "lhand_pose": (pose[:, 25:40] - hand_mean[:15]).reshape(T, 45),
        "rhand_pose": (pose[:, 40:55] - hand_mean[15:]).reshape(T, 45),
        "expr": pad(tracking.expression, 100),
        "shape": pad(tracking.shape, 300),
        "cam_angle": matrix_to_axis_angle(R),
        "cam_trans": trans,
        "cam_para": torch.tensor([[K[0, 0], K[1, 1], K[0, 2], K[1, 2]]]),
        "global_orient": torch.zeros(T, 3),  # PortraitGen does not read it, neither do we
    }
    return {k: v.float().numpy() for k, v in arrays.items()}


def project(points: torch.Tensor, tracking: Tracking) -> torch.Tensor:
    """T×L×3 body-space points → T×L×2 pixels through the tracking's OpenCV cameras."""
    cam = points @ tracking.viewmat[:, :3, :3].transpose(1, 2) + tracking.viewmat[:, None, :3, 3]
    return cam[..., :2] / cam[..., 2:] * tracking.K[[0, 1], [0, 1]] + tracking.K[:2, 2]


@pytest.fixture(scope="module")
def hands_dir(tmp_path_factory):
    """A synthetic SMPL-X file whose mean hand pose is not flat, as in the real files."""
    arrays = synthetic_smplx_arrays()
    gen = np.random.default_rng(1)
    arrays["hands_meanl"] = gen.normal(0, 0.2, 45).astype(np.float32)
    arrays["hands_meanr"] = gen.normal(0, 0.2, 45).astype(np.float32)
    folder = tmp_path_factory.mktemp("smplx_hands")
    np.savez_compressed(folder / "SMPLX_NEUTRAL.npz", **arrays)
    return folder


def test_portraitgen_import_round_trip(tmp_path, portrait, hands_dir):
    body = SMPLXBody(hands_dir)
    gen = torch.Generator().manual_seed(0)
    T, truth = portrait.tracking.T, portrait.tracking
    pose = truth.pose.clone()
    pose[:, 25:55] = 0.3 * torch.randn(T, 30, 3, generator=gen)
    cam = rotation_matrix(0.1 * torch.randn(T, 3, generator=gen))  # a moving camera
    viewmat = truth.viewmat.clone()
    viewmat[:, :3, :3] = cam @ truth.viewmat[:, :3, :3]
    viewmat[:, :3, 3] += 0.02 * torch.randn(T, 3, generator=gen)
    known = Tracking(pose, truth.expression, truth.shape, viewmat, truth.K, truth.width, truth.height)
    hand_mean = hands_mean(hands_dir)
    assert hand_mean.abs().max() > 0
    torch.save(to_portraitgen(known, hand_mean), tmp_path / "smplx_track.pth")

    imported = fit_coefficients(import_portraitgen(tmp_path / "smplx_track.pth", T, hand_mean), body)
    assert (imported.width, imported.height) == (known.width, known.height)
    torch.testing.assert_close(imported.pose, known.pose, atol=1e-5, rtol=0)
    with torch.no_grad():
        uv = [
            project(body.landmarks(body(t.pose, t.expression, t.shape).vertices), t)
            for t in (known, imported)
        ]
    assert float((uv[0] - uv[1]).abs().max()) < 1e-4


def test_portraitgen_import_refuses_bad_files(tmp_path, portrait):
    good = to_portraitgen(portrait.tracking, torch.zeros(30, 3))
    path = tmp_path / "smplx_track.pth"
    T = portrait.tracking.T

    def refused(data, match: str, frames: int = T) -> None:
        torch.save(data, path)
        with pytest.raises(UserError, match=match) as info:
            import_portraitgen(path, frames)
        assert "\n" not in str(info.value)

    refused({k: v for k, v in good.items() if k != "cam_angle"}, "no 'cam_angle'.*expected body_pose T×63")
    refused(good, "body_pose of shape \\(6, 63\\); expected 7×63", frames=T + 1)
    refused({**good, "jaw_pose": good["jaw_pose"][:, :2]}, "jaw_pose of shape \\(6, 2\\); expected 6×3")
    refused({**good, "cam_para": np.zeros((1, 3), np.float32)}, "cam_para of shape \\(1, 3\\); expected 1×4")
    refused({**good, "shape": np.random.rand(T, 300).astype(np.float32)}, "shape that changes over frames")
    refused({**good, "extra": argparse.Namespace(a=1)}, "does not unpickle")
    path.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="not a readable torch file"):
        import_portraitgen(path, T)


def test_a_portrait_fit_that_would_outgrow_memory_names_fewer_frames(
    tmp_path, smplx_dir, portrait, monkeypatch, capsys
):
    """A portrait is fitted whole: the refusal names the frames that fit, not segments, before any
    detection, tracking or write."""
    from canon_edit import memory
    from canon_edit_representations.portrait.model import Portrait

    def no_detection(*args, **kwargs):
        raise AssertionError("the clip was detected")

    monkeypatch.setattr(detect, "detect_clip", no_detection)
    write_pngs(tmp_path / "clip" / "frames", portrait.clip.frames)  # 6 frames
    room = Portrait.fit_memory.peak(3.5, portrait.clip.H, portrait.clip.W)
    monkeypatch.setattr(memory, "available_memory", lambda: int(room))
    out = tmp_path / "run"
    capsys.readouterr()
    fit = ["fit", str(tmp_path / "clip"), "-o", str(out), "--method", "portrait", "--body", "smplx"]
    assert main([*fit, "--body-model-dir", str(smplx_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "fitting the clip whole (6 frames)" in err and "with portrait" in err, err
    assert "fewer frames (--max-frames 3, --stride)" in err and "segment" not in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
