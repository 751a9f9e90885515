"""The detector front end (no mediapipe: a fake worker speaks its protocol) and anny's face landmarks."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from canon_edit.errors import UserError
from canon_edit_representations.portrait.detect import (
    ENV_PYTHON,
    MEDIAPIPE_TO_IBUG51,
    Detections,
    detect_clip,
)

FAKE_WORKER = """
import sys
from pathlib import Path

import numpy as np

marker = Path(__file__).with_name("ran")
if marker.exists():
    sys.exit("fake detector: asked to run twice")
marker.write_text("1")
frames = np.load(sys.argv[2])  # argv: worker script, frames .npy, output .npz, options
T, H, W = frames.shape[:3]
face = np.zeros((T, 478, 2), np.float32)
face[..., 0] = np.arange(478)  # x = the mesh index, so the iBUG selection can be read back
face[..., 1] = np.arange(T)[:, None]
face[1] = np.nan  # no face in frame 1
pose = np.full((T, 33, 3), 0.5, np.float32)
mask = np.full((T, H, W), 255, np.uint8)
mask[:, :, : W // 2] = 0
for t in range(T):
    print(f"progress {t + 1}/{T}", flush=True)
np.savez(sys.argv[3], face=face, pose=pose, mask=mask)
"""


def fake_interpreter(folder: Path, script: str) -> str:
    """An executable that runs `script` with this interpreter, standing in for the mediapipe venv."""
    (folder / "fake_worker.py").write_text(script)
    wrapper = folder / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{folder / "fake_worker.py"}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return str(wrapper)


def random_detections(T: int = 3, H: int = 8, W: int = 6) -> Detections:
    g = torch.Generator().manual_seed(0)
    face = torch.rand(T, 51, 2, generator=g) * W
    face[1] = float("nan")
    pose = torch.rand(T, 33, 3, generator=g)
    mask = torch.randint(0, 256, (T, 1, H, W), generator=g).float() / 255
    return Detections(face, pose, mask)


def test_index_table_selects_51_distinct_mesh_points():
    assert len(MEDIAPIPE_TO_IBUG51) == 51 == len(set(MEDIAPIPE_TO_IBUG51))
    assert all(isinstance(i, int) and 0 <= i < 478 for i in MEDIAPIPE_TO_IBUG51)


def test_detections_round_trip(tmp_path):
    d = random_detections()
    d.save(tmp_path / "det.safetensors")
    back = Detections.load(tmp_path / "det.safetensors")
    assert torch.equal(back.face.nan_to_num(-1), d.face.nan_to_num(-1)) and back.face[1].isnan().all()
    assert torch.equal(back.pose, d.pose) and torch.equal(back.mask, d.mask)
    assert back.face.dtype == back.pose.dtype == back.mask.dtype == torch.float32


def test_load_rejects_corrupt_and_misshapen_files(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"\x00not a safetensors file")
    with pytest.raises(UserError, match="cannot read"):
        Detections.load(tmp_path / "junk.safetensors")
    with pytest.raises(UserError, match="cannot read"):
        Detections.load(tmp_path / "missing.safetensors")
    wrong = {"face": torch.zeros(3, 68, 2), "pose": torch.zeros(3, 33, 3), "mask": torch.zeros(3, 1, 4, 4)}
    save_file({**wrong, "mask": wrong["mask"].to(torch.uint8)}, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(UserError, match=r"expected T×51×2"):
        Detections.load(tmp_path / "wrong.safetensors")
    save_file({"face": torch.zeros(3, 51, 2)}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(UserError, match="not face/pose/mask"):
        Detections.load(tmp_path / "partial.safetensors")


def test_detect_clip_runs_the_worker_once_and_caches(tmp_path):
    python = fake_interpreter(tmp_path, FAKE_WORKER)
    frames = torch.rand(4, 3, 10, 12)
    cache = tmp_path / "run" / "detections.safetensors"
    d = detect_clip(frames, cache=cache, python=python, show_progress=False)
    assert d.face.shape == (4, 51, 2) and d.pose.shape == (4, 33, 3) and d.mask.shape == (4, 1, 10, 12)
    assert d.face[1].isnan().all() and torch.isfinite(d.face[[0, 2, 3]]).all()
    assert d.face[0, :, 0].tolist() == list(MEDIAPIPE_TO_IBUG51) and d.face[3, 0, 1] == 3
    assert d.mask[..., :6].eq(0).all() and d.mask[..., 6:].eq(1).all()
    assert cache.is_file()
    again = detect_clip(frames, cache=cache, python=python, show_progress=False)  # the fake would fail
    assert torch.equal(again.mask, d.mask) and torch.equal(again.face.nan_to_num(), d.face.nan_to_num())
    with pytest.raises(UserError, match="asked to run twice"):  # another size: detects again
        detect_clip(frames[:, :, :8], cache=cache, python=python, show_progress=False)


def test_detect_clip_explains_a_missing_detector(tmp_path, monkeypatch):
    frames = torch.rand(2, 3, 8, 8)
    monkeypatch.delenv(ENV_PYTHON, raising=False)
    with pytest.raises(UserError, match=f"{ENV_PYTHON}.*pip install mediapipe==0.10.21"):
        detect_clip(frames, show_progress=False)
    with pytest.raises(UserError, match="does not exist"):
        detect_clip(frames, python=str(tmp_path / "nope" / "python"), show_progress=False)
    no_mediapipe = "import sys\nsys.stderr.write('No module named mediapipe\\n')\nsys.exit(3)\n"
    monkeypatch.setenv(ENV_PYTHON, fake_interpreter(tmp_path, no_mediapipe))
    with pytest.raises(UserError, match="mediapipe is not importable.*No module named mediapipe"):
        detect_clip(frames, show_progress=False)


# --------------------------------------------------------------------------- anny's landmarks


@pytest.fixture(scope="module")
def anny_head():
    pytest.importorskip("anny")
    from canon_edit_representations.portrait.body import AnnyBody

    return AnnyBody("head")


def test_anny_head_landmarks_sit_on_the_face(anny_head):
    with torch.no_grad():
        lm = anny_head.landmarks(anny_head(**anny_head.zero_params(1)).vertices)[0]
    assert lm.shape == (51, 3) and torch.isfinite(lm).all()
    brows, nose, eyes, mouth = lm[0:10], lm[10:19], lm[19:31], lm[31:51]
    tip = nose[3]  # iBUG 30
    x, y = 0, 1
    assert brows[:, y].min() > eyes[:, y].max() > tip[y] > mouth[:, y].max()  # y up
    assert eyes[6:, x].min() > 0 > eyes[:6, x].max()  # iBUG 42-47 is the left eye: +x as in SMPL-X
    assert brows[5:, x].min() > 0 > brows[:5, x].max()
    assert mouth[0, x] < 0 < mouth[6, x]  # the mouth corners 48 and 54
    assert tip[2] > eyes[:, 2].max()  # the nose tip is in front of the eyes


def test_tracking_refuses_a_body_without_landmarks(anny_head, monkeypatch):
    from canon_edit_representations.portrait.body import anny_landmarks
    from canon_edit_representations.portrait.tracking import track_landmarks

    faces, bary = anny_landmarks("no-such-variant", len(anny_head.faces))
    assert faces.shape == (0,) and bary.shape == (0, 3)
    monkeypatch.setattr(anny_head, "landmark_faces", faces)
    monkeypatch.setattr(anny_head, "landmark_bary", bary)
    with pytest.raises(UserError, match="no face landmarks"):
        track_landmarks(anny_head, torch.zeros(2, 0, 2), 64, 64)
