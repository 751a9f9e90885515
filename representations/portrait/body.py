"""Parametric body models behind one protocol, so the portrait fit never knows which one it drives.

Every model maps per-frame parameters to a posed mesh in *body space*: metres, y up, the face
looking towards +z (SMPL-X's convention; anny is rotated into it). Parameters, batched over B:

- ``pose``        B×J×3  axis-angle rotation of each joint relative to its parent, in the model's
                         own joint frames; joint 0 is the root (global orientation). The order is
                         ``model.joint_names``; ``model.joint_index("neck")`` finds a joint by its
                         common name (pelvis, spine1-3, neck, head, jaw, left_eye, right_eye, ...).
- ``expression``  B×E    expression coefficients (SMPL-X expression PCA, anny face units in [0, 1]).
- ``shape``       B×S    identity coefficients, shared by every frame of a clip (B may be 1).

Models: SMPL-X through the ``smplx`` package from files the user names (registration-gated, never
shipped) and ``anny`` (Apache-2.0 code, CC0 assets, installs from PyPI). Tests and benchmarks load
a generated SMPL-X-format file (synthetic_body.py) through the real SMPL-X path.

SMPL-X files are read without unpickling anything, because a model folder may come from someone
else. The ``smplx`` package itself unpickles in two places: ``SMPLX.__init__`` (smplx/body_models.py)
calls ``pickle.load`` on ``ext="pkl"`` files and ``np.load(path, allow_pickle=True)`` on ``.npz``
files, then ``Struct(**model_data)`` reads every key, so an object array in the file (the official
files hold a few, such as ``joint2num``/``part2num``, that smplx never uses) would be unpickled, and
a crafted one runs code. So `find_smplx_file` refuses ``.pkl`` files, and `SMPLXBody` reads the
``.npz`` with ``allow_pickle=False`` (`plain_arrays`, skipping object arrays), writes the plain
arrays to a temporary ``.npz`` (`write_plain_npz`, which cannot write an object array) and hands
only that file to ``smplx.SMPLX(..., ext="npz")``: its pickle-enabled load then sees nothing but
plain arrays. (``SMPL``/``SMPLH.__init__`` have the same branches, but ``SMPLX`` passes them the
loaded data, so they never open a file.)
"""

from __future__ import annotations

import math
import tempfile
import threading
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from canon_edit.errors import UserError
from canon_edit.extras import require

SMPLX_URL = "https://smpl-x.is.tue.mpg.de"

# SMPL-X's 55 joints and kinematic tree (body 22, jaw, eyes, 2×15 finger joints).
SMPLX_JOINTS = [
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "jaw",
    "left_eye", "right_eye",
] + [f"{side}_hand_{i}" for side in ("left", "right") for i in range(15)]  # fmt: skip
SMPLX_PARENTS = [
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
    20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
    21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53,
]  # fmt: skip
SMPLX_N_DYNAMIC = 79  # contour landmark candidates, one table row per yaw bin


@dataclass
class BodyOutput:
    vertices: Tensor  # B×V×3 posed vertices in body space
    joints: Tensor  # B×J×3 posed joint positions


def rotation_matrix(axis_angle: Tensor) -> Tensor:
    """Rodrigues: ...×3 axis-angle → ...×3×3, smooth at zero (the series form avoids 0/0)."""
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True)[..., None]
    small = theta2 < 1e-8
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = theta2_safe.sqrt()
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2_safe)
    x, y, z = axis_angle.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*axis_angle.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + a * skew + b * (skew @ skew)


