"""Per-frame body parameters and cameras: the tracking a portrait fit is built on.

PortraitGen folds the global rotation/translation into the camera; we keep both the root joint's
pose and a per-frame camera, so imported tracking of either style fits. Shape is shared by every
frame of a clip.

JSON layout (``tracking.json``; lists of numbers, T = number of frames)::

    {
      "format": "canon-edit-tracking", "version": 1,
      "body": "smplx" | "anny",            # the body model the parameters belong to
      "width": W, "height": H,             # the image size the cameras are expressed in
      "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],      # pixels, pixel centres at integer + 0.5
      "frames": [                          # one entry per frame, in order
        {"viewmat": 4×4 world→camera (OpenCV: x right, y down, z forward),
         "pose": J×3 axis-angle per joint (the body model's joint order, root first),
         "expression": E numbers},
        ...
      ],
      "shape": S numbers
    }
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from canon_edit.atomic import write_json
from canon_edit.errors import UserError

from .body import BodyModel, rotation_matrix
from .camera import Camera
from .landmark_filter import one_euro
from .trajectory_filter import filter_trajectory

FORMAT = "canon-edit-tracking"


@dataclass
class Tracking:
    pose: Tensor  # T×J×3 axis-angle
    expression: Tensor  # T×E
    shape: Tensor  # 1×S
    viewmat: Tensor  # T×4×4 world → camera
    K: Tensor  # 3×3
    width: int
    height: int
    body: str = "smplx"

    @property
    def T(self) -> int:
        return int(self.pose.shape[0])

    def camera(self, t: int) -> Camera:
        """Frame t's camera."""
        return Camera(self.viewmat[t], self.K, self.width, self.height)

    def to(self, device: torch.device | str) -> Tracking:
        return Tracking(
            self.pose.to(device), self.expression.to(device), self.shape.to(device),
            self.viewmat.to(device), self.K.to(device), self.width, self.height, self.body,
        )  # fmt: skip

    def rescaled(self, width: int, height: int) -> Tracking:
        """The same cameras for images resized to `width`×`height` (intrinsics scale with pixels)."""
        K = self.K.clone()
        K[0] *= width / self.width
        K[1] *= height / self.height
        return Tracking(self.pose, self.expression, self.shape, self.viewmat, K, width, height, self.body)

    def save(self, path: str | Path) -> None:
        write_json(
            path,
            {
                "format": FORMAT,
                "version": 1,
                "body": self.body,
                "width": self.width,
                "height": self.height,
                "K": self.K.tolist(),
                "frames": [
                    {"viewmat": v.tolist(), "pose": p.tolist(), "expression": e.tolist()}
                    for v, p, e in zip(self.viewmat, self.pose, self.expression, strict=True)
                ],
                "shape": self.shape[0].tolist(),
            },
        )


