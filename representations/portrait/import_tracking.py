"""Import PortraitGen's SMPL-X tracking (``body_track/smplx_track.pth``) as a `Tracking`.

The layout is what PortraitGen's ``GaussianScene.load_smplx_track`` reads
(USTC3DV/PortraitGen-code, code/gaussian_training/scene_adteeth/gaussian_scene.py; the SMPL-X forward
pass is ``ADGaussianGeo.compute_canonical_points_rott`` in geometry.py): a dict of numpy arrays (or
tensors), T = number of frames::

    body_pose   T×63  axis-angle of SMPL-X joints 1..21 (left_hip … right_wrist), or T×21×3
    jaw_pose    T×3   joint 22
    lhand_pose  T×45  joints 25..39, relative to the model file's mean hand (smplx flat_hand_mean=False)
    rhand_pose  T×45  joints 40..54, likewise
    expr        T×E   expression coefficients (PortraitGen uses E = 100)
    shape       1×S   identity coefficients shared by the clip (S = 300); T×S with equal rows is accepted
    cam_angle   T×3   axis-angle, R = exp(cam_angle) (pytorch3d so3_exp_map)
    cam_trans   T×3
    cam_para    1×4   fx, fy, cx, cy in pixels of a 2cx × 2cy image (T×4 with equal rows is accepted)

What changes on import:

- Pose: T×55×3 in SMPL-X joint order, root (0), body (1..21), jaw (22), eyes (23, 24), hands (25..54).
  PortraitGen poses the mesh without global orientation, translation or eye rotation (folded into
  the camera, or unused), so the root and eyes stay 0 and keys such as global_orient are not read.
- Hands: our SMPL-X body takes absolute joint rotations (flat hand mean), so the model file's
  ``hands_meanl``/``hands_meanr`` are added, as smplx adds them to PortraitGen's poses.
- Camera: PortraitGen builds a 3DGS camera from R' = R·diag(1,-1,-1) and t' = diag(1,-1,-1)·t, whose
  world→view matrix is [R'ᵀ | t'] (getWorld2View); that is OpenCV (x right, y down, z forward), so
  our viewmat is [diag(1,-1,-1)·Rᵀ | diag(1,-1,-1)·t]: their camera frame is OpenGL-like (y up, z
  back), which their landmark projection u = -fx·X/Z + cx, v = fy·Y/Z + cy also shows.
- Intrinsics: K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] and the image is 2cx × 2cy (as PortraitGen
  sizes driving videos); the 3DGS rasteriser puts the principal point at the image centre, which
  in our convention (pixel centres at integer + 0.5) is (W/2, H/2) = (cx, cy).
- Shape and expression keep the file's coefficient counts; `fit_coefficients` pads or cuts them to
  a body model's.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from canon_edit.errors import UserError

from .body import BodyModel, find_smplx_file, rotation_matrix
from .tracking import Tracking

# key → (shape per frame, what it holds); "S"/"E" are free sizes
LAYOUT = {
    "body_pose": ((63,), "axis-angle of SMPL-X joints 1..21"),
    "jaw_pose": ((3,), "jaw axis-angle"),
    "lhand_pose": ((45,), "left-hand axis-angles (15 joints, relative to the mean hand)"),
    "rhand_pose": ((45,), "right-hand axis-angles (15 joints, relative to the mean hand)"),
    "expr": (("E",), "expression coefficients"),
    "cam_angle": ((3,), "camera axis-angle"),
    "cam_trans": ((3,), "camera translation"),
}
SHARED = {"shape": "S identity coefficients", "cam_para": "fx, fy, cx, cy in pixels"}
FLIP_YZ = torch.diag(torch.tensor([1.0, -1.0, -1.0]))
N_JOINTS = 55


def _safe_globals() -> list:
    """numpy arrays, and nothing else beyond tensors, may come out of the pickle."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return [
        (_reconstruct, "numpy.core.multiarray._reconstruct"),  # files written under numpy 1.x
        (_reconstruct, "numpy._core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
        *(
            type(np.dtype(code))
            for code in ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "?")
        ),
    ]


def read_track_file(path: Path) -> dict[str, Tensor]:
    """The .pth's dict of arrays as float32 tensors, without unpickling anything but arrays."""
    if not path.is_file():
        raise UserError(f"tracking: {path} does not exist; give PortraitGen's body_track/smplx_track.pth")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch names a global outside its allow-list, or one from a module it blocks (os, subprocess, ...)
        found = re.search(
            r"GLOBAL (\S+) (?:was not an allowed|whose module)|but got <class '([^']+)'>", str(e)
        )
        if found:
            raise UserError(
                f"tracking: {path} holds Python objects ({found.group(1) or found.group(2)}) that canon-edit "
                "does not unpickle; re-save it as a dict of numpy arrays or tensors"
            ) from None
        raise UserError(
            f"tracking: {path} is not a readable torch file; give PortraitGen's smplx_track.pth"
        ) from None
    except (RuntimeError, OSError, EOFError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"tracking: {path} is not a readable torch file ({reason})") from None
    if not isinstance(data, dict):
        raise UserError(f"tracking: {path} holds a {type(data).__name__}, not PortraitGen's dict of arrays")
    out = {}
    for key, value in data.items():
        if isinstance(value, (np.ndarray, Tensor)) and np.issubdtype(np.asarray(value).dtype, np.number):
            out[str(key)] = torch.as_tensor(np.asarray(value), dtype=torch.float32)
    return out


