"""Tracking: poses recovered from the procedural portrait's landmarks; tracking files; missing faces."""

from __future__ import annotations

import json

import pytest
import torch

from canon_edit.errors import UserError
from canon_edit_representations.portrait.body import (
    matrix_to_axis_angle,
    rotation_matrix,
)
from canon_edit_representations.portrait.tracking import (
    KEYPOINT_JOINTS,
    TrackerConfig,
    fill_missing,
    keypoint_targets,
    load_tracking,
    project_points,
    track_landmarks,
)

HEAD_TOLERANCE_DEG = 3.0  # rotation of the head relative to the camera (neck and head joints composed)
JAW_TOLERANCE_DEG = 2.0
NOISE_PX = 0.2


def _head_in_camera(body, tracking) -> torch.Tensor:
    neck, head = body.joint_index("neck"), body.joint_index("head")
    return (
        tracking.viewmat[:, :3, :3]
        @ rotation_matrix(tracking.pose[:, neck])
        @ rotation_matrix(tracking.pose[:, head])
    )


def test_tracking_recovers_head_and_jaw_from_landmarks(body, portrait):
    gen = torch.Generator().manual_seed(0)
    landmarks = portrait.landmarks + NOISE_PX * torch.randn(portrait.landmarks.shape, generator=gen)
    # the procedural landmarks move by almost half the face's size each frame, far faster than a filmed
    # one: the landmark and trajectory filters (test_landmark_filter.py, test_trajectory_filter.py) would
    # flatten it
    cfg = TrackerConfig(iterations=120, filter_min_cutoff=0.0, trajectory_min_cutoff=0.0)
    tracking, error = track_landmarks(body, landmarks, 64, 64, cfg)
    assert float(error.max()) < 2 * NOISE_PX + 0.2
    relative = _head_in_camera(body, tracking) @ _head_in_camera(body, portrait.tracking).transpose(1, 2)
    head_error = matrix_to_axis_angle(relative).norm(dim=-1).rad2deg()
    assert float(head_error.max()) < HEAD_TOLERANCE_DEG
    jaw = body.joint_index("jaw")
    jaw_error = (tracking.pose[:, jaw, 0] - portrait.tracking.pose[:, jaw, 0]).abs().rad2deg()
    assert float(jaw_error.max()) < JAW_TOLERANCE_DEG


def test_missing_faces_are_interpolated_or_refused():
    landmarks = torch.arange(5, dtype=torch.float32)[:, None, None].expand(5, 3, 2).clone()
    landmarks[1] = float("nan")
    landmarks[3] = float("nan")
    filled, missing = fill_missing(landmarks)
    assert missing == [1, 3]
    torch.testing.assert_close(filled, torch.arange(5, dtype=torch.float32)[:, None, None].expand(5, 3, 2))
    landmarks[:3] = float("nan")
    with pytest.raises(UserError, match="no face found in 4 of 5 frames"):
        fill_missing(landmarks)


def test_tracking_file_round_trip_and_bad_files(tmp_path, body, portrait):
    path = tmp_path / "tracking.json"
    portrait.tracking.save(path)
    back = load_tracking(path, portrait.clip.T, body.n_joints)
    for key in ("pose", "expression", "shape", "viewmat", "K"):
        torch.testing.assert_close(getattr(back, key), getattr(portrait.tracking, key))
    with pytest.raises(UserError, match="has 6 frames but the clip has 7"):
        load_tracking(path, 7)
    with pytest.raises(UserError, match="joints"):
        load_tracking(path, 6, joints=64)
    data = json.loads(path.read_text())
    del data["frames"][0]["viewmat"]
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match="layout"):
        load_tracking(path, 6)
    path.write_text(json.dumps({"frames": []}))
    with pytest.raises(UserError, match="not a canon-edit tracking file"):
        load_tracking(path, 6)


