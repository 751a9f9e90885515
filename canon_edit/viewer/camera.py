"""A browser camera as a renderer's camera, and back: viser and the portrait renderer both use
OpenCV's convention (x right, y down, z forward), so only the representation differs.

viser reports the camera-to-world rotation as a quaternion (w, x, y, z), its position and its
vertical field of view; a renderer wants world-to-camera `viewmat` (4×4) and intrinsics `K` (3×3).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def quaternion_matrix(wxyz: tuple[float, float, float, float]) -> Tensor:
    """3×3 rotation of a (w, x, y, z) quaternion of any norm."""
    w, x, y, z = (float(v) for v in wxyz)
    n = math.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / n, x / n, y / n, z / n
    return torch.tensor(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def viewmat_from_pose(
    wxyz: tuple[float, float, float, float], position: tuple[float, float, float]
) -> Tensor:
    """World-to-camera 4×4 from the camera-to-world rotation and the camera's position."""
    r = quaternion_matrix(wxyz)
    view = torch.eye(4)
    view[:3, :3] = r.T
    view[:3, 3] = -r.T @ torch.tensor([float(v) for v in position])
    return view


def intrinsics(fov_y: float, width: int, height: int) -> Tensor:
    """3×3 K of a pinhole with vertical field of view `fov_y` (radians), square pixels, centred."""
    f = height / 2 / math.tan(fov_y / 2)
    return torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])


def fov_y(K: Tensor, height: int) -> float:
    """Vertical field of view (radians) of intrinsics `K` for an image `height` pixels tall."""
    return 2 * math.atan(height / 2 / float(K[1, 1]))


def look_from_viewmat(viewmat: Tensor, distance: float) -> tuple[Tensor, Tensor, Tensor]:
    """(position, look_at, up) of a world-to-camera matrix, looking `distance` ahead: what viser takes."""
    r = viewmat[:3, :3].float()
    position = -r.T @ viewmat[:3, 3].float()
    forward, down = r[2], r[1]
    return position, position + distance * forward, -down


def matrix_quaternion(r: Tensor) -> tuple[float, float, float, float]:
    """(w, x, y, z) of a 3×3 rotation (Shepperd's method: stable for every angle)."""
    m = r.double()
    trace = float(m[0, 0] + m[1, 1] + m[2, 2])
    if trace > 0:
        s = 2 * math.sqrt(trace + 1)
        q = (s / 4, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s)
    else:
        i = int(torch.argmax(torch.diagonal(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2 * math.sqrt(float(1 + m[i, i] - m[j, j] - m[k, k]))
        v = [0.0, 0.0, 0.0]
        v[i] = s / 4
        v[j] = float(m[j, i] + m[i, j]) / s
        v[k] = float(m[k, i] + m[i, k]) / s
        q = (float(m[k, j] - m[j, k]) / s, *v)
    return tuple(float(x) for x in q)  # type: ignore[return-value]