def load_tracking(path: str | Path, frames: int, joints: int | None = None) -> Tracking:
    """Read a tracking JSON (layout in the module docstring) for a clip of `frames` frames."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"tracking: {path} does not exist; give a tracking.json written by canon-edit")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"tracking: {path} is not valid JSON ({e}); give a canon-edit tracking.json") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(
            f'tracking: {path} is not a canon-edit tracking file (no "format": "{FORMAT}"); '
            "see representations/portrait/tracking.py for the layout"
        )
    entries = data.get("frames", [])
    if len(entries) != frames:
        raise UserError(
            f"tracking: {path} has {len(entries)} frames but the clip has {frames}; "
            "track the same frames (same --max-frames/--stride)"
        )
    try:
        pose = torch.tensor([e["pose"] for e in entries], dtype=torch.float32)
        expression = torch.tensor([e["expression"] for e in entries], dtype=torch.float32)
        viewmat = torch.tensor([e["viewmat"] for e in entries], dtype=torch.float32)
        K = torch.tensor(data["K"], dtype=torch.float32)
        shape = torch.tensor(data["shape"], dtype=torch.float32)[None]
        width, height = int(data["width"]), int(data["height"])
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(
            f"tracking: {path} misses or mis-shapes a field ({e}); "
            "see representations/portrait/tracking.py for the layout"
        ) from None
    if pose.ndim != 3 or pose.shape[2] != 3 or viewmat.shape[1:] != (4, 4) or K.shape != (3, 3):
        raise UserError(
            f"tracking: {path} has pose {tuple(pose.shape)}, viewmat {tuple(viewmat.shape)}, "
            f"K {tuple(K.shape)}; expected T×J×3, T×4×4 and 3×3"
        )
    if joints is not None and pose.shape[1] != joints:
        raise UserError(
            f"tracking: {path} poses {pose.shape[1]} joints but the body model has {joints}; "
            "track with the same --body"
        )
    return Tracking(pose, expression, shape, viewmat, K, width, height, str(data.get("body", "smplx")))


def look_at_viewmat(eye: Tensor, target: Tensor) -> Tensor:
    """World→camera (OpenCV) for a camera at `eye` looking at `target`, body-space y up."""
    forward = torch.nn.functional.normalize(target - eye, dim=0)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up), dim=0)
    down = torch.linalg.cross(forward, right)
    R = torch.stack([right, down, forward])
    viewmat = torch.eye(4, dtype=eye.dtype)
    viewmat[:3, :3] = R
    viewmat[:3, 3] = -R @ eye
    return viewmat


def fill_missing(landmarks: Tensor, max_missing: float = 0.5) -> tuple[Tensor, list[int]]:
    """Frames without a detection (any NaN) get landmarks interpolated from their neighbours.

    Returns the filled T×L×2 landmarks and the filled frame indices; more than `max_missing` of the
    frames missing is an error, since interpolating most of a clip would invent the motion.
    """
    ok = torch.isfinite(landmarks).flatten(1).all(1)
    missing = (~ok).nonzero().squeeze(1).tolist()
    if not missing:
        return landmarks, []
    T = len(landmarks)
    if ok.sum() == 0 or len(missing) > max_missing * T:
        raise UserError(
            f"no face found in {len(missing)} of {T} frames; give a clip where the face is visible "
            "in most frames (or trim it with --max-frames/--stride)"
        )
    good = ok.nonzero().squeeze(1)
    filled = landmarks.clone()
    for t in missing:
        after = good[good > t]
        before = good[good < t]
        if len(before) == 0 or len(after) == 0:
            filled[t] = landmarks[int(after[0] if len(before) == 0 else before[-1])]
            continue
        a, b = int(before[-1]), int(after[0])
        w = (t - a) / (b - a)
        filled[t] = (1 - w) * landmarks[a] + w * landmarks[b]
    return filled, missing


@dataclass
class TrackerConfig:
    iterations: int = 200
    lr: float = 0.04
    smooth_weight: float = 1.0  # on frame-to-frame changes of the head's joints and the expression
    # the same for the camera and the arm joints, which change slowly in a portrait. At 1,
    # portrait_lp_d13's right shoulder flipped between two equally good rotations every few frames,
    # and the camera with it: a shimmer over the whole person (bench/RESULTS.md). The face keeps
    # the lighter weight: a jaw can open and close within six frames.
    body_smooth_weight: float = 10.0
    pose_weight: float = 1e-3  # keeps joint rotations (and expressions) small where landmarks are silent
    # face landmarks alone cannot tell a head turn from a camera orbit; the orbit also swings the
    # shoulders off the person, so the camera's deviation from its clip mean costs more than a head turn
    camera_weight: float = 1.0
    huber_px: float = 2.0  # robust loss: landmarks further off than this count linearly
    tracked_joints: tuple[str, ...] = ("neck", "head", "jaw")  # those the body has (anny fullbody: no jaw)
    # tracked too when body keypoints are given: the shoulders and arms a portrait's torso hangs on
    arm_joints: tuple[str, ...] = ("left_collar", "right_collar", "left_shoulder", "right_shoulder")
    keypoint_weight: float = 1.0  # body keypoints (× their visibility) against face landmarks
    # the one-euro filter on the detected face landmarks before tracking (landmark_filter.py): the
    # cutoff in Hz while still, and its rise per face size (the landmarks' mean distance from their
    # centre) per second of speed; 0 leaves them as detected. Measured on portrait_lp_d13
    # (bench/RESULTS.md): the median joint step −21%, the re-rendered warping error −16%, for 0.09 px
    # more landmark error against the raw detections; min_cutoff 0.5 smoothed less well there.
    filter_min_cutoff: float = 1.0
    filter_beta: float = 2.0
    # the one-euro filter on the solved trajectory (trajectory_filter.py): the camera and these joints,
    # the cutoff in Hz while still and its rise per radian per second; 0 leaves the solve as it is. The
    # jaw is left out: it follows the (filtered) landmarks of a mouth that moves faster than a head.
    # On portrait_lp_d13, rendering the fitted avatar along the filtered trajectory took its warping
    # error from 7.3x the source's to 1.4x, with 0.65 dB more masked PSNR; beta 2 smoothed less (2.2x).
    # Both were measured when the filter took each step's size before low-passing the speed, which
    # counted jitter as speed; with the velocity low-passed first the command gives the same
    # figures (bench/RESULTS.md).
    trajectory_min_cutoff: float = 1.0
    trajectory_beta: float = 0.5
    trajectory_joints: tuple[str, ...] = (
        "neck", "head", "left_collar", "right_collar", "left_shoulder", "right_shoulder",
    )  # fmt: skip
    focal: float = 0.0  # pixels; 0 = 1.8 × the image's short side (a portrait lens)


def project_points(points: Tensor, viewmat: Tensor, K: Tensor) -> Tensor:
    """…×N×3 world points through world→camera `viewmat` (…×4×4) and intrinsics K → …×N×2 pixels."""
    cam = points @ viewmat[..., :3, :3].transpose(-1, -2) + viewmat[..., None, :3, 3]
    uv = cam[..., :2] / cam[..., 2:].clamp(min=1e-6)
    return uv * torch.stack([K[0, 0], K[1, 1]]) + K[:2, 2]


# mediapipe pose landmark index → the common joint name it marks (the person's left, image right)
KEYPOINT_JOINTS = {11: "left_shoulder", 12: "right_shoulder", 13: "left_elbow", 14: "right_elbow"}


def keypoint_targets(
    body: BodyModel, keypoints: Tensor, width: int, height: int
) -> tuple[list[int], Tensor, Tensor]:
    """Body joints marked by mediapipe pose keypoints T×33×3: joint ids, T×K×2 pixels, T×K weights.

    The weight is the detector's visibility, and 0 where it found no person or placed the keypoint
    outside the frame: there it only guesses. On portrait_lp_d13 such a guess (an elbow 60 px left
    of and 40 px below the frame, visibility 0.42) gave the right shoulder two equally good rotations.
    """
    pairs = [(i, body.joint_index(n)) for i, n in KEYPOINT_JOINTS.items() if n in body.joint_names]
    points = keypoints[:, [i for i, _ in pairs]]
    x, y = points[..., 0], points[..., 1]
    inside = (x >= 0) & (x <= width) & (y >= 0) & (y <= height)
    weight = torch.where(inside, torch.nan_to_num(points[..., 2], nan=0.0).clamp(0, 1), 0.0)
    return [j for _, j in pairs], torch.nan_to_num(points[..., :2], nan=0.0), weight


def _steps(x: Tensor) -> Tensor:
    """Squared frame-to-frame changes of per-frame parameters (T×… → (T-1)×…)."""
    return (x[1:] - x[:-1]) ** 2


def annealed_lr_factor(iteration: int, iterations: int, floor: float = 0.05) -> float:
    """1 for the first half of the iterations, then a half-cosine down to `floor`."""
    progress = max(0.0, iteration / max(1, iterations) - 0.5) * 2
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def track_landmarks(
    body: BodyModel,
    landmarks: Tensor,
    width: int,
    height: int,
    cfg: TrackerConfig | None = None,
    keypoints: Tensor | None = None,
    fps: float = 30.0,
) -> tuple[Tracking, Tensor]:
    """Fit per-frame camera, head/arm pose and expression, and a shared shape, to 2D landmarks.

    ``landmarks`` T×L×2 pixels (NaN rows = no detection; filled by `fill_missing`) correspond to
    ``body.landmarks``; optional ``keypoints`` T×33×3 (mediapipe pose: x, y, visibility) place the
    shoulders and arms, so a torso-length body lines up with the person below the face. The camera
    starts frontal at the distance that matches the landmarks' spread; everything is optimised
    jointly over the clip with a temporal smoothness term, to the landmarks after `cfg`'s one-euro
    filter (at the clip's `fps`); the solved camera and head and arm joints are then one-euro filtered
    too (`cfg.trajectory_*`). Returns the tracking and the per-frame mean landmark error in pixels,
    against the landmarks as detected.
    """
    if body.landmark_faces.numel() == 0:
        raise UserError(
            f"the {body.name} body model has no face landmarks on its mesh, so it cannot be tracked; use "
            "--body smplx, give --tracking, or for anny re-run scripts/make_anny_landmarks.py for its variant"
        )
    cfg = cfg or TrackerConfig()
    landmarks, missing = fill_missing(landmarks)
    if missing:
        warnings.warn(
            f"no face found in frames {missing}; their landmarks were interpolated from neighbouring frames",
            stacklevel=2,
        )
    spread2d = (landmarks - landmarks.mean(1, keepdim=True)).norm(dim=-1).mean()  # the face's size, px
    # filtered in face sizes, so the speed that opens the filter is the same at any resolution
    smoothed = one_euro(landmarks / spread2d, fps, cfg.filter_min_cutoff, cfg.filter_beta) * spread2d
    detected, landmarks = landmarks, smoothed
    T = len(landmarks)
    f = cfg.focal or 1.8 * min(width, height)
    K = torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])
    zero = body.zero_params(1)
    with torch.no_grad():
        rest_lm = body.landmarks_and_joints(**zero)[0][0]
    centre = rest_lm.mean(0)
    spread3d = (rest_lm[:, :2] - centre[:2]).norm(dim=-1).mean()
    distance = float(f * spread3d / spread2d)
    base = look_at_viewmat(centre + torch.tensor([0.0, 0.0, distance]), centre)
    # the landmarks' centroid sets the initial lateral offset of the camera
    shift = (landmarks.mean(1) - K[:2, 2]) / f * distance  # T×2
    cam_rot = torch.zeros(T, 3, requires_grad=True)
    cam_trans = torch.cat([shift, torch.zeros(T, 1)], 1).requires_grad_(True)
    names = list(cfg.tracked_joints) + (list(cfg.arm_joints) if keypoints is not None else [])
    tracked = [name for name in names if name in body.joint_names]
    joints = [body.joint_index(name) for name in tracked]
    kp_joints, kp_target, kp_weight = (
        keypoint_targets(body, keypoints, width, height) if keypoints is not None else ([], None, None)
    )
    joint_rot = torch.zeros(T, len(joints), 3, requires_grad=True)
    joint_smooth = torch.tensor(
        [cfg.body_smooth_weight if name in cfg.arm_joints else cfg.smooth_weight for name in tracked]
    )[:, None]
    expression = torch.zeros(T, body.n_expression, requires_grad=True)
    shape = torch.zeros(1, body.n_shape, requires_grad=True)
    optimizer = torch.optim.Adam([cam_rot, cam_trans, joint_rot, expression, shape], lr=cfg.lr)
    # constant for the first half, then cosine down to 5%: a constant step leaves the per-frame
    # parameters of a real clip jittering around their optimum (portrait_lp_d13: 5.3 px, annealed 3.0 px)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: annealed_lr_factor(i, cfg.iterations))

    def assemble() -> tuple[Tensor, Tensor]:
        pose = torch.zeros(T, body.n_joints, 3).index_copy(1, torch.tensor(joints), joint_rot)
        R = rotation_matrix(cam_rot) @ base[:3, :3]
        viewmat = torch.eye(4).repeat(T, 1, 1)
        viewmat = torch.cat([torch.cat([R, (base[:3, 3] + cam_trans)[..., None]], 2), viewmat[:, 3:]], 1)
        return pose, viewmat

    for _ in range(cfg.iterations):
        pose, viewmat = assemble()
        points, posed_joints = body.landmarks_and_joints(pose, expression, shape)
        pred = project_points(points, viewmat, K)
        data = torch.nn.functional.huber_loss(pred, landmarks, delta=cfg.huber_px)
        if kp_joints:
            kp = project_points(posed_joints[:, kp_joints], viewmat, K)
            per_point = torch.nn.functional.huber_loss(kp, kp_target, delta=cfg.huber_px, reduction="none")
            data = data + cfg.keypoint_weight * (per_point.mean(-1) * kp_weight).mean()
        smooth = (
            cfg.body_smooth_weight * (_steps(cam_rot).mean() + _steps(cam_trans * 10).mean())
            + (_steps(joint_rot) * joint_smooth).mean()
            + cfg.smooth_weight * _steps(expression).mean()
        )
        prior = (joint_rot**2).mean() + (expression**2).mean() + (shape**2).mean()
        orbit = ((cam_rot - cam_rot.mean(0)) ** 2).mean() + (
            ((cam_trans - cam_trans.mean(0)) * 10) ** 2
        ).mean()
        loss = data + smooth + cfg.pose_weight * prior + cfg.camera_weight * orbit
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        pose, viewmat = assemble()
        kept = [j for n, j in zip(tracked, joints, strict=True) if n in cfg.trajectory_joints]
        kept_joints = torch.tensor(kept, dtype=torch.long)
        pose, viewmat = filter_trajectory(
            pose, viewmat, kept_joints, fps, cfg.trajectory_min_cutoff, cfg.trajectory_beta
        )
        pred = project_points(body.landmarks_and_joints(pose, expression, shape)[0], viewmat, K)
        error = (pred - detected).norm(dim=-1).mean(1)
    tracking = Tracking(
        pose.detach(), expression.detach(), shape.detach(), viewmat.detach(), K, width, height, body.name
    )
    return tracking, error
