"""Per-frame corrections of the tracking, learned with the Gaussians, as GaussianAvatars does.

Landmark tracking leaves the mesh a pixel or more off the person in many frames (2.5 px on
portrait_lp_d13), and a Gaussian fitted across frames that disagree by that much blurs. The fit may
move each frame's camera and tracked joints by a small correction; the corrections are kept small
and smooth in time, so they remove misalignment without adding the jitter the tracker filtered out.
Pure tensor functions; `model.Portrait` holds the parameters.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .body import rotation_matrix


def corrected_viewmat(viewmat: Tensor, delta: Tensor, depth: float) -> Tensor:
    """world→camera 4×4 moved by `delta` (6: axis-angle, then translation in units of `depth`).

    The rotation turns about the world origin's position in the camera (where the body stands), so
    a small rotation turns the body in place instead of swinging it across the image.
    """
    centre = viewmat[:3, 3]
    R = rotation_matrix(delta[:3])
    top = torch.cat([R, (centre - R @ centre + delta[3:] * depth)[:, None]], 1)
    return torch.cat([top, viewmat.new_tensor([[0.0, 0.0, 0.0, 1.0]])]) @ viewmat


def corrected_pose(pose: Tensor, joints: Tensor, delta: Tensor) -> Tensor:
    """J×3 axis-angle pose with `delta` (K×3) added at `joints` (K): composition to first order."""
    return pose.index_add(0, joints, delta)


def trajectory_roughness(delta: Tensor) -> Tensor:
    """Summed squared frame-to-frame change of a T×… correction, per frame."""
    return (delta[1:] - delta[:-1]).pow(2).sum() / max(1, delta.shape[0] - 1)


def correction_size(delta: Tensor) -> Tensor:
    """Summed squared correction per frame."""
    return delta.pow(2).sum() / max(1, delta.shape[0])
