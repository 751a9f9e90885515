"""Multiresolution encodings of 2D/3D coordinates and the small MLPs that decode them.

Two families with one interface: ``out_dim``, ``n_levels``, ``n_features`` and an N x (L * F)
level-major output (a transposed view of the feature-major result: ``.contiguous()`` before ``.view``).

- feature planes sampled with ``F.grid_sample`` (``PlanePyramid`` for 2D, ``KPlanes`` for (x, y, t)):
  one fused kernel per level with a fused backward, ~3x faster per fitting step than the hash grid
  below on CPU at CoDeF sizes (``bench/encoding_speed.py``), and an explicit canonical pyramid an
  edit can be written into;
- the Instant-NGP multiresolution hash grid (``HashGrid``, pure PyTorch, vectorised over levels;
  tinycudann when it is installed and the model runs on CUDA), whose capacity per parameter is higher.

Coordinates are expected in [0, 1]; outside it both families clamp to the border, so a deformation
that pushes a point off the canonical domain reads the edge features with zero gradient, as
``grid_sample(padding_mode="border")`` does. Only first-order gradients are used and tested (w.r.t.
parameters and coordinates); a loss on the field's Jacobian should use finite differences rather than
``create_graph=True``.
"""

from __future__ import annotations

import importlib
import itertools
import math
from dataclasses import dataclass
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from canon_edit.errors import UserError

HASH_PRIMES = (1, 2654435761, 805459861)


@dataclass
class EncodingConfig:
    """Hyper-parameters shared by both encoding families; ``build_encoding`` turns it into a module."""

    kind: str = "planes"
    n_levels: int = 8
    n_features: int = 4
    base_resolution: int = 16
    per_level_scale: float = 1.5
    log2_table_size: int = 19
    max_time_resolution: int = 0
    backend: str = "auto"
    init_scale: float = 1e-4


def level_resolutions(n_levels: int, base_resolution: int, per_level_scale: float) -> list[int]:
    """Grid resolution of each level, ``floor(base * scale**l)``; non-decreasing, so dense levels lead."""
    if n_levels < 1 or base_resolution < 2 or per_level_scale < 1.0:
        raise UserError(
            f"encoding needs n_levels >= 1, base_resolution >= 2 and per_level_scale >= 1, got "
            f"{n_levels}, {base_resolution}, {per_level_scale}"
        )
    return [math.floor(base_resolution * per_level_scale**level) for level in range(n_levels)]


def hash_level_sizes(in_dim: int, resolutions: list[int], log2_table_size: int) -> list[int]:
    """Table entries per level: a dense level needs one per vertex, a hashed level the whole table.

    Storing only these (not ``L x 2**log2`` entries) keeps coarse levels from carrying millions of
    never-touched parameters that Adam would still have to update every step.
    """
    return [min((res + 1) ** in_dim, 2**log2_table_size) for res in resolutions]


def hash_grid_reference(x: Tensor, tables: Tensor, resolutions: list[int], log2_table_size: int) -> Tensor:
    """Instant-NGP encoding written straight from the paper, one level and one corner at a time.

    The slow, obviously-correct twin of ``hash_grid_encode`` that tests compare it against.
    x: N x d in [0, 1]; tables: F x S, levels stored one after another with ``hash_level_sizes``
    entries each. Returns N x (L * F), level-major.
    """
    n, d = x.shape
    table_size = 2**log2_table_size
    x = x.clamp(0, 1)
    levels = []
    offset = 0
    for res in resolutions:
        dense = (res + 1) ** d <= table_size
        pos = x * res
        cell = pos.detach().floor().clamp(max=res - 1)
        frac = pos - cell
        feature = x.new_zeros(n, tables.shape[0])
        for corner in itertools.product((0, 1), repeat=d):
            weight = x.new_ones(n)
            index = torch.zeros(n, dtype=torch.long, device=x.device)
            for i, bit in enumerate(corner):
                coord = cell[:, i].long() + bit
                weight = weight * (frac[:, i] if bit else 1 - frac[:, i])
                index = index + coord * (res + 1) ** i if dense else index ^ (coord * HASH_PRIMES[i])
            if not dense:
                index = index % table_size
            feature = feature + weight[:, None] * tables[:, offset + index].T
        levels.append(feature)
        offset += (res + 1) ** d if dense else table_size
    return torch.cat(levels, dim=1)


