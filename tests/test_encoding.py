"""Encodings against direct reference computations: values, gradients, dispatch."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest
import torch
from torch import nn

from canon_edit.errors import UserError
from canon_edit_representations.encoding import (
    MLP,
    EncodingConfig,
    HashGrid,
    KPlanes,
    PlanePyramid,
    apply_level_weights,
    build_encoding,
    coarse_to_fine_weights,
    hash_grid_reference,
    hash_level_sizes,
    level_resolutions,
)

# Small grids with both kinds of level: 2D res 4, 8 are dense in a 2**8 table and 16, 32 hashed;
# 3D res 4, 8 are dense in a 2**10 table and 16 hashed.
GRIDS = {
    2: dict(n_levels=4, n_features=2, log2_table_size=8, base_resolution=4, per_level_scale=2.0),
    3: dict(n_levels=3, n_features=3, log2_table_size=10, base_resolution=4, per_level_scale=2.0),
}


def _random_grid(in_dim: int) -> HashGrid:
    grid = HashGrid(in_dim, **GRIDS[in_dim])
    with torch.no_grad():
        grid.tables.normal_()
    return grid


def _points(n: int, in_dim: int) -> torch.Tensor:
    """Random points plus the domain's corners, where the clamped last cell is used."""
    corners = torch.tensor([[0.0] * in_dim, [1.0] * in_dim, [1.0, 0.0, 1.0][:in_dim]])
    return torch.cat((torch.rand(n, in_dim), corners))


def _bilinear(plane: torch.Tensor, u: float, v: float) -> torch.Tensor:
    """F x H x W plane at (u along W, v along H) in [0, 1], texel centres at the ends."""
    _, h, w = plane.shape
    px, py = u * (w - 1), v * (h - 1)
    x0, y0 = min(int(px), w - 2), min(int(py), h - 2)
    fx, fy = px - x0, py - y0
    return (
        plane[:, y0, x0] * (1 - fx) * (1 - fy)
        + plane[:, y0, x0 + 1] * fx * (1 - fy)
        + plane[:, y0 + 1, x0] * (1 - fx) * fy
        + plane[:, y0 + 1, x0 + 1] * fx * fy
    )


def test_level_resolutions() -> None:
    assert level_resolutions(4, 16, 1.5) == [16, 24, 36, 54]
    assert level_resolutions(3, 16, 1.0) == [16, 16, 16]
    with pytest.raises(UserError):
        level_resolutions(0, 16, 1.5)


@pytest.mark.parametrize("in_dim", [2, 3])
def test_hash_grid_matches_reference(in_dim: int) -> None:
    torch.manual_seed(0)
    grid = _random_grid(in_dim)
    table_size = 2**grid.log2_table_size
    dense = [(res + 1) ** in_dim <= table_size for res in grid.resolutions]
    assert any(dense) and not all(dense)
    x = _points(200, in_dim).requires_grad_(True)
    out = grid(x)
    assert out.shape == (x.shape[0], grid.out_dim)
    ref = hash_grid_reference(x, grid.tables, grid.resolutions, grid.log2_table_size)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    probe = torch.randn_like(out)
    grads = torch.autograd.grad((out * probe).sum(), (grid.tables, x))
    ref_grads = torch.autograd.grad((ref * probe).sum(), (grid.tables, x))
    for got, want in zip(grads, ref_grads, strict=True):
        assert want.abs().max() > 0
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("in_dim", [2, 3])
def test_dense_levels_are_collision_free(in_dim: int) -> None:
    """With entry i of the table holding i, reading every vertex of a dense level returns its index."""
    grid = HashGrid(in_dim, **GRIDS[in_dim]).double()
    sizes = hash_level_sizes(in_dim, grid.resolutions, grid.log2_table_size)
    with torch.no_grad():
        grid.tables.copy_(torch.arange(grid.tables.shape[1], dtype=torch.float64).expand_as(grid.tables))
    offset = 0
    for level in range(grid.n_dense):
        res = grid.resolutions[level]
        axis = torch.arange(res + 1, dtype=torch.float64) / res
        vertices = torch.cartesian_prod(*[axis] * in_dim)
        index = grid(vertices)[:, level * grid.n_features].round().long()
        assert torch.equal(index.sort().values, torch.arange(offset, offset + sizes[level]))
        offset += sizes[level]
    assert grid.n_dense == 2


