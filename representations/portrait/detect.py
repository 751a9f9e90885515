"""Face landmarks, body pose and person masks for a real clip, from mediapipe in its own interpreter.

mediapipe 0.10.21 is the last release whose legacy solutions (face mesh, pose, selfie
segmentation) ship their models inside the wheel, so it runs offline; it pins numpy<2 and
opencv-contrib, which clash with canon-edit's install. So detection runs ``detector_worker.py`` as a
subprocess of a separate interpreter (``CANON_EDIT_DETECTOR_PYTHON``): frames go to it as one
uint8 .npy, results come back as an .npz, and its ``progress i/T`` lines drive a progress bar. This
module never imports mediapipe, and results are cached as safetensors beside the run.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm import tqdm

from canon_edit.atomic import atomic_path
from canon_edit.errors import UserError
from canon_edit.video import to_uint8

ENV_PYTHON = "CANON_EDIT_DETECTOR_PYTHON"
FORMAT = "canon-edit-detections"
WORKER = Path(__file__).with_name("detector_worker.py")
SELFIE_MODEL = 0  # mediapipe's general (square) selfie model: cleaner person masks on portrait clips
SETUP_HINT = (
    "set it up once with: python -m venv ~/.canon-edit-detector && "
    "~/.canon-edit-detector/bin/pip install mediapipe==0.10.21, then "
    f"export {ENV_PYTHON}=~/.canon-edit-detector/bin/python (or pass tracking/masks instead)"
)

# iBUG-68 points 17..67 (brows 10, nose 9, eyes 12, mouth 20, in iBUG order) as mediapipe face-mesh
# indices, after the widely used correspondence of PeizhiYan/Mediapipe_2_Dlib_Landmarks with one mesh
# point per landmark (its 27 = mean(168, 6), 28 = mean(197, 195) → 168, 197, which spaces the bridge
# evenly down to the tip; checked by eye on a real frame).
MEDIAPIPE_TO_IBUG51 = (
    70, 63, 105, 66, 107,  # 17-21 right brow, outer to inner
    336, 296, 334, 293, 300,  # 22-26 left brow, inner to outer
    168, 197, 5, 4,  # 27-30 nose bridge, top to tip
    98, 97, 2, 326, 327,  # 31-35 nostril base, right to left
    33, 160, 158, 133, 153, 144,  # 36-41 right eye, from the outer corner, clockwise in the image
    362, 385, 387, 263, 373, 380,  # 42-47 left eye, from the inner corner
    61, 39, 37, 0, 267, 269, 291, 321, 314, 17, 84, 91,  # 48-59 outer lips, from the right corner
    78, 82, 13, 312, 308, 317, 14, 87,  # 60-67 inner lips, from the right corner
)  # fmt: skip
N_MESH = 478
N_POSE = 33


@dataclass
class Detections:
    """Per-frame detections in pixels of the frames they were computed on."""

    face: Tensor  # T×51×2 float32 (x, y), iBUG 17..67 order; NaN rows = no face in that frame
    pose: Tensor  # T×33×3 float32: mediapipe pose landmarks x, y and visibility; NaN rows = no person
    mask: Tensor  # T×1×H×W float32 person segmentation in [0, 1]

    @property
    def T(self) -> int:
        return int(self.face.shape[0])

    def save(self, path: str | Path) -> None:
        """Write safetensors atomically; the mask is stored as uint8 (a 480p float mask would be 330 MB)."""
        tensors = {
            "face": self.face.float().contiguous(),
            "pose": self.pose.float().contiguous(),
            "mask": (self.mask.clamp(0, 1) * 255).round().to(torch.uint8).contiguous(),
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"format": FORMAT, "version": "1"})

    @staticmethod
    def load(path: str | Path) -> Detections:
        """Read a file written by `save`; anything else is a one-line UserError."""
        path = Path(path)
        fix = "delete it to detect again"
        try:
            tensors = load_file(str(path))
        except (OSError, SafetensorError) as e:
            raise UserError(f"detections: cannot read {path} ({e}); {fix}") from None
        if set(tensors) != {"face", "pose", "mask"}:
            raise UserError(
                f"detections: {path} holds {sorted(tensors)}, not face/pose/mask detections; {fix}"
            )
        face, pose, mask = tensors["face"], tensors["pose"], tensors["mask"]
        T = face.shape[0] if face.ndim else -1
        if (
            face.shape != (T, 51, 2)
            or pose.shape != (T, N_POSE, 3)
            or mask.ndim != 4
            or mask.shape[:2] != (T, 1)
            or mask.dtype != torch.uint8
        ):
            raise UserError(
                f"detections: {path} has face {tuple(face.shape)}, pose {tuple(pose.shape)}, mask "
                f"{tuple(mask.shape)} {mask.dtype}; expected T×51×2, T×33×3 and T×1×H×W uint8; {fix}"
            )
        return Detections(face.float(), pose.float(), mask.float() / 255)


def mesh_to_ibug51(mesh: np.ndarray) -> np.ndarray:
    """T×478×2 face-mesh points → T×51×2 iBUG 17..67 landmarks (NaN rows stay NaN)."""
    return mesh[:, list(MEDIAPIPE_TO_IBUG51)]


def _interpreter(python: str | None) -> str:
    python = python or os.environ.get(ENV_PYTHON)
    if not python:
        raise UserError(
            f"face detection needs a mediapipe interpreter and {ENV_PYTHON} is not set; {SETUP_HINT}"
        )
    path = Path(os.path.expanduser(python))
    if not path.is_file() or not os.access(path, os.X_OK):
        raise UserError(f"detector interpreter {path} does not exist or is not executable; {SETUP_HINT}")
    return str(path)


def _run_worker(python: str, frames: np.ndarray, show_progress: bool) -> dict[str, np.ndarray]:
    """Run the worker on T×H×W×3 uint8 frames; returns its npz arrays."""
    T = len(frames)
    with tempfile.TemporaryDirectory(prefix="canon-edit-detect-") as tmp:
        frames_path, out_path, err_path = Path(tmp, "frames.npy"), Path(tmp, "out.npz"), Path(tmp, "stderr")
        np.save(frames_path, frames)
        command = [python, str(WORKER), str(frames_path), str(out_path), "--selfie-model", str(SELFIE_MODEL)]
        env = dict(os.environ, GLOG_minloglevel="2", TF_CPP_MIN_LOG_LEVEL="2")
        with (
            open(err_path, "w") as err,
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, env=env) as proc,
            tqdm(total=T, desc="detecting faces", unit="frame", disable=not show_progress) as bar,
        ):
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("progress "):
                    bar.update(int(line.split()[1].split("/")[0]) - bar.n)
        lines = [s for s in err_path.read_text(errors="replace").splitlines() if s.strip()]
        last = lines[-1].strip() if lines else "no error output"
        if proc.returncode == 3:
            raise UserError(f"mediapipe is not importable by {python} ({last}); {SETUP_HINT}")
        if proc.returncode != 0:
            raise UserError(
                f"the face detector ({python} {WORKER.name}) failed (exit code {proc.returncode}): {last}; "
                f"check that {python} has mediapipe==0.10.21"
            )
        try:
            with np.load(out_path) as data:
                out = {k: data[k] for k in ("face", "pose", "mask")}
        except (OSError, KeyError, ValueError) as e:
            raise UserError(f"the face detector wrote no usable result ({e}); {last}") from None
    expected = {"face": (T, N_MESH, 2), "pose": (T, N_POSE, 3), "mask": frames.shape[:3]}
    if any(out[k].shape != shape for k, shape in expected.items()):
        raise UserError(
            f"the face detector returned face {out['face'].shape}, pose {out['pose'].shape}, mask "
            f"{out['mask'].shape} for frames {frames.shape}; check that {python} runs {WORKER}"
        )
    return out


def detect_clip(
    frames: Tensor, cache: Path | None = None, python: str | None = None, show_progress: bool = True
) -> Detections:
    """Face landmarks, pose and person masks for T×3×H×W frames in [0, 1], cached in `cache`.

    A cache with the clip's T, H and W is re-used; otherwise the detector runs in the interpreter
    `python` (default ``$CANON_EDIT_DETECTOR_PYTHON``) and the result is written to `cache`. The
    interpreter comes from the caller or the user's environment only, never from a run's config: a
    run folder may be someone else's, and must not name a program for canon-edit to execute.
    """
    T, _, H, W = frames.shape
    if cache is not None and Path(cache).is_file():
        cached = Detections.load(cache)
        if cached.mask.shape == (T, 1, H, W):
            return cached
    interpreter = _interpreter(python)
    images = to_uint8(frames.detach().float()).permute(0, 2, 3, 1)
    out = _run_worker(interpreter, np.ascontiguousarray(images.cpu().numpy()), show_progress)
    detections = Detections(
        face=torch.from_numpy(mesh_to_ibug51(out["face"]).astype(np.float32)),
        pose=torch.from_numpy(out["pose"].astype(np.float32)),
        mask=torch.from_numpy(out["mask"].astype(np.float32) / 255)[:, None],
    )
    if cache is not None:
        detections.save(cache)
    return detections