def hash_grid_encode(
    x: Tensor,
    tables: Tensor,
    resolutions: Tensor,
    multipliers: Tensor,
    offsets: Tensor,
    n_dense: int,
    log2_table_size: int,
) -> Tensor:
    """Hash-grid encoding with every level and corner handled by the same few tensor ops.

    x: N x d in [0, 1]; tables: F x S; resolutions: L (int64); multipliers: L x d, the vertex
    strides of dense levels and the hash primes of hashed ones; offsets: L, each level's first
    entry; the first ``n_dense`` levels are dense. Returns N x (L * F), level-major (a transposed
    view: call ``.contiguous()`` before ``.view``). Gradients reach ``tables`` (through
    ``index_select``, whose backward is one ``index_add_``) and ``x`` (through the weights).

    Intermediates are laid out corner x level x sample, so every elementwise op runs over long
    contiguous rows and the corner sum adds whole slabs, and tables are feature-major, so each
    feature's gather and scatter is one pass; on CPU this measured ~2x faster than sample-major
    N x L x corner x F layouts, and the level loop of ``hash_grid_reference`` ~10x slower.
    """
    n, d = x.shape
    res = resolutions.to(x.dtype)[:, None]
    pos = x.clamp(0, 1).T[:, None, :] * res
    cell = torch.minimum(pos.detach().floor(), res - 1)
    frac = pos - cell
    cell_index = cell.long()

    def axis(i: int) -> tuple[Tensor, Tensor]:
        """Weights and index terms of the low and high vertex along axis i: 2 x L x N each."""
        low = cell_index[i] * multipliers[:, i, None]
        return torch.stack((1 - frac[i], frac[i])), torch.stack((low, low + multipliers[:, i, None]))

    weights, terms = axis(0)
    dense, hashed = terms[:, :n_dense], terms[:, n_dense:]
    for i in range(1, d):
        w_i, t_i = axis(i)
        weights = (weights[:, None] * w_i).flatten(0, 1)
        dense = (dense[:, None] + t_i[:, :n_dense]).flatten(0, 1)
        hashed = (hashed[:, None] ^ t_i[:, n_dense:]).flatten(0, 1)
    index = torch.cat((dense, hashed & (2**log2_table_size - 1)), dim=1) + offsets[:, None]
    corners = tables.index_select(1, index.view(-1)).view(tables.shape[0], *index.shape)
    return (corners * weights).sum(1).transpose(0, 1).reshape(-1, n).T


class HashGrid(nn.Module):
    """Instant-NGP multiresolution hash encoding (Mueller et al. 2022) in pure PyTorch.

    A level whose ``(res + 1)**in_dim`` vertices fit the table is indexed densely (collision-free),
    finer levels by the spatial hash XOR(coord_i * prime_i) mod 2**log2_table_size. All levels live
    in one feature-major ``tables`` parameter (F x sum of ``hash_level_sizes``) that
    ``hash_grid_reference`` reads as well.
    """

    def __init__(
        self,
        in_dim: int,
        n_levels: int = 16,
        n_features: int = 2,
        log2_table_size: int = 19,
        base_resolution: int = 16,
        per_level_scale: float = 1.44,
        init_scale: float = 1e-4,
    ) -> None:
        super().__init__()
        if not 1 <= in_dim <= len(HASH_PRIMES):
            raise UserError(f"HashGrid supports 1 to {len(HASH_PRIMES)} input dimensions, got {in_dim}")
        self.in_dim, self.n_levels, self.n_features = in_dim, n_levels, n_features
        self.out_dim = n_levels * n_features
        self.log2_table_size = log2_table_size
        self.resolutions = level_resolutions(n_levels, base_resolution, per_level_scale)
        sizes = hash_level_sizes(in_dim, self.resolutions, log2_table_size)
        self.n_dense = sum((res + 1) ** in_dim <= 2**log2_table_size for res in self.resolutions)
        multipliers = [
            [(res + 1) ** i for i in range(in_dim)] if level < self.n_dense else list(HASH_PRIMES[:in_dim])
            for level, res in enumerate(self.resolutions)
        ]
        self.tables = nn.Parameter(torch.empty(n_features, sum(sizes)).uniform_(-init_scale, init_scale))
        self.register_buffer("level_res", torch.tensor(self.resolutions), persistent=False)
        self.register_buffer("multipliers", torch.tensor(multipliers), persistent=False)
        self.register_buffer(
            "offsets", torch.tensor([0, *itertools.accumulate(sizes)][:-1]), persistent=False
        )

    def forward(self, x: Tensor) -> Tensor:
        """N x in_dim in [0, 1] -> N x (L * F)."""
        return hash_grid_encode(
            x, self.tables, self.level_res, self.multipliers, self.offsets, self.n_dense, self.log2_table_size
        )


