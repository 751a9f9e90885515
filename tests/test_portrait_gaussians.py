"""Mesh binding, texel sampling, PLY round trip and the Gaussian rasterizer."""

from __future__ import annotations

import math

import pytest
import torch

from canon_edit.errors import UserError
from canon_edit_representations.portrait.body import rotation_matrix
from canon_edit_representations.portrait.camera import Camera
from canon_edit_representations.portrait.gaussians import (
    bind,
    matrix_to_quat,
    quat_to_matrix,
    read_ply,
    texel_binding,
    write_ply,
)
from canon_edit_representations.portrait.raster import rasterize


def _mesh(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    vertices = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    faces = torch.randint(30, (40, 3), generator=gen)
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    return vertices, faces


def _binding(gen: torch.Generator, faces: torch.Tensor, n: int = 200):
    tri_id = torch.randint(len(faces), (n,), generator=gen)
    bary = torch.rand(n, 3, generator=gen, dtype=torch.float64)
    bary = bary / bary.sum(1, keepdim=True)
    offset = 0.05 * torch.randn(n, 3, generator=gen, dtype=torch.float64)
    quat = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    return tri_id, bary, offset, quat


def test_quaternion_round_trip():
    q = torch.nn.functional.normalize(torch.randn(500, 4, dtype=torch.float64), dim=-1)
    q = torch.where(q[:, :1] < 0, -q, q)
    torch.testing.assert_close(matrix_to_quat(quat_to_matrix(q)), q, atol=1e-10, rtol=0)


def test_binding_follows_the_mesh_exactly():
    gen = torch.Generator().manual_seed(0)
    vertices, faces = _mesh(gen)
    tri_id, bary, offset, quat = _binding(gen, faces)
    means, quats = bind(vertices, faces, tri_id, bary, offset, quat)
    # a rigid motion of the mesh moves and turns every Gaussian by exactly that motion
    R = rotation_matrix(torch.tensor([0.3, -1.1, 0.7], dtype=torch.float64))
    t = torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
    moved, moved_q = bind(vertices @ R.T + t, faces, tri_id, bary, offset, quat)
    torch.testing.assert_close(moved, means @ R.T + t, atol=1e-10, rtol=0)
    torch.testing.assert_close(quat_to_matrix(moved_q), R @ quat_to_matrix(quats), atol=1e-10, rtol=0)
    # any deformation: a Gaussian without offset stays at its barycentric point of the moved triangle
    warped = vertices + 0.2 * torch.sin(3 * vertices)
    zero = torch.zeros_like(offset)
    on_mesh, _ = bind(warped, faces, tri_id, bary, zero, quat)
    expected = (warped[faces[tri_id]] * bary[..., None]).sum(1)
    torch.testing.assert_close(on_mesh, expected, atol=1e-12, rtol=0)
    # offsets keep their length in the triangle frame
    rigid_on_mesh, _ = bind(vertices @ R.T + t, faces, tri_id, bary, zero, quat)
    torch.testing.assert_close((moved - rigid_on_mesh).norm(dim=1), offset.norm(dim=1), atol=1e-10, rtol=0)


def test_texel_binding_covers_each_texel_once():
    uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    uv_faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    tri_id, bary = texel_binding(uv, uv_faces, 8)
    assert len(tri_id) == 64
    points = (uv[uv_faces[tri_id]] * bary[..., None]).sum(1) * 8 - 0.5  # back to texel indices
    texels = sorted((round(float(x)), round(float(y))) for x, y in points)
    assert texels == sorted((x, y) for x in range(8) for y in range(8))
    torch.testing.assert_close(points, points.round(), atol=1e-5, rtol=0)


def test_ply_round_trip(tmp_path):
    gen = torch.Generator().manual_seed(1)
    n = 50
    g = {
        "means": torch.randn(n, 3, generator=gen),
        "quats": torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1),
        "log_scales": torch.randn(n, 3, generator=gen) - 4,
        "opacity_logits": torch.randn(n, generator=gen),
        "rgb": torch.rand(n, 3, generator=gen),
        "tri_id": torch.randint(10_000, (n,), generator=gen),
        "bary": torch.rand(n, 3, generator=gen),
        "offset": torch.randn(n, 3, generator=gen) * 0.01,
        "quats_local": torch.randn(n, 4, generator=gen),
        "features": torch.randn(n, 8, generator=gen),
    }
    write_ply(tmp_path / "g.ply", g)
    header = (tmp_path / "g.ply").read_bytes()[:2000].decode("ascii", "ignore")
    for name in (
        "property float f_dc_0",
        "property float opacity",
        "property float scale_2",
        "property float rot_3",
    ):
        assert name in header
    back = read_ply(tmp_path / "g.ply")
    for key, value in g.items():
        torch.testing.assert_close(back[key], value, atol=1e-6, rtol=1e-6)
    (tmp_path / "plain.ply").write_bytes(
        b"ply\nformat binary_little_endian 1.0\nelement vertex 0\nproperty float x\nend_header\n"
    )
    with pytest.raises(UserError, match="binding"):
        read_ply(tmp_path / "plain.ply")