def test_body_keypoints_place_the_arms_that_face_landmarks_cannot_see(body, portrait):
    """Shoulders lowered in the truth: the pose keypoints (elbows, with visibility) recover them."""
    truth = portrait.tracking
    pose = truth.pose.clone()
    for side, sign in (("left", 1.0), ("right", -1.0)):
        pose[:, body.joint_index(f"{side}_shoulder"), 2] = -sign * 0.5  # arms 29° further down
    out = body(pose, truth.expression, truth.shape)

    landmarks = project_points(body.landmarks(out.vertices), truth.viewmat, truth.K)
    keypoints = torch.full((truth.T, 33, 3), float("nan"))
    joints = project_points(out.joints, truth.viewmat, truth.K)
    for i, name in KEYPOINT_JOINTS.items():
        keypoints[:, i, :2], keypoints[:, i, 2] = joints[:, body.joint_index(name)], 0.9
    cfg = TrackerConfig(iterations=150)
    elbows = [body.joint_index("left_elbow"), body.joint_index("right_elbow")]

    @torch.no_grad()
    def elbow_error(tracking) -> float:
        joints = body(tracking.pose, tracking.expression, tracking.shape).joints[:, elbows]
        pixels = project_points(joints, tracking.viewmat, tracking.K)
        return float((pixels - keypoints[:, [13, 14], :2]).norm(dim=-1).max())

    faces_only = elbow_error(track_landmarks(body, landmarks, 64, 64, cfg)[0])
    with_keypoints = elbow_error(track_landmarks(body, landmarks, 64, 64, cfg, keypoints=keypoints)[0])
    assert with_keypoints < 1.0 < faces_only, (with_keypoints, faces_only)


def test_keypoints_outside_the_frame_do_not_pull(body):
    """mediapipe places keypoints it cannot see outside the frame with some visibility; they weigh 0."""
    keypoints = torch.full((3, 33, 3), float("nan"))
    keypoints[:, 11] = torch.tensor([10.0, 20.0, 0.9])  # left shoulder, inside a 64×48 frame
    keypoints[:, 12] = torch.tensor([-5.0, 20.0, 0.9])  # right shoulder, left of it
    keypoints[:, 13] = torch.tensor([30.0, 60.0, 0.4])  # left elbow, below it
    keypoints[1, 14] = torch.tensor([63.0, 47.0, 0.5])  # right elbow, inside, in one frame only
    joints, targets, weight = keypoint_targets(body, keypoints, 64, 48)
    assert joints == [body.joint_index(n) for n in KEYPOINT_JOINTS.values()]
    expected = torch.tensor([[0.9, 0.0, 0.0, 0.0], [0.9, 0.0, 0.0, 0.5], [0.9, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(weight, expected)
    assert torch.isfinite(targets).all()


def test_the_landmark_filter_steadies_a_still_face(body, portrait):
    """A still face whose detections jitter: the tracked landmarks move less from frame to frame
    with the landmark filter than without, less again with the trajectory's filter too (the
    defaults), and stay on the face."""
    gen = torch.Generator().manual_seed(1)
    still = portrait.landmarks[:1].expand(16, -1, -1)
    detected = still + 0.5 * torch.randn(still.shape, generator=gen)

    def tracked_steps(cfg: TrackerConfig) -> tuple[float, float]:
        tracking, error = track_landmarks(body, detected, 64, 64, cfg, fps=25.0)
        out = body(tracking.pose, tracking.expression, tracking.shape)
        points = project_points(body.landmarks(out.vertices), tracking.viewmat, tracking.K)
        return float((points[1:] - points[:-1]).norm(dim=-1).mean()), float(error.mean())

    filtered, error = tracked_steps(TrackerConfig(iterations=80))
    landmarks_only, _ = tracked_steps(TrackerConfig(iterations=80, trajectory_min_cutoff=0.0))
    raw, _ = tracked_steps(TrackerConfig(iterations=80, filter_min_cutoff=0.0, trajectory_min_cutoff=0.0))
    assert landmarks_only < 0.6 * raw and error < 1.0  # measured 0.078 against 0.172 px a frame
    assert filtered < 0.6 * landmarks_only, (filtered, landmarks_only)  # measured 0.028 px a frame
