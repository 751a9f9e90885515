"""The one-euro filter on a solved tracking: each frame's camera and tracked joints, run both ways.

Face landmarks pin the head's position to a pixel but its rotation and distance only loosely: a
landmark's pixel of jitter becomes a hundredth of a radian in the solved camera or neck, which turns
the whole avatar where the source is still. On portrait_lp_d13 that jitter, left in the tracking after
the fit's corrections, is most of the re-rendered shimmer: the same Gaussians rendered along the
trajectory low-passed with a Gaussian of 2 frames had 1.9× the source's warping error instead of 7.3×,
and a higher masked PSNR (bench/RESULTS.md). A fixed low-pass would also flatten a fast head turn, so
the cutoff follows the speed as on the landmarks (`landmark_filter.one_euro`), in radians per second.
"""

from __future__ import annotations

from torch import Tensor

from .body import matrix_to_axis_angle, rotation_matrix
from .landmark_filter import one_euro


def filter_camera(viewmat: Tensor, fps: float, min_cutoff: float, beta: float) -> Tensor:
    """T×4×4 world→camera matrices filtered as rotations relative to the first frame, and translations
    in units of the camera's mean distance (so both speeds read in radians per second)."""
    R0 = viewmat[0, :3, :3]
    turn = matrix_to_axis_angle(viewmat[:, :3, :3] @ R0.T)  # small: a portrait's camera barely turns
    depth = float(viewmat[:, 2, 3].abs().mean().clamp(min=1e-6))
    turn = one_euro(turn[:, None], fps, min_cutoff, beta)[:, 0]
    shift = one_euro(viewmat[:, None, :3, 3] / depth, fps, min_cutoff, beta)[:, 0] * depth
    out = viewmat.clone()
    out[:, :3, :3] = rotation_matrix(turn) @ R0
    out[:, :3, 3] = shift
    return out


def filter_pose(pose: Tensor, joints: Tensor, fps: float, min_cutoff: float, beta: float) -> Tensor:
    """T×J×3 axis-angle pose with the rotations of `joints` (indices) filtered; the others as they are.

    The tracked joints turn by a fraction of a radian from rest, where axis-angle vectors average
    as rotations do.
    """
    out = pose.clone()
    out[:, joints] = one_euro(pose[:, joints], fps, min_cutoff, beta)
    return out


def filter_trajectory(
    pose: Tensor, viewmat: Tensor, joints: Tensor, fps: float, min_cutoff: float, beta: float
) -> tuple[Tensor, Tensor]:
    """`filter_pose` and `filter_camera` together: the solve trades a camera turn against a neck turn
    from frame to frame, so one filtered alone leaves the other's jitter (bench/RESULTS.md).
    `min_cutoff` ≤ 0 returns both as they are."""
    if min_cutoff <= 0:
        return pose, viewmat
    return filter_pose(pose, joints, fps, min_cutoff, beta), filter_camera(viewmat, fps, min_cutoff, beta)