def matrix_to_axis_angle(R: Tensor) -> Tensor:
    """...×3×3 rotation → ...×3 axis-angle (angles below π; used to read poses back for comparison)."""
    cos = ((R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1 + 1e-7, 1 - 1e-7)
    theta = torch.acos(cos)
    v = torch.stack(
        [R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1
    )
    scale = torch.where(theta < 1e-4, 0.5 + theta**2 / 12, theta / (2 * torch.sin(theta)))
    return v * scale[..., None]


POSED_MEMORY_BYTES = 64 * 2**20  # posed meshes a body remembers: 500 SMPL-X frames, 1200 of anny's head


class PosedMemory:
    """Posed meshes by key, the least recently used dropped past a size in bytes; thread-safe (the
    viewer renders from its own thread)."""

    def __init__(self, budget: int) -> None:
        self.budget, self.size = budget, 0
        self.lock = threading.Lock()
        self.entries: OrderedDict[Any, BodyOutput] = OrderedDict()

    def get(self, key: Any) -> BodyOutput | None:
        with self.lock:
            out = self.entries.get(key)
            if out is not None:
                self.entries.move_to_end(key)
            return out

    def put(self, key: Any, out: BodyOutput) -> BodyOutput:
        with self.lock:
            if key not in self.entries:
                self.entries[key] = out
                self.size += out.vertices.nbytes + out.joints.nbytes
            while self.size > self.budget and len(self.entries) > 1:
                _, dropped = self.entries.popitem(last=False)
                self.size -= dropped.vertices.nbytes + dropped.joints.nbytes
        return out


class BodyModel(nn.Module):
    """The protocol: topology and UV as buffers, ``forward(pose, expression, shape) -> BodyOutput``.

    Subclasses set ``faces`` (F×3 long), ``uv`` (U×2 in [0, 1], v down), ``uv_faces`` (F×3 long into
    ``uv``), ``landmark_faces`` (L,) and ``landmark_bary`` (L×3): face landmarks as points on the mesh
    (L may be 0), ``joint_names``, ``n_shape`` and ``n_expression``, and implement ``pose_mesh``.
    """

    name: str
    joint_names: list[str]
    n_shape: int
    n_expression: int
    faces: Tensor
    uv: Tensor
    uv_faces: Tensor
    landmark_faces: Tensor
    landmark_bary: Tensor

    @property
    def n_joints(self) -> int:
        return len(self.joint_names)

    @property
    def n_vertices(self) -> int:
        raise NotImplementedError

    def joint_index(self, name: str) -> int:
        if name not in self.joint_names:
            raise KeyError(f"{self.name} has no joint '{name}'")
        return self.joint_names.index(name)

    def zero_params(self, batch: int = 1) -> dict[str, Tensor]:
        """Rest pose, neutral expression and mean shape: the parameters ``forward`` takes."""
        dev = self.faces.device
        return {
            "pose": torch.zeros(batch, self.n_joints, 3, device=dev),
            "expression": torch.zeros(batch, self.n_expression, device=dev),
            "shape": torch.zeros(1, self.n_shape, device=dev),
        }

    def landmarks(self, vertices: Tensor, faces: Tensor | None = None) -> Tensor:
        """B×V×3 vertices → B×L×3 face landmarks (barycentric points on their triangles); `faces` (L×3)
        index the landmarks' corners in `vertices` where those are not the whole mesh."""
        tri = vertices[:, self.faces[self.landmark_faces] if faces is None else faces]  # B×L×3×3
        return (tri * self.landmark_bary[None, :, :, None]).sum(2)

    def pose_mesh(self, pose: Tensor, expression: Tensor, shape: Tensor) -> BodyOutput:
        raise NotImplementedError

    def forward(self, pose: Tensor, expression: Tensor, shape: Tensor) -> BodyOutput:
        """`pose_mesh`, remembered by value on the CPU while no input asks for gradients.

        Fitting the Gaussians, refitting an albedo, stylising and every edit re-pose the same tracked
        frames hundreds of times, and posing the whole mesh was 40% of an albedo refit's step with
        SMPL-X. Returned tensors are copies, so a caller writing into one leaves the memory intact.
        """
        params = (pose, expression, shape)
        if pose.device.type != "cpu" or any(x.requires_grad for x in params):
            return self.pose_mesh(*params)
        key = (pose.dtype, *(x.shape for x in params), b"".join(x.numpy().tobytes() for x in params))
        memory = self.__dict__.setdefault("_posed", PosedMemory(POSED_MEMORY_BYTES))
        out = memory.get(key)
        if out is None:
            out = memory.put(key, self.pose_mesh(*params))
        return BodyOutput(vertices=out.vertices.clone(), joints=out.joints.clone())

    def _apply(self, fn: Any, recurse: bool = True) -> BodyModel:
        self.__dict__.pop("_posed", None)  # the buffers change device or precision: pose anew
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles (Ray's tasks) leave the memory behind: it holds a lock."""
        return {k: v for k, v in self.__dict__.items() if k != "_posed"}

    def landmarks_and_joints(self, pose: Tensor, expression: Tensor, shape: Tensor) -> tuple[Tensor, Tensor]:
        """B×L×3 face landmarks and B×J×3 posed joints: all that tracking fits to.

        A model may pose only the vertices of the landmarks' triangles here (SMPL-X does); this
        default poses the whole mesh.
        """
        out = self(pose, expression, shape)
        return self.landmarks(out.vertices), out.joints


# --------------------------------------------------------------------------- SMPL-X (smplx package)


def find_smplx_file(model_dir: str | Path | None, gender: str = "neutral") -> Path:
    """The SMPL-X file inside `model_dir` (``SMPLX_NEUTRAL.npz`` or ``smplx/SMPLX_NEUTRAL.npz``).

    ``.pkl`` model files are pickles, which can run code when loaded: they are refused, not read.
    """
    name = f"SMPLX_{gender.upper()}.npz"
    if model_dir is None:
        raise UserError(
            f"--body smplx needs --body-model-dir, a folder holding {name}; SMPL-X is not shipped, "
            f"register and download it from {SMPLX_URL}"
        )
    root = Path(model_dir)
    candidates = (root / name, root / "smplx" / name, root)
    for candidate in candidates:
        if candidate.is_file() and candidate.suffix == ".npz":
            return candidate
    for candidate in (*(c.with_suffix(".pkl") for c in candidates[:2]), root):
        if candidate.is_file() and candidate.suffix == ".pkl":
            raise UserError(
                f"{candidate} is a Python pickle, which canon-edit does not load (it can run code); "
                f"download the .npz version ({name}) from {SMPLX_URL} instead"
            )
    raise UserError(
        f"SMPL-X model not found: expected {root / name} (or {root / 'smplx' / name}); "
        f"register and download SMPL-X from {SMPLX_URL} and unpack it there"
    )


def plain_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the .npz at `path` that loads without unpickling; object arrays are skipped."""
    arrays = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            for key in data.files:
                try:
                    arrays[key] = data[key]
                except ValueError:  # an object array: reading it would unpickle it
                    continue
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(
            f"{path} is not a readable .npz file ({reason}); re-download it from {SMPLX_URL}"
        ) from None
    return arrays


def write_plain_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An uncompressed .npz of `arrays`, refusing object arrays (``np.savez`` would pickle them).

    Written entry by entry as ``np.savez`` does, so no key (``file``, ``allow_pickle``) can collide
    with a keyword argument.
    """
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in arrays.items():
            with archive.open(f"{key}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, value, allow_pickle=False)


class SMPLXBody(BodyModel):
    """SMPL-X loaded and checked by ``smplx.SMPLX``; skinned by ``smplx.lbs.lbs`` (batch-safe)."""

    name = "smplx"

    def __init__(self, model_dir: str | Path | None, n_shape: int = 10, n_expression: int = 10):
        super().__init__()
        path = find_smplx_file(model_dir)
        smplx = require("smplx", "portrait", "--body smplx")
        data = plain_arrays(path)
        missing = [
            k for k in ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights") if k not in data
        ]
        if missing:
            raise UserError(
                f"{path} is not an SMPL-X model file (no {', '.join(missing)}); "
                f"re-download it from {SMPLX_URL}"
            )
        with tempfile.TemporaryDirectory(prefix="canon-edit-smplx-") as tmp:
            clean = Path(tmp) / path.name  # plain arrays only: smplx loads it with allow_pickle=True
            write_plain_npz(clean, data)
            with warnings.catch_warnings(), _quiet():
                warnings.simplefilter("ignore")
                model = smplx.SMPLX(
                    str(clean), ext="npz", num_betas=n_shape, num_expression_coeffs=n_expression,
                    use_pca=False, flat_hand_mean=True,
                )  # fmt: skip
        self.joint_names = list(SMPLX_JOINTS)
        self.n_shape, self.n_expression = model.num_betas, model.num_expression_coeffs
        self.register_buffer("v_template", model.v_template.clone())
        self.register_buffer("shapedirs", torch.cat([model.shapedirs, model.expr_dirs], -1).clone())
        self.register_buffer("posedirs", model.posedirs.clone())
        self.register_buffer("J_regressor", model.J_regressor.clone())
        self.register_buffer("parents", model.parents.clone())
        self.register_buffer("lbs_weights", model.lbs_weights.clone())
        self.register_buffer("faces", model.faces_tensor.long().clone())
        self.register_buffer("landmark_faces", model.lmk_faces_idx.long().clone())
        self.register_buffer("landmark_bary", model.lmk_bary_coords.float().clone())
        if "vt" in data and "ft" in data:
            uv = torch.as_tensor(np.asarray(data["vt"]), dtype=torch.float32)
            self.register_buffer("uv", torch.stack([uv[:, 0], 1 - uv[:, 1]], -1))  # OBJ v is up
            self.register_buffer("uv_faces", torch.as_tensor(np.asarray(data["ft"]).astype(np.int64)))
        else:
            uv, uv_faces = spherical_uv(self.v_template, self.faces)
            self.register_buffer("uv", uv)
            self.register_buffer("uv_faces", uv_faces)
        # what `landmarks_and_joints` poses: the landmarks' triangle corners (at most three a landmark,
        # 126 of the tests' 10692 vertices) and the joints, regressed from the shape blend shapes directly
        corners, local = self.faces[self.landmark_faces].unique(return_inverse=True)
        P = self.posedirs.shape[0]
        self.register_buffer("corner_faces", local, persistent=False)
        self.register_buffer("corner_template", self.v_template[corners].clone(), persistent=False)
        self.register_buffer("corner_shapedirs", self.shapedirs[corners].clone(), persistent=False)
        corner_posedirs = self.posedirs.reshape(P, -1, 3)[:, corners].reshape(P, -1)
        self.register_buffer("corner_posedirs", corner_posedirs.clone(), persistent=False)
        self.register_buffer("corner_weights", self.lbs_weights[corners].clone(), persistent=False)
        self.register_buffer("joint_template", self.J_regressor @ self.v_template, persistent=False)
        self.register_buffer(
            "joint_shapedirs", torch.einsum("jv,vcs->jcs", self.J_regressor, self.shapedirs), persistent=False
        )

    @property
    def n_vertices(self) -> int:
        return int(self.v_template.shape[0])

    def pose_mesh(self, pose: Tensor, expression: Tensor, shape: Tensor) -> BodyOutput:
        from smplx.lbs import lbs

        B = pose.shape[0]
        coeffs = torch.cat([shape.expand(B, -1), expression], -1)
        vertices, joints = lbs(
            coeffs, pose.reshape(B, -1), self.v_template, self.shapedirs, self.posedirs,
            self.J_regressor, self.parents, self.lbs_weights,
        )  # fmt: skip
        return BodyOutput(vertices=vertices, joints=joints)

    def landmarks_and_joints(self, pose: Tensor, expression: Tensor, shape: Tensor) -> tuple[Tensor, Tensor]:
        """`lbs` on the landmarks' triangle corners only: the pose blend shapes and the skinning of the
        whole mesh were nearly all of a tracking step (10 s of 11 for 80 steps of 16 frames)."""
        from smplx.lbs import batch_rigid_transform, batch_rodrigues, blend_shapes

        B = pose.shape[0]
        coeffs = torch.cat([shape.expand(B, -1), expression], -1)
        rotations = batch_rodrigues(pose.reshape(-1, 3)).reshape(B, -1, 3, 3)
        eye = torch.eye(3, dtype=pose.dtype, device=pose.device)
        pose_offsets = ((rotations[:, 1:] - eye).reshape(B, -1) @ self.corner_posedirs).reshape(B, -1, 3)
        rest = self.corner_template + blend_shapes(coeffs, self.corner_shapedirs) + pose_offsets
        joints = self.joint_template + blend_shapes(coeffs, self.joint_shapedirs)
        posed_joints, transforms = batch_rigid_transform(rotations, joints, self.parents, dtype=pose.dtype)
        skin = (self.corner_weights @ transforms.reshape(B, -1, 16)).reshape(B, -1, 4, 4)
        corners = (skin[..., :3, :3] @ rest[..., None])[..., 0] + skin[..., :3, 3]
        return self.landmarks(corners, self.corner_faces), posed_joints


class _quiet:
    """Silence smplx's prints (it announces a reduced shape space on stdout)."""

    def __enter__(self) -> None:
        import contextlib
        import io

        self._ctx = contextlib.redirect_stdout(io.StringIO())
        self._ctx.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


def spherical_uv(vertices: Tensor, faces: Tensor) -> tuple[Tensor, Tensor]:
    """A fallback UV map (longitude/latitude around the centroid) for files without ``vt``/``ft``."""
    d = vertices - vertices.mean(0)
    u = (torch.atan2(d[:, 0], d[:, 2]) / (2 * math.pi) + 0.5).clamp(0, 1)
    v = (0.5 - torch.atan2(d[:, 1], d[:, [0, 2]].norm(dim=1)) / math.pi).clamp(0, 1)
    return torch.stack([u, v], -1), faces.clone()


# --------------------------------------------------------------------------- anny

# anny's makehuman rig → the common (SMPL-X) joint names the tracker uses
ANNY_COMMON = {
    "root": "pelvis",
    "neck01": "neck",
    "head": "head",
    "jaw": "jaw",
    "eye.L": "left_eye",
    "eye.R": "right_eye",
    "clavicle.L": "left_collar",
    "clavicle.R": "right_collar",
    "upperarm01.L": "left_shoulder",
    "upperarm01.R": "right_shoulder",
    "lowerarm01.L": "left_elbow",
    "lowerarm01.R": "right_elbow",
}
ANNY_TO_BODY = torch.tensor(
    [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]
)  # z-up, -y front → y-up, +z front


def anny_landmarks(variant: str, n_faces: int) -> tuple[Tensor, Tensor]:
    """The 51 face landmarks that ``scripts/make_anny_landmarks.py`` placed on anny's `variant` mesh.

    None (L = 0, so tracking refuses the model) where the variant has no file or the file was made
    for a mesh with another face count (another anny version).
    """
    import json

    path = Path(__file__).with_name("data") / f"anny_{variant}_landmarks.json"
    if path.is_file():
        data = json.loads(path.read_text())
        if data["n_faces"] == n_faces:
            faces = torch.tensor(data["landmark_faces"], dtype=torch.long)
            return faces, torch.tensor(data["landmark_bary"], dtype=torch.float32)
    return torch.zeros(0, dtype=torch.long), torch.zeros(0, 3)


class AnnyBody(BodyModel):
    """anny's head (``variant="head"``, makehuman face rig) or full body, with its 52 face units.

    Pose: B×J×3 axis-angle per bone in anny's local reference frames ("local-ref"), turned into the
    4×4 delta transforms anny takes. Expression: the face units (``expression_names``), 0 = neutral.
    Shape: anny's phenotype values (gender, age, muscle, weight, height, proportions) minus 0.5, so 0
    is the average person like SMPL-X's zero betas. Building the model the first time takes about a
    minute (anny caches it under ~/.cache/anny).
    """

    name = "anny"

    def __init__(self, variant: str = "head"):
        super().__init__()
        anny = require("anny", "portrait", "--body anny")
        if variant not in ("head", "fullbody"):
            raise UserError(f"unknown anny variant '{variant}'; use head or fullbody")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if variant == "head":
                model = anny.Anny(
                    rig="makehuman-head", topology="head", facial_actions="all", skinning_method="lbs"
                )
            else:
                model = anny.Anny(facial_actions="all", skinning_method="lbs")
        self.model = model.float()
        bones = list(model.bone_labels)
        self.joint_names = [ANNY_COMMON.get(b, b) for b in bones]
        self.expression_names = list(model.facial_action_labels)
        self.shape_names = list(model.phenotype_labels)
        self.n_shape, self.n_expression = len(self.shape_names), len(self.expression_names)
        self.register_buffer("faces", model.get_triangular_faces().long().clone())
        uv = model.texture_coordinates.float()
        self.register_buffer("uv", torch.stack([uv[:, 0], 1 - uv[:, 1]], -1).clamp(0, 1))
        self.register_buffer("uv_faces", model.face_texture_coordinate_indices.long().clone())
        landmark_faces, landmark_bary = anny_landmarks(variant, len(self.faces))
        self.register_buffer("landmark_faces", landmark_faces)
        self.register_buffer("landmark_bary", landmark_bary)
        self.register_buffer("to_body", ANNY_TO_BODY.clone())
        self._n_vertices = int(model.template_vertices.shape[0])

    @property
    def n_vertices(self) -> int:
        return self._n_vertices

    def pose_mesh(self, pose: Tensor, expression: Tensor, shape: Tensor) -> BodyOutput:
        B = pose.shape[0]
        delta = torch.eye(4, dtype=pose.dtype, device=pose.device).repeat(B, self.n_joints, 1, 1)
        delta[..., :3, :3] = rotation_matrix(pose)
        out = self.model(
            pose_parameters=delta,
            phenotype_kwargs=(shape + 0.5).expand(B, -1),
            facial_actions=expression,
        )
        vertices = out["vertices"].to(pose.dtype) @ self.to_body.T
        joints = out["bone_poses"][..., :3, 3].to(pose.dtype) @ self.to_body.T
        return BodyOutput(vertices=vertices, joints=joints)


def load_body(name: str, model_dir: str | Path | None = None, variant: str = "head") -> BodyModel:
    """The body model named on the command line (``--body anny|smplx``, ``--body-model-dir``)."""
    if name == "smplx":
        return SMPLXBody(model_dir)
    if name == "anny":
        return AnnyBody(variant)
    raise UserError(f"unknown body model '{name}'; use anny (default, installs from PyPI) or smplx")


def body_spec(body: BodyModel, model_dir: str | None, variant: str) -> dict[str, Any]:
    """What rebuilds `body`: SMPL-X keeps its coefficient counts (imported tracking may use 300/100)."""
    return {
        "name": body.name,
        "model_dir": model_dir,
        "variant": variant,
        "n_shape": body.n_shape,
        "n_expression": body.n_expression,
    }


def load_body_spec(spec: dict[str, Any]) -> BodyModel:
    """The body a spec names (see `body_spec`); counts are capped by what the SMPL-X file holds."""
    if spec["name"] == "smplx" and "n_shape" in spec:
        return SMPLXBody(spec.get("model_dir"), int(spec["n_shape"]), int(spec["n_expression"]))
    return load_body(spec["name"], spec.get("model_dir"), spec.get("variant", "head"))