def sample_planes(planes: Tensor, coords: Tensor) -> Tensor:
    """Bilinearly sample a batch of feature planes, one point set per plane.

    planes: B x F x H x W; coords: B x N x 2 in [0, 1], (u, v) -> (W, H), texel centres at the ends
    (align_corners=True) and border padding. Returns B x F x N.
    """
    grid = (coords * 2 - 1)[:, None]
    return F.grid_sample(planes, grid, mode="bilinear", padding_mode="border", align_corners=True)[:, :, 0]


class PlanePyramid(nn.Module):
    """2D multiresolution feature planes: level l is an r_l x r_l texel grid of F features.

    Initialised uniformly in +-1e-4 (Instant-NGP's table init): texels no frame observes keep
    near-zero features and decode to one flat colour instead of noise an edit would later reveal,
    while Adam's step size does not depend on the init scale, so fitting is no slower.
    """

    def __init__(
        self, n_levels: int = 8, n_features: int = 4, base_resolution: int = 16, per_level_scale: float = 1.5
    ) -> None:
        super().__init__()
        self.n_levels, self.n_features = n_levels, n_features
        self.out_dim = n_levels * n_features
        self.resolutions = level_resolutions(n_levels, base_resolution, per_level_scale)
        self.planes = nn.ParameterList(
            nn.Parameter(torch.empty(1, n_features, res, res).uniform_(-1e-4, 1e-4))
            for res in self.resolutions
        )

    def forward(self, x: Tensor) -> Tensor:
        """N x 2 in [0, 1] -> N x (L * F)."""
        coords = x[None]
        return torch.cat([sample_planes(plane, coords)[0] for plane in self.planes]).T


class KPlanes(nn.Module):
    """(x, y, t) factorised K-planes style (Fridovich-Keil et al. 2023): per level xy, xt, yt planes.

    The three sampled features are multiplied, so a feature varies in time only where the xt/yt
    planes do. Planes start uniform in [0.1, 0.5] as in K-planes so the product is not ~0 at init.
    ``max_time_resolution`` caps the t axis (callers pass the frame count: more texels than frames
    cannot be supervised). Each level's three planes are stored in one B=3 parameter when they have
    the same shape, so they are sampled by a single grid_sample call.
    """

    def __init__(
        self,
        n_levels: int = 4,
        n_features: int = 8,
        base_resolution: int = 16,
        per_level_scale: float = 2.0,
        max_time_resolution: int = 0,
    ) -> None:
        super().__init__()
        self.n_levels, self.n_features = n_levels, n_features
        self.out_dim = n_levels * n_features
        self.resolutions = level_resolutions(n_levels, base_resolution, per_level_scale)
        self.time_resolutions = [
            max(2, min(res, max_time_resolution)) if max_time_resolution > 0 else res
            for res in self.resolutions
        ]
        self.planes = nn.ParameterList()
        for res, res_t in zip(self.resolutions, self.time_resolutions, strict=True):
            shapes = [(3, res, res)] if res_t == res else [(1, res, res), (2, res_t, res)]
            for batch, height, width in shapes:
                self.planes.append(
                    nn.Parameter(torch.empty(batch, n_features, height, width).uniform_(0.1, 0.5))
                )

    def forward(self, x: Tensor) -> Tensor:
        """N x 3 (x, y, t) in [0, 1] -> N x (L * F); planes ordered xy, xt, yt (u along W, v along H)."""
        coords = torch.stack((x[:, :2], x[:, [0, 2]], x[:, [1, 2]]))
        levels = []
        planes = iter(self.planes)
        for res, res_t in zip(self.resolutions, self.time_resolutions, strict=True):
            if res_t == res:
                xy, xt, yt = sample_planes(next(planes), coords)
            else:
                (xy,) = sample_planes(next(planes), coords[:1])
                xt, yt = sample_planes(next(planes), coords[1:])
            levels.append(xy * xt * yt)
        return torch.cat(levels).T