def test_hashed_level_uses_instant_ngp_primes() -> None:
    grid = HashGrid(3, **GRIDS[3]).double()
    with torch.no_grad():
        grid.tables.copy_(torch.arange(grid.tables.shape[1], dtype=torch.float64).expand_as(grid.tables))
    res, offset = grid.resolutions[2], sum(hash_level_sizes(3, grid.resolutions[:2], grid.log2_table_size))
    vertices = torch.tensor([[3, 7, 11], [16, 0, 5], [9, 16, 16]])
    index = grid(vertices.double() / res)[:, 2 * grid.n_features].round().long()
    x, y, z = vertices.T
    expected = (x ^ (y * 2654435761) ^ (z * 805459861)) % 2**grid.log2_table_size + offset
    assert torch.equal(index, expected)


def test_hash_grid_clamps_to_the_domain() -> None:
    grid = _random_grid(2)
    x = torch.tensor([[-0.3, 0.5], [1.2, 1.7]])
    torch.testing.assert_close(grid(x), grid(x.clamp(0, 1)))


def test_plane_pyramid_matches_manual_bilinear() -> None:
    torch.manual_seed(0)
    pyramid = PlanePyramid(n_levels=2, n_features=3, base_resolution=4, per_level_scale=2.0)
    assert [p.shape[-1] for p in pyramid.planes] == [4, 8]
    with torch.no_grad():
        for plane in pyramid.planes:
            plane.normal_()
    x = torch.tensor([[0.3, 0.7], [0.0, 1.0], [1.0, 0.25], [0.91, 0.05]])
    out = pyramid(x)
    assert out.shape == (4, pyramid.out_dim)
    for row, (u, v) in enumerate(x.tolist()):
        want = torch.cat([_bilinear(plane[0], u, v) for plane in pyramid.planes])
        torch.testing.assert_close(out[row], want)


@pytest.mark.parametrize("max_time_resolution", [0, 5])
def test_kplanes_matches_manual_product(max_time_resolution: int) -> None:
    torch.manual_seed(0)
    kplanes = KPlanes(2, 3, 4, 2.0, max_time_resolution)
    expected_t = [4, 8] if max_time_resolution == 0 else [4, 5]
    assert kplanes.time_resolutions == expected_t
    planes = [p.detach() for p in kplanes.planes]
    # planes of one level: a B=3 stack when all share a shape, else xy then the (xt, yt) pair
    per_level = [[*planes[0]], [*planes[1]] if max_time_resolution == 0 else [planes[1][0], *planes[2]]]
    x = torch.tensor([[0.3, 0.7, 0.1], [0.0, 1.0, 1.0], [0.55, 0.2, 0.66]])
    out = kplanes(x)
    assert out.shape == (3, kplanes.out_dim)
    for row, (px, py, pt) in enumerate(x.tolist()):
        want = torch.cat(
            [
                _bilinear(xy, px, py) * _bilinear(xt, px, pt) * _bilinear(yt, py, pt)
                for xy, xt, yt in per_level
            ]
        )
        torch.testing.assert_close(out[row], want)
    assert out.min() > 0


