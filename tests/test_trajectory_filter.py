"""The one-euro filter on a solved trajectory: a still camera's jitter goes, a head turn keeps its motion."""

from __future__ import annotations

import math

import torch

from canon_edit_representations.portrait.body import matrix_to_axis_angle, rotation_matrix
from canon_edit_representations.portrait.trajectory_filter import filter_camera, filter_pose

FPS = 30.0
T = 90
# a portrait camera looks at the body from +z: its world→camera rotation is half a turn about y, where
# axis-angle vectors cannot be averaged; the filter must work relative to the clip's own rotation
FACING = rotation_matrix(torch.tensor([0.0, math.pi - 1e-3, 0.0]))


def _viewmats(turn: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """T×4×4 world→camera: FACING turned by `turn` (T×3 axis-angle), at 2.5 units plus `shift` (T×3)."""
    viewmat = torch.eye(4).repeat(len(turn), 1, 1)
    viewmat[:, :3, :3] = rotation_matrix(turn) @ FACING
    viewmat[:, :3, 3] = torch.tensor([0.0, 0.0, 2.5]) + shift
    return viewmat


def _turn(viewmat: torch.Tensor) -> torch.Tensor:
    return matrix_to_axis_angle(viewmat[:, :3, :3] @ FACING.T)


def _jitter(scale: float, seed: int) -> torch.Tensor:
    return scale * torch.randn(T, 3, generator=torch.Generator().manual_seed(seed))


def test_a_still_cameras_jitter_goes_and_its_rotations_stay_rotations():
    noisy = _viewmats(_jitter(0.01, 0), _jitter(0.01, 1))
    filtered = filter_camera(noisy, FPS, min_cutoff=1.0, beta=0.5)

    def rms_step(x: torch.Tensor) -> float:
        return float((x[1:] - x[:-1]).pow(2).sum(-1).mean().sqrt())

    assert rms_step(_turn(filtered)) < rms_step(_turn(noisy)) / 4
    assert rms_step(filtered[:, :3, 3]) < rms_step(noisy[:, :3, 3]) / 4
    assert float(_turn(filtered).norm(dim=-1).max()) < 0.015  # it stays where the camera is, facing back
    R = filtered[:, :3, :3]
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3).expand(T, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(filtered[:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(T, 4))


def test_a_head_turn_keeps_its_motion():
    """0.5 rad in a third of a second and back, jittered: followed to a few hundredths of a radian."""
    angle = torch.zeros(T)
    angle[30:40] = torch.linspace(0.05, 0.5, 10)
    angle[40:50] = 0.5
    angle[50:60] = torch.linspace(0.45, 0.0, 10)
    truth = torch.stack([torch.zeros(T), angle, torch.zeros(T)], 1)
    filtered = filter_camera(_viewmats(truth + _jitter(0.005, 2), torch.zeros(T, 3)), FPS, 1.0, 0.5)
    error = (_turn(filtered) - truth).norm(dim=-1)
    assert float(error.max()) < 0.06, float(error.max())
    fixed = filter_camera(_viewmats(truth + _jitter(0.005, 2), torch.zeros(T, 3)), FPS, 1.0, 0.0)
    assert float((_turn(fixed) - truth).norm(dim=-1).max()) > 1.5 * float(error.max())


def test_filter_pose_moves_only_the_joints_it_is_given():
    pose = 0.1 * torch.randn(T, 5, 3, generator=torch.Generator().manual_seed(3))
    filtered = filter_pose(pose, torch.tensor([1, 3]), FPS, 1.0, 0.5)
    assert torch.equal(filtered[:, [0, 2, 4]], pose[:, [0, 2, 4]])
    assert not torch.allclose(filtered[:, [1, 3]], pose[:, [1, 3]])