def _camera(f: float, size: int, dtype=torch.float32) -> Camera:
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]], dtype=dtype)
    return Camera(torch.eye(4, dtype=dtype), K, size, size)


def test_rasterizer_matches_an_analytic_gaussian():
    image, alpha = rasterize(
        torch.tensor([[0.0, 0.0, 2.0]]), torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.1),
        torch.tensor([0.8]), torch.tensor([[1.0, 0.5, 0.2]]), _camera(40.0, 32),
    )  # fmt: skip
    var = (40 * 0.1 / 2) ** 2 + 0.3  # projected variance plus the 0.3 px² low-pass
    ys, xs = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(32) + 0.5, indexing="ij")
    expected = 0.8 * torch.exp(-0.5 * ((xs - 16) ** 2 + (ys - 16) ** 2) / var)
    expected = torch.where(expected >= 1 / 255, expected, 0)
    torch.testing.assert_close(alpha[..., 0], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(image[..., 1], 0.5 * expected, atol=1e-6, rtol=0)


def test_rasterizer_composites_front_to_back():
    camera = _camera(40.0, 16)
    means = torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, 2.0]])  # the green one is in front
    args = (means, torch.tensor([[1.0, 0, 0, 0]] * 2), torch.full((2, 3), 0.5), torch.tensor([0.9, 0.9]))
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    image, alpha = rasterize(*args, colors, camera)
    on_white, _ = rasterize(*args, colors, camera, background=torch.ones(3))
    torch.testing.assert_close(on_white, image + (1 - alpha), atol=1e-6, rtol=0)
    a = 0.9 * math.exp(-0.5 * 0.5 / ((40 * 0.5 / 2) ** 2 + 0.3))  # near-centre alpha of the front one
    assert image[8, 8, 1] == pytest.approx(a, abs=0.01)
    assert image[8, 8, 0] == pytest.approx(
        (1 - a) * 0.9 * math.exp(-0.5 * 0.5 / ((40 * 0.5 / 3) ** 2 + 0.3)), abs=0.01
    )
    assert float(alpha[8, 8]) > 0.98 and float(alpha[0, 0]) < float(alpha[8, 8])


def test_rasterizer_gradients():
    camera = _camera(20.0, 12, torch.float64)
    args = (
        torch.tensor([[0.01, 0.02, 2.0], [0.05, -0.03, 2.5]], dtype=torch.float64, requires_grad=True),
        torch.tensor([[1.0, 0.1, 0, 0], [0.9, 0, 0.2, 0.1]], dtype=torch.float64, requires_grad=True),
        torch.tensor([[0.05, 0.08, 0.02], [0.1, 0.05, 0.05]], dtype=torch.float64, requires_grad=True),
        torch.tensor([0.6, 0.7], dtype=torch.float64, requires_grad=True),
        torch.rand(2, 3, dtype=torch.float64, requires_grad=True),
    )
    assert torch.autograd.gradcheck(lambda *a: rasterize(*a, camera)[0], args, eps=1e-6, atol=1e-4)


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA and gsplat: compares gsplat with the reference"
)
def test_gsplat_matches_reference():
    gen = torch.Generator().manual_seed(0)
    n = 2000
    means = torch.randn(n, 3, generator=gen) * 0.3 + torch.tensor([0.0, 0.0, 2.0])
    quats = torch.randn(n, 4, generator=gen)
    scales = torch.rand(n, 3, generator=gen) * 0.03 + 0.005
    opac = torch.rand(n, generator=gen)
    colors = torch.rand(n, 3, generator=gen)
    camera = _camera(80.0, 64)
    weight = torch.rand(64, 64, 3, generator=gen)  # a random linear read-out, for gradients
    params = [x.clone().requires_grad_(True) for x in (means, quats, scales, opac, colors)]
    ref, ref_a = rasterize(*params, camera, backend="torch")
    (ref * weight).sum().backward()
    cuda = [x.detach().cuda().requires_grad_(True) for x in (means, quats, scales, opac, colors)]
    cam = Camera(camera.viewmat.cuda(), camera.K.cuda(), 64, 64)
    fast, fast_a = rasterize(*cuda, cam, backend="gsplat")
    (fast * weight.cuda()).sum().backward()
    assert (fast.detach().cpu() - ref.detach()).abs().mean() < 2e-3
    assert (fast_a.detach().cpu() - ref_a.detach()).abs().mean() < 2e-3
    for name, a, b in zip(("means", "quats", "scales", "opacities", "colors"), params, cuda, strict=True):
        ga, gb = a.grad, b.grad.cpu()
        rel = (ga - gb).norm() / ga.norm().clamp(min=1e-12)
        assert rel < 0.05, (name, float(rel))