def _expected() -> str:
    per_frame = ", ".join(f"{k} T×{'×'.join(map(str, s))}" for k, (s, _) in LAYOUT.items())
    return f"expected {per_frame}, shape 1×S, cam_para 1×4 (PortraitGen's smplx_track.pth)"


def _shared_row(path: Path, key: str, value: Tensor, frames: int, size: int | None) -> Tensor:
    """A per-clip value stored as (n,), 1×n or T×n with equal rows → n."""
    ok = value.ndim == 1 or (value.ndim == 2 and len(value) in (1, frames))
    if not ok or (size is not None and value.shape[-1] != size):
        raise UserError(
            f"tracking: {path} has {key} of shape {tuple(value.shape)}; expected 1×"
            f"{size or 'S'} ({SHARED[key]}) for a clip of {frames} frames"
        )
    rows = value.reshape(-1, value.shape[-1])
    if (rows - rows[:1]).abs().max() > 1e-6:
        raise UserError(
            f"tracking: {path} has a {key} that changes over frames; canon-edit needs one per clip"
        )
    return rows[0]


def hands_mean(model_dir: str | Path | None) -> Tensor:
    """30×3: the mean hand pose (left, right) of the SMPL-X file that PortraitGen's poses are relative to."""
    path = find_smplx_file(model_dir)
    with np.load(path, allow_pickle=False) as data:
        if "hands_meanl" not in data or "hands_meanr" not in data:
            return torch.zeros(30, 3)
        left, right = np.asarray(data["hands_meanl"]), np.asarray(data["hands_meanr"])
    return torch.as_tensor(np.concatenate([left, right]), dtype=torch.float32).reshape(30, 3)


def import_portraitgen(path: str | Path, frames: int, hand_mean: Tensor | None = None) -> Tracking:
    """Read ``smplx_track.pth`` (layout and conventions in the module docstring) for a clip of `frames`.

    `hand_mean` (30×3, from `hands_mean`) is added to the hand poses; None leaves them as stored.
    """
    path = Path(path)
    data = read_track_file(path)
    missing = [k for k in (*LAYOUT, *SHARED) if k not in data]
    if missing:
        raise UserError(f"tracking: {path} has no '{missing[0]}'; {_expected()}")
    per_frame = {}
    for key, (shape, what) in LAYOUT.items():
        value = data[key]
        if key == "body_pose" and value.ndim == 3:
            value = value.reshape(len(value), -1)
        want = tuple(value.shape[1:2]) if shape == ("E",) else shape
        if value.ndim != 2 or len(value) != frames or tuple(value.shape[1:]) != want:
            raise UserError(
                f"tracking: {path} has {key} of shape {tuple(value.shape)}; expected {frames}×"
                f"{'×'.join(map(str, shape))} ({what}, one row per frame: same --max-frames/--stride)"
            )
        per_frame[key] = value
    shape_coeffs = _shared_row(path, "shape", data["shape"], frames, None)
    fx, fy, cx, cy = _shared_row(path, "cam_para", data["cam_para"], frames, 4).tolist()

    T = frames
    pose = torch.zeros(T, N_JOINTS, 3)
    pose[:, 1:22] = per_frame["body_pose"].reshape(T, 21, 3)
    pose[:, 22] = per_frame["jaw_pose"]
    pose[:, 25:40] = per_frame["lhand_pose"].reshape(T, 15, 3)
    pose[:, 40:55] = per_frame["rhand_pose"].reshape(T, 15, 3)
    if hand_mean is not None:
        pose[:, 25:55] += hand_mean
    R = rotation_matrix(per_frame["cam_angle"])
    viewmat = torch.eye(4).repeat(T, 1, 1)
    viewmat[:, :3, :3] = FLIP_YZ @ R.transpose(1, 2)
    viewmat[:, :3, 3] = per_frame["cam_trans"] @ FLIP_YZ
    K = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    width, height = round(2 * cx), round(2 * cy)
    return Tracking(pose, per_frame["expr"], shape_coeffs[None], viewmat, K, width, height, "smplx")


def fit_coefficients(tracking: Tracking, body: BodyModel) -> Tracking:
    """`tracking` with shape and expression padded with zeros or cut to `body`'s counts.

    Cutting drops detail, so it warns when the dropped coefficients are not (near) zero.
    """

    def fit(x: Tensor, n: int, what: str) -> Tensor:
        if x.shape[1] > n and x[:, n:].abs().max() > 1e-4:
            warnings.warn(
                f"the tracking has {x.shape[1]} {what} coefficients but the body model uses {n}; "
                f"the rest (up to {float(x[:, n:].abs().max()):.3g}) are dropped",
                stacklevel=3,
            )
        return torch.cat([x[:, :n], x.new_zeros(len(x), max(0, n - x.shape[1]))], 1)

    return Tracking(
        tracking.pose, fit(tracking.expression, body.n_expression, "expression"),
        fit(tracking.shape, body.n_shape, "shape"), tracking.viewmat, tracking.K,
        tracking.width, tracking.height, tracking.body,
    )  # fmt: skip
