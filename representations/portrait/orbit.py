"""Novel viewpoints of the avatar: the tracked camera swung around the head (DynVideo-E's promise).

A turn by (yaw, pitch) rotates the camera about the head's centre, in the camera's own frame, so
yaw swings it left/right around the vertical image axis and pitch over/under it, whatever the
tracked camera's pose was. The head's centre is the midpoint of the head joint and the face
landmarks' centroid: the joint sits at the skull's base, the landmarks on the face's surface.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor

from .body import BodyModel, rotation_matrix
from .camera import Camera
from .tracking import Tracking


@torch.no_grad()
def head_centre(body: BodyModel, tracking: Tracking, t: int) -> Tensor:
    """The head's centre in world coordinates in frame t (3,)."""
    out = body(tracking.pose[t : t + 1], tracking.expression[t : t + 1], tracking.shape)
    face = body.landmarks(out.vertices)[0].mean(0)
    return 0.5 * (face + out.joints[0, body.joint_index("head")])


def turned_camera(camera: Camera, centre: Tensor, yaw: float, pitch: float) -> Camera:
    """`camera` swung by yaw and pitch (degrees) around the world point `centre`."""
    c = camera.viewmat[:3, :3] @ centre + camera.viewmat[:3, 3]  # the centre in camera coordinates
    turn = rotation_matrix(torch.tensor([math.radians(pitch), math.radians(yaw), 0.0]).to(c))
    move = torch.eye(4, dtype=camera.viewmat.dtype)
    move[:3, :3] = turn
    move[:3, 3] = c - turn @ c
    return replace(camera, viewmat=move @ camera.viewmat)


def orbit_angles(T: int, degrees: float) -> list[tuple[float, float]]:
    """(yaw, pitch) per frame: one swing to ±degrees in yaw and two in pitch (half as far) over the clip."""
    phase = [2 * math.pi * t / max(T, 1) for t in range(T)]
    return [(degrees * math.sin(p), 0.5 * degrees * math.sin(2 * p)) for p in phase]