class TcnnHashGrid(nn.Module):
    """tinycudann's fused CUDA hash grid with HashGrid's hyper-parameters (its own parameter layout)."""

    def __init__(self, tcnn: ModuleType, in_dim: int, cfg: EncodingConfig) -> None:
        super().__init__()
        self.n_levels, self.n_features = cfg.n_levels, cfg.n_features
        self.out_dim = cfg.n_levels * cfg.n_features
        self.encoding = tcnn.Encoding(
            in_dim,
            {
                "otype": "HashGrid",
                "n_levels": cfg.n_levels,
                "n_features_per_level": cfg.n_features,
                "log2_hashmap_size": cfg.log2_table_size,
                "base_resolution": cfg.base_resolution,
                "per_level_scale": cfg.per_level_scale,
            },
        )

    def forward(self, x: Tensor) -> Tensor:
        """N x in_dim in [0, 1] on CUDA -> N x (L * F) float32."""
        if not x.is_cuda:
            raise UserError("the tinycudann encoding runs on CUDA only: use encoding backend 'torch' on CPU")
        return self.encoding(x).float()


class MLP(nn.Module):
    """Small ReLU MLP decoding encoded features (colour, offset, alpha...)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: int = 64,
        n_hidden_layers: int = 2,
        zero_init_last: bool = False,
    ) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * n_hidden_layers + [out_dim]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers[:-1])
        if zero_init_last:
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def coarse_to_fine_weights(step: int, start: int, end: int, n_levels: int, min_levels: int = 1) -> Tensor:
    """Per-level weights in [0, 1] that switch fine levels on one after another (BARF / Nerfies).

    The first ``min_levels`` are always 1; between ``start`` and ``end`` a window sweeps over the
    rest and each level ramps up along a half cosine, so the fit settles coarse motion before fine
    levels can explain it with high-frequency noise.
    """
    if end < start:
        raise ValueError(f"coarse-to-fine end step {end} is before its start step {start}")
    progress = 1.0 if step >= end else 0.0 if step <= start else (step - start) / (end - start)
    alpha = progress * max(n_levels - min_levels, 0)
    ramp = (alpha - torch.arange(n_levels, dtype=torch.float64) + min_levels).clamp(0, 1)
    return ((1 - torch.cos(math.pi * ramp)) / 2).float()


def apply_level_weights(features: Tensor, weights: Tensor, n_features: int) -> Tensor:
    """Multiply each level's ``n_features`` columns of a level-major N x (L * F) tensor by its weight."""
    if features.shape[-1] != weights.numel() * n_features:
        raise ValueError(
            f"{features.shape[-1]} feature columns do not match {weights.numel()} levels x {n_features}"
        )
    return features * weights.to(features).repeat_interleave(n_features)


def _use_tcnn(backend: str) -> ModuleType | None:
    """The tinycudann module when the hash grid should use it, else None (imported only here)."""
    if backend not in ("auto", "torch", "tcnn"):
        raise UserError(f"unknown encoding backend {backend!r}: use 'auto', 'torch' or 'tcnn'")
    if backend == "torch" or (backend == "auto" and not torch.cuda.is_available()):
        return None
    try:
        return importlib.import_module("tinycudann")
    except (ImportError, OSError) as exc:
        if backend == "tcnn":
            raise UserError(
                f"encoding backend 'tcnn' needs tinycudann ({exc}): install it or use backend 'torch'"
            ) from exc
        return None


def build_encoding(cfg: EncodingConfig, in_dim: int) -> nn.Module:
    """The encoding module for ``cfg`` and 2D (canonical) or 3D (x, y, t) inputs.

    ``backend='auto'`` picks tinycudann for hash grids when it imports and CUDA is available; its
    parameters live on the GPU from construction, so the choice is made here, not per call.
    """
    if in_dim not in (2, 3):
        raise UserError(f"encodings take 2D or 3D coordinates, got in_dim={in_dim}")
    if cfg.kind == "planes":
        if in_dim == 2:
            return PlanePyramid(cfg.n_levels, cfg.n_features, cfg.base_resolution, cfg.per_level_scale)
        return KPlanes(
            cfg.n_levels, cfg.n_features, cfg.base_resolution, cfg.per_level_scale, cfg.max_time_resolution
        )
    if cfg.kind == "hash":
        tcnn = _use_tcnn(cfg.backend)
        if tcnn is not None:
            return TcnnHashGrid(tcnn, in_dim, cfg)
        return HashGrid(
            in_dim,
            cfg.n_levels,
            cfg.n_features,
            cfg.log2_table_size,
            cfg.base_resolution,
            cfg.per_level_scale,
            cfg.init_scale,
        )
    raise UserError(f"unknown encoding kind {cfg.kind!r}: use 'planes' or 'hash'")