@pytest.mark.parametrize(
    ("make", "in_dim"),
    [
        (lambda: _random_grid(2), 2),
        (lambda: _random_grid(3), 3),
        (lambda: PlanePyramid(2, 3, 4, 2.0), 2),
        (lambda: KPlanes(2, 3, 4, 2.0, 5), 3),
    ],
    ids=["hash2d", "hash3d", "planes", "kplanes"],
)
def test_input_gradient_matches_finite_differences(make: Callable[[], nn.Module], in_dim: int) -> None:
    """d(features)/dx feeds the deformation field; check it against central differences."""
    torch.manual_seed(1)
    encoding = make().double()
    with torch.no_grad():
        for param in encoding.parameters():
            param.normal_()
    x = (0.05 + 0.9 * torch.rand(6, in_dim, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(encoding, (x,), eps=1e-6, atol=1e-6)


def test_coarse_to_fine_weights() -> None:
    before = coarse_to_fine_weights(0, 10, 50, 4)
    assert torch.equal(before, torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert torch.equal(coarse_to_fine_weights(50, 10, 50, 4), torch.ones(4))
    assert torch.equal(coarse_to_fine_weights(99, 10, 50, 4), torch.ones(4))
    assert torch.equal(coarse_to_fine_weights(0, 10, 50, 4, min_levels=2), torch.tensor([1.0, 1.0, 0.0, 0.0]))
    sweep = torch.stack([coarse_to_fine_weights(step, 10, 50, 4) for step in range(0, 60, 2)])
    assert sweep.min() >= 0 and sweep.max() <= 1
    assert (sweep.diff(dim=0) >= 0).all(), "a level's weight never decreases with the step"
    assert (sweep.diff(dim=1) <= 0).all(), "a finer level is never ahead of a coarser one"
    middle = coarse_to_fine_weights(30, 10, 50, 4)
    assert 0 < middle[2] < 1 and middle[1] == 1 and middle[3] == 0
    assert torch.equal(coarse_to_fine_weights(5, 5, 5, 3), torch.ones(3))


def test_apply_level_weights() -> None:
    features = torch.ones(2, 6)
    out = apply_level_weights(features, torch.tensor([1.0, 0.5, 0.0]), n_features=2)
    assert torch.equal(out, torch.tensor([[1.0, 1.0, 0.5, 0.5, 0.0, 0.0]] * 2))
    with pytest.raises(ValueError):
        apply_level_weights(features, torch.ones(2), n_features=2)


def test_mlp_zero_init_last_starts_at_zero_and_can_learn() -> None:
    mlp = MLP(5, 2, hidden=16, n_hidden_layers=2, zero_init_last=True)
    x = torch.randn(10, 5)
    out = mlp(x)
    assert torch.equal(out, torch.zeros(10, 2))
    (out - 1).square().sum().backward()
    assert mlp.net[-1].bias.grad.abs().sum() > 0
    assert MLP(5, 2)(x).abs().sum() > 0


@pytest.mark.parametrize(
    ("kind", "in_dim", "expected"),
    [("planes", 2, PlanePyramid), ("planes", 3, KPlanes), ("hash", 2, HashGrid), ("hash", 3, HashGrid)],
)
def test_build_encoding_dispatch(kind: str, in_dim: int, expected: type) -> None:
    cfg = EncodingConfig(
        kind=kind, n_levels=3, n_features=2, base_resolution=4, log2_table_size=8, backend="torch"
    )
    encoding = build_encoding(cfg, in_dim)
    assert type(encoding) is expected
    assert (encoding.n_levels, encoding.n_features, encoding.out_dim) == (3, 2, 6)
    assert encoding(torch.rand(7, in_dim)).shape == (7, 6)


def test_build_encoding_auto_backend_without_cuda_is_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a CPU-only machine, anywhere
    assert type(build_encoding(EncodingConfig(kind="hash", log2_table_size=8), 2)) is HashGrid


def test_build_encoding_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match="unknown encoding kind"):
        build_encoding(EncodingConfig(kind="fourier"), 2)
    with pytest.raises(UserError, match="backend"):
        build_encoding(EncodingConfig(kind="hash", backend="cuda"), 2)
    monkeypatch.setitem(sys.modules, "tinycudann", None)
    with pytest.raises(UserError, match="install it or use backend 'torch'"):
        build_encoding(EncodingConfig(kind="hash", backend="tcnn"), 2)
