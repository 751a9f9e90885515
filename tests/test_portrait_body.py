"""Body-model protocol: the synthetic SMPL-X file through smplx, and anny."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from canon_edit.errors import UserError
from canon_edit_representations.portrait.body import (
    AnnyBody,
    BodyModel,
    find_smplx_file,
    load_body,
    rotation_matrix,
)
from canon_edit_representations.portrait.synthetic_body import write_synthetic_smplx

SMPLX_KEYS = {
    "v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table",
    "hands_componentsl", "hands_componentsr", "hands_meanl", "hands_meanr", "lmk_faces_idx",
    "lmk_bary_coords", "dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords",
}  # fmt: skip


def test_synthetic_file_has_the_smplx_layout(smplx_dir):
    data = np.load(smplx_dir / "SMPLX_NEUTRAL.npz")
    assert set(data.files) >= SMPLX_KEYS
    V = data["v_template"].shape[0]
    assert V >= 9930  # smplx indexes vertex 9929 (right eye) in its vertex selector
    assert data["weights"].shape == (V, 55)
    np.testing.assert_allclose(data["weights"].sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(data["J_regressor"].sum(1), 1.0, atol=1e-5)
    assert data["posedirs"].shape == (V, 3, 54 * 9)


def test_matches_smplx_own_forward(smplx_dir, body):
    import smplx

    ref = smplx.SMPLX(str(smplx_dir / "SMPLX_NEUTRAL.npz"), ext="npz", use_pca=False, flat_hand_mean=True)
    gen = torch.Generator().manual_seed(0)
    pose = 0.3 * torch.randn(1, 55, 3, generator=gen)
    expr, shape = torch.randn(1, 10, generator=gen), torch.randn(1, 10, generator=gen)
    out = body(pose, expr, shape)
    theirs = ref(
        global_orient=pose[:, 0], body_pose=pose[:, 1:22].reshape(1, -1), jaw_pose=pose[:, 22],
        leye_pose=pose[:, 23], reye_pose=pose[:, 24], left_hand_pose=pose[:, 25:40].reshape(1, -1),
        right_hand_pose=pose[:, 40:55].reshape(1, -1), expression=expr, betas=shape,
    )  # fmt: skip
    torch.testing.assert_close(out.vertices, theirs.vertices, atol=1e-5, rtol=0)


def test_landmarks_and_joints_pose_only_what_tracking_reads(body):
    """SMPL-X's fast path (the landmarks' triangle corners) equals the whole mesh's, in value and in
    the gradients tracking follows, on a batch of frames with one shared shape."""
    gen = torch.Generator().manual_seed(3)
    pose = (0.3 * torch.randn(4, 55, 3, generator=gen)).requires_grad_(True)
    expr = torch.randn(4, 10, generator=gen).requires_grad_(True)
    shape = torch.randn(1, 10, generator=gen).requires_grad_(True)
    weights = torch.randn(4, 51 + 55, 3, generator=gen)
    found = []
    for path in (BodyModel.landmarks_and_joints, type(body).landmarks_and_joints):
        landmarks, joints = path(body, pose, expr, shape)
        (torch.cat([landmarks, joints], 1) * weights).sum().backward()
        found.append((landmarks, joints, pose.grad, expr.grad, shape.grad))
        pose.grad = expr.grad = shape.grad = None
    assert type(body).landmarks_and_joints is not BodyModel.landmarks_and_joints
    assert len(body.corner_template) < 0.05 * body.n_vertices
    for fast, full in zip(*found, strict=True):
        torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)


def test_posed_meshes_are_remembered_by_value_within_a_budget(smplx_dir, monkeypatch):
    """Re-posing a frame returns what `pose_mesh` gave, as a copy; gradients and a full budget pose anew."""
    from canon_edit_representations.portrait import body as body_module

    body = body_module.SMPLXBody(smplx_dir)
    calls = []
    monkeypatch.setattr(body, "pose_mesh", lambda *p: calls.append(p) or type(body).pose_mesh(body, *p))
    params = body.zero_params(1)
    params["pose"][0, 0] = torch.tensor([0.0, 0.4, 0.0])
    first = body(**params)
    first.vertices += 1.0  # the caller's copy: the memory keeps the posed mesh
    again = body(params["pose"].clone(), params["expression"].clone(), params["shape"].clone())
    assert len(calls) == 1
    torch.testing.assert_close(again.vertices, type(body).pose_mesh(body, **params).vertices, atol=0, rtol=0)
    turned = dict(params, pose=params["pose"] * 2)
    assert not torch.equal(body(**turned).vertices, again.vertices) and len(calls) == 2
    body(params["pose"].requires_grad_(True), params["expression"], params["shape"])
    assert len(calls) == 3  # a pose being optimised is never looked up
    entry = again.vertices.nbytes + again.joints.nbytes
    monkeypatch.setattr(body_module, "POSED_MEMORY_BYTES", 2 * entry)
    body.float()  # moving or casting the buffers forgets every posed mesh
    for k in range(3):
        body(**dict(params, pose=params["pose"].detach() * k))
    body(**dict(params, pose=params["pose"].detach() * 0))  # the oldest, dropped past two entries
    assert len(calls) == 3 + 4 and len(body._posed.entries) == 2


def test_protocol_pose_expression_shape(body):
    params = body.zero_params(2)
    rest = body(**params)
    assert rest.vertices.shape == (2, body.n_vertices, 3) and rest.joints.shape == (2, 55, 3)
    torch.testing.assert_close(rest.vertices[0], body.v_template, atol=1e-6, rtol=0)
    assert body.faces.max() < body.n_vertices and body.uv_faces.shape == body.faces.shape
    assert float(body.uv.min()) >= 0 and float(body.uv.max()) <= 1
    # a root rotation rotates the whole body rigidly about the pelvis joint
    pose = params["pose"].clone()
    pose[:, 0] = torch.tensor([0.0, 0.7, 0.0])
    turned = body(pose, params["expression"], params["shape"])
    R = rotation_matrix(pose[0, 0])
    p0 = rest.joints[0, 0]
    torch.testing.assert_close(turned.vertices[0], (rest.vertices[0] - p0) @ R.T + p0, atol=1e-5, rtol=0)
    # opening the jaw moves the chin, not the crown of the head
    pose = params["pose"].clone()
    pose[:, body.joint_index("jaw")] = torch.tensor([0.3, 0.0, 0.0])
    moved = (body(pose, params["expression"], params["shape"]).vertices - rest.vertices).norm(dim=-1)[0]
    chin = (rest.vertices[0] - torch.tensor([0.0, 0.11, 0.08])).norm(dim=-1).argmin()
    crown = rest.vertices[0, :, 1].argmax()
    assert moved[chin] > 0.01 and moved[crown] < 1e-6
    # expression 0 opens the mouth; shape changes the identity; landmarks sit on the face
    expr = params["expression"].clone()
    expr[:, 0] = 1.0
    assert (body(params["pose"], expr, params["shape"]).vertices - rest.vertices).norm(dim=-1).max() > 0.005
    lm = body.landmarks(rest.vertices)
    assert lm.shape == (2, 51, 3) and bool((lm[0, :, 2] > 0.05).all())


def test_missing_smplx_files_name_folder_and_source(tmp_path):
    for model_dir in (None, tmp_path / "nowhere"):
        with pytest.raises(UserError) as err:
            load_body("smplx", model_dir)
        message = str(err.value)
        assert "\n" not in message and "SMPLX_NEUTRAL.npz" in message and "smpl-x.is.tue.mpg.de" in message
    (tmp_path / "smplx").mkdir()
    write_synthetic_smplx(tmp_path / "smplx")
    assert find_smplx_file(tmp_path) == tmp_path / "smplx" / "SMPLX_NEUTRAL.npz"


def test_anny_head_protocol():
    body = AnnyBody("head")
    params = body.zero_params(2)
    rest = body(**params)
    assert rest.vertices.shape == (2, body.n_vertices, 3) and body.n_expression == 52
    assert body.faces.shape[1] == 3 and body.uv_faces.shape == body.faces.shape
    eyes = rest.joints[0, [body.joint_index("left_eye"), body.joint_index("right_eye")]]
    head = rest.joints[0, body.joint_index("head")]
    assert bool((eyes[:, 2] > head[2]).all()) and bool((eyes[:, 1] > head[1]).all())  # y up, face at +z
    assert float(eyes[0, 0]) > 0 > float(eyes[1, 0])  # the left eye is on +x, as in SMPL-X
    pose = params["pose"].clone()
    pose[:, body.joint_index("jaw")] = torch.tensor([0.3, 0.0, 0.0])
    assert (body(pose, params["expression"], params["shape"]).vertices - rest.vertices).norm(
        dim=-1
    ).max() > 0.01
    expr = params["expression"].clone()
    expr[:, body.expression_names.index("jawOpen")] = 1.0
    assert (body(params["pose"], expr, params["shape"]).vertices - rest.vertices).norm(dim=-1).max() > 0.01
