"""The base of the layered 2D canonical forms (CoDeF, layered atlas): options, fields, batches, losses.

`LayeredRepresentation` owns what both forms do alike: the clip's per-pixel buffers, each layer's
affine initialisation, patch batches, coarse-to-fine level weights and the flow term; CoDeF and the
atlas keep only what differs (their layers, losses and bakes).

Beside the canonical image, a layer may hold two residuals that make the appearance vary in time
while the texture stays the thing an edit changes: a multiplicative *shading* exp(s(u, v, t)) over
canonical space (light and shadows travel with the surface) and an additive *detail* over the frame
d(x, y, t) or, with `detail_canonical`, over canonical space d(u, v, t) (spray, ripples, a turning
object's changing look: content no deformed image can hold), kept small and sparse by an L1 term
and switched on only once the layout has settled, so it takes what the canonical cannot explain
rather than what it has not explained yet.

A *mapping* sends frame pixels (x, y, t) to a layer's canonical space: a per-frame affine map
(initialised by chaining robust affine fits of the optical flow, `motion.chain_affines`) plus a
residual field, so the layout starts identity-like and unfolded and the field only learns what a
global motion cannot explain. A *texture* field decodes canonical points to RGB and is sampled
onto a texel grid at bake time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from canon_edit.canonical import CanonicalVideo, Layer, splat
from canon_edit.errors import UserError
from canon_edit.flow import Flow
from canon_edit.representation import Representation
from canon_edit.run import RunFolder
from canon_edit.train import TrainConfig
from canon_edit.video import Clip

from .encoding import MLP, EncodingConfig, apply_level_weights, build_encoding, coarse_to_fine_weights
from .layer_init import INIT_FILE, LayerInit, cached_inits, init_key
from .motion import chain_affines, pixel_grid_ndc


@dataclass
class LayeredFitConfig:
    """Options both 2D canonical forms share: schedule, learning rates, batches and the common losses."""

    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=4000))
    anneal_start: float = 0.05  # fraction of the steps at which finer mapping levels start to switch on
    anneal_end: float = 0.5  # ... and by which all are on
    lr_grid: float = 1e-2
    lr_grid_background: float = 0.0  # the background layer's grids; 0 = lr_grid
    lr_mlp: float = 2e-3
    lr_affine: float = 3e-3
    patches: int = 256
    patch_size: int = 8
    grad_weight: float = 0.1
    flow_weight: float = 5e-4
    flow_samples: int = 4096
    max_texture: int = 2048
    reference: int = -1  # reference frame of every layer's canonical space; -1 = the middle frame
    photometric_init: bool = True  # refine each frame pair's flow-fitted affine photometrically
    # residuals (off in the dataclass so that runs from before they existed resume as they were
    # fitted; the shipped presets switch them on)
    shading_residual: bool = False
    shading: EncodingConfig = field(default_factory=lambda: _planes(3, 4, 16))
    shading_hidden: int = 16
    shading_layers: int = 1
    shading_weight: float = 1e-2  # squared log-shading: light changes, not the texture, go here
    detail_residual: bool = False
    detail: EncodingConfig = field(default_factory=lambda: _planes(4, 4, 32))
    detail_hidden: int = 16
    detail_layers: int = 1
    detail_weight: float = 1e-2  # L1 of the detail: sparse, so the canonical keeps what it can hold
    detail_start: float = 0.5  # fraction of the fit after which the detail is learned
    # the detail over the layer's canonical point (u, v, t) instead of the frame's (x, y, t): what
    # changes on a moving object (a turning car's sides) stays put there, so the planes can hold it
    detail_canonical: bool = False
    # patches drawn where the fit is worst (soft mining, Kheradmand et al. 2024): this share of each
    # batch by an error map kept per `mining_cell`² cell of each frame, the rest uniformly; each patch's
    # loss weighted by (uniform / drawn probability) ** `mining_correction` (1: the uniform loss's
    # expectation, 0: hard mining). 0 = uniform patches only, as before.
    mined_share: float = 0.0
    mining_cell: int = 16
    mining_correction: float = 0.5

    def validate(self, prefix: str = "") -> None:
        """Refuse values a fit cannot use before it starts (`patches=0` showed only as a NaN loss)."""
        rules = [
            ("patches", self.patches >= 1, ">= 1"),
            ("patch_size", self.patch_size >= 2, ">= 2"),
            ("flow_samples", self.flow_samples >= 0, ">= 0"),
            ("max_texture", self.max_texture >= 8, ">= 8"),
            ("anneal_end", 0 <= self.anneal_end <= 1, "between 0 and 1"),
            ("anneal_start", 0 <= self.anneal_start <= self.anneal_end, "between 0 and anneal_end"),
            ("detail_start", 0 <= self.detail_start <= 1, "between 0 and 1"),
            ("mined_share", 0 <= self.mined_share <= 1, "between 0 and 1"),
            ("mining_cell", self.mining_cell >= 1, ">= 1"),
            ("mining_correction", 0 <= self.mining_correction <= 1, "between 0 and 1"),
        ]
        for f in dataclasses.fields(self):  # every loss weight and learning rate, the methods' own too
            value = getattr(self, f.name)
            if (f.name.endswith("_weight") or f.name.startswith("lr_")) and isinstance(value, float):
                rules.append((f.name, value >= 0, ">= 0"))
        for name, ok, rule in rules:
            value = getattr(self, name)
            if not ok or not math.isfinite(float(value)):
                raise UserError(f"option {prefix}{name} must be {rule}, got {value}")


def _planes(
    n_levels: int, n_features: int, base_resolution: int, per_level_scale: float = 2.0
) -> EncodingConfig:
    return EncodingConfig(
        kind="planes",
        n_levels=n_levels,
        n_features=n_features,
        base_resolution=base_resolution,
        per_level_scale=per_level_scale,
    )


def planes(n_levels: int, n_features: int, base_resolution: int, per_level_scale: float = 2.0) -> Any:
    """A default-factory for a factorised-plane encoding option (the 2D forms' default encoder)."""
    return field(default_factory=lambda: _planes(n_levels, n_features, base_resolution, per_level_scale))


TEXTURE_ENCODING = (8, 4, 16, 1.5)  # levels, features, base resolution, scale (rescaled to the texels)
MAPPING_ENCODING = (4, 8, 8, 2.0)


def anneal_weights(cfg: LayeredFitConfig, step: int, steps: int, n_levels: int, end: float) -> Tensor:
    """Coarse-to-fine level weights at `step` of `steps`: levels switch on from `anneal_start` to `end`."""
    return coarse_to_fine_weights(
        step, int(cfg.anneal_start * steps), int(end * steps), n_levels, min_levels=min(n_levels, 2)
    )


def init_layer_affine(
    flow: Flow, weights: Tensor, reference: int, frames: Tensor | None, grid: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """A layer's per-frame affines (T×2×3, chained flow fits) and its extent in reference space.

    `weights` T×H×W say where the layer is visible; `frames` (or None) enable the photometric
    refinement of each frame pair's affine.
    """
    A = chain_affines(
        flow.forward, flow.backward, flow.forward_ok, flow.backward_ok, weights, reference, frames=frames
    )
    lo, hi = layer_extent(A, weights, grid)
    return A, lo, hi


class MappingField(nn.Module):
    """(x, y, t) → reference-space point: affine per frame + a residual field, coarse-to-fine annealed."""

    def __init__(
        self, enc: EncodingConfig, hidden: int, n_layers: int, affines: Tensor, lo: Tensor, hi: Tensor
    ) -> None:
        super().__init__()
        self.frames = affines.shape[0]
        self.affine = nn.Parameter(affines.clone())
        self.register_buffer("lo", lo.clone())
        self.register_buffer("hi", hi.clone())
        self.enc = build_encoding(EncodingConfig(**{**enc.__dict__, "max_time_resolution": self.frames}), 3)
        self.mlp = MLP(self.enc.out_dim, 2, hidden, n_layers, zero_init_last=True)

    def forward(self, xy: Tensor, t: Tensor, level_w: Tensor) -> tuple[Tensor, Tensor]:
        """Frame NDC points N×2 at frames t (N,) → reference-space points N×2 and the residual offsets."""
        base = self.affine_part(xy, t)
        tn = t.to(xy.dtype)[:, None] / max(1, self.frames - 1)
        # the residual lives in canonical-aligned coordinates, so motion attached to a moving
        # object (a bend, a wave) is low-rank in the factorised (x, y, t) planes
        feats = self.enc(torch.cat([self.to_unit(base), tn], 1).clamp(0, 1))
        offset = self.mlp(apply_level_weights(feats, level_w, self.enc.n_features))
        return base + offset, offset

    def affine_part(self, xy: Tensor, t: Tensor) -> Tensor:
        """The per-frame affine alone: the whole mapping at initialisation (the residual starts at 0)."""
        A = self.affine[t]
        return (A[:, :, :2] @ xy[:, :, None]).squeeze(-1) + A[:, :, 2]

    def to_unit(self, q: Tensor) -> Tensor:
        """Reference-space points → [0, 1]² canonical texture coordinates."""
        return (q - self.lo) / (self.hi - self.lo)


class SpaceTimeField(nn.Module):
    """(a, b, t) in [0, 1]² × frames → `out_dim` raw values: a factorised-plane encoding and a small MLP."""

    def __init__(
        self, enc: EncodingConfig, hidden: int, n_layers: int, out_dim: int, frames: int, zero_init: bool
    ) -> None:
        super().__init__()
        self.frames = frames
        self.enc = build_encoding(EncodingConfig(**{**enc.__dict__, "max_time_resolution": frames}), 3)
        self.mlp = MLP(self.enc.out_dim, out_dim, hidden, n_layers, zero_init_last=zero_init)

    def forward(self, ab: Tensor, t: Tensor) -> Tensor:
        tn = t.to(ab.dtype)[:, None] / max(1, self.frames - 1)
        return self.mlp(self.enc(torch.cat([ab, tn], 1).clamp(0, 1)))


def residual_fields(
    cfg: LayeredFitConfig, frames: int
) -> tuple[SpaceTimeField | None, SpaceTimeField | None]:
    """A layer's (shading, detail) fields, each zero at initialisation, or None where switched off."""
    shading = detail = None
    if cfg.shading_residual:
        shading = SpaceTimeField(
            cfg.shading, cfg.shading_hidden, cfg.shading_layers, 3, frames, zero_init=True
        )
    if cfg.detail_residual:
        detail = DetailField(cfg.detail, cfg.detail_hidden, cfg.detail_layers, frames, cfg.detail_canonical)
    return shading, detail


class DetailField(SpaceTimeField):
    """The additive detail (RGB, zero at first) over the frame's point or the layer's canonical one."""

    def __init__(self, enc: EncodingConfig, hidden: int, n_layers: int, frames: int, canonical: bool) -> None:
        super().__init__(enc, hidden, n_layers, 3, frames, zero_init=True)
        self.canonical = canonical

    def at(self, uv: Tensor, xy: Tensor, t: Tensor) -> Tensor:
        """The detail of canonical points uv ([0, 1]²) seen at frame points xy (NDC) of frames t."""
        return self(uv if self.canonical else (xy + 1) / 2, t)


class Appearance(NamedTuple):
    color: Tensor  # N×3: texture × shading + detail
    log_shading: Tensor | None  # N×3
    detail: Tensor | None  # N×3


def appearance(
    texture: Tensor, shading: nn.Module | None, detail: DetailField | None, uv: Tensor, xy: Tensor, t: Tensor
) -> Appearance:
    """A layer's colour at canonical points uv ([0, 1]²) seen at frame points xy (NDC) of frames t.

    `detail` is None before the fit switches it on; `texture` is the texture field's N×3 output.
    """
    log_s = shading(uv, t) if shading is not None else None
    color = texture * torch.exp(log_s) if log_s is not None else texture
    d = detail.at(uv, xy, t) if detail is not None else None
    return Appearance(color + d if d is not None else color, log_s, d)


def residual_terms(cfg: LayeredFitConfig, parts: list[Appearance]) -> dict[str, Tensor]:
    """The residuals' regularisers: squared log-shading and L1 detail, over every layer's samples."""
    terms = {}
    log_s = [p.log_shading for p in parts if p.log_shading is not None]
    if log_s:
        terms["shading"] = cfg.shading_weight * torch.cat(log_s).pow(2).mean()
    details = [p.detail for p in parts if p.detail is not None]
    if details:
        terms["detail"] = cfg.detail_weight * torch.cat(details).abs().mean()
    return terms


# points a bake evaluates at once: a frame's activations (64 features of every pixel, 26 MB at 240p)
# fall out of the cache, a chunk's do not (CoDeF's bake of breakdance at 240p 20.1 s whole, 16.1 s in
# chunks; bench/bake_speed.py)
BAKE_CHUNK = 16384


def in_chunks(fn: Callable[..., Any], *rows: Tensor, size: int | None = None) -> Any:
    """`fn(*rows)` evaluated `size` (default `BAKE_CHUNK`) rows at a time and joined: a tensor, or a
    tuple (or NamedTuple) of tensors and Nones. The values are the whole call's: no row's result
    depends on another row."""
    parts = [fn(*chunk) for chunk in zip(*(r.split(size or BAKE_CHUNK) for r in rows), strict=True)]
    first = parts[0]
    if isinstance(first, Tensor):
        return torch.cat(parts)
    joined = [None if v is None else torch.cat([p[i] for p in parts]) for i, v in enumerate(first)]
    return type(first)(*joined) if hasattr(first, "_fields") else tuple(joined)


class LayerBake:
    """One layer's per-frame fields, written into float16 tensors as each frame is evaluated.

    A bake used to keep every frame's float32 fields in lists and stack them at the end; with the
    MLPs' large temporaries freed in between, the allocator's heap held 47 MB a frame for a two-layer
    atlas at 240p (1.4 GB over 30 frames, bench/RESULTS.md) for 4 MB of fields. Here the output is
    allocated once and each frame goes straight into it; the coverage is splatted frame by frame.
    The values are the old bake's: each is rounded to float16 from the same float32.
    """

    def __init__(self, frames: int, height: int, width: int, field_hw: tuple[int, int]) -> None:
        self.shape, self.field_hw = (frames, height, width), field_hw
        self.uv = torch.empty(*self.shape, 2, dtype=torch.float16)
        self.alpha: Tensor | None = None
        self.shading: Tensor | None = None
        self.detail: Tensor | None = None
        self.learned = False  # whether any detail exceeds 1/512: else the bake has none to render
        self.seen = torch.zeros(field_hw)

    def add(
        self,
        t: int,
        unit: Tensor,
        weight: Tensor,
        alpha: Tensor | None = None,
        residuals: tuple[Tensor | None, Tensor | None] = (None, None),
    ) -> None:
        """Frame t: texture coordinates `unit` (H·W×2 in [0, 1]), the layer's composite weight (H×W),
        its alpha (H×W) and `frame_residuals`' (shading, detail)."""
        uv = (unit * 2 - 1).reshape(*self.shape[1:], 2).cpu()
        self.uv[t] = uv
        self.seen += splat(weight.reshape(-1, 1).cpu(), uv.reshape(-1, 2), self.field_hw)[0]
        shading, detail = residuals
        if alpha is not None:
            self.alpha = self._field(self.alpha, 0)
            self.alpha[t] = alpha.reshape(self.shape[1:])
        if shading is not None:
            self.shading = self._field(self.shading, 3)
            self.shading[t] = shading
        if detail is not None:
            self.detail = self._field(self.detail, 3)
            self.detail[t] = detail
            self.learned = self.learned or bool((detail.abs() > 1 / 512).any())

    def _field(self, values: Tensor | None, channels: int) -> Tensor:
        if values is not None:
            return values
        return torch.empty(*self.shape, *([channels] if channels else []), dtype=torch.float16)

    def layer(self, texture: Tensor, baked_hw: tuple[int, int], name: str) -> Layer:
        return Layer(
            texture=texture,
            uv=self.uv,
            alpha=self.alpha,
            shading=self.shading,
            detail=self.detail if self.learned else None,
            coverage=texture_coverage(self.seen, baked_hw),
            name=name,
        )


class TextureField(nn.Module):
    """Canonical colour: a 2D encoding whose finest level matches the texel grid, decoded to RGB."""

    def __init__(self, enc: EncodingConfig, hidden: int, n_layers: int, texture_hw: tuple[int, int]) -> None:
        super().__init__()
        self.texture_hw = texture_hw
        finest = max(texture_hw)
        scale = (
            (finest / enc.base_resolution) ** (1 / max(1, enc.n_levels - 1))
            if finest > enc.base_resolution
            else 1.0
        )
        self.enc = build_encoding(EncodingConfig(**{**enc.__dict__, "per_level_scale": scale}), 2)
        self.mlp = MLP(self.enc.out_dim, 3, hidden, n_layers)

    def forward(self, c: Tensor, level_w: Tensor | None = None) -> Tensor:
        """N×2 canonical coordinates in [0, 1] → N×3 RGB in (0, 1)."""
        feats = self.enc(c.clamp(0, 1))
        if level_w is not None:
            feats = apply_level_weights(feats, level_w, self.enc.n_features)
        return torch.sigmoid(self.mlp(feats))

    @torch.no_grad()
    def bake(self, size: tuple[int, int] | None = None, chunk: int = 65536) -> Tensor:
        """3×Hc×Wc: the field at every texel centre (grid_sample convention, align_corners=False).

        `size` defaults to `texture_hw`; a finer grid makes re-rendering (bilinear sampling of the
        texels) closer to the continuous field the fit optimised.
        """
        hc, wc = size or self.texture_hw
        coords = texel_centres(hc, wc, next(self.parameters()).device)
        return torch.cat([self(c) for c in coords.split(chunk)]).T.reshape(3, hc, wc).cpu()


def texel_centres(hc: int, wc: int, device: torch.device | None = None) -> Tensor:
    """(Hc·Wc)×2 texel centres in [0, 1]², row-major, (u, v) = (x, y)."""
    ys = (torch.arange(hc, device=device) + 0.5) / hc
    xs = (torch.arange(wc, device=device) + 0.5) / wc
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([cx, cy], -1).reshape(-1, 2)


def layer_extent(A: Tensor, weights: Tensor, grid: Tensor, margin: float = 0.04) -> tuple[Tensor, Tensor]:
    """Bounding box (in reference NDC) of every pixel of the layer, mapped by its frame's affine."""
    pts = []
    for t in range(A.shape[0]):
        sel = weights[t] > 0.05
        if sel.any():
            p = grid[sel]
            pts.append(p @ A[t, :, :2].T + A[t, :, 2])
    if not pts:
        return torch.tensor([-1.0, -1.0]), torch.tensor([1.0, 1.0])
    allp = torch.cat(pts)
    lo, hi = allp.amin(0), allp.amax(0)
    pad = (hi - lo) * margin + 0.02
    return lo - pad, hi + pad


def texture_size(
    lo: Tensor, hi: Tensor, height: int, width: int, scale: float, max_texture: int
) -> tuple[int, int]:
    """(Hc, Wc) of a texture spanning [lo, hi] at `scale` texels per reference-frame pixel, capped."""
    size = (hi - lo) / 2 * torch.tensor([width, height]) * scale
    shrink = min(1.0, max_texture / float(size.max()))
    wc, hc = (max(8, round(float(s) * shrink)) for s in size)
    return hc, wc


def auto_texture_scale(A: Tensor, weights: Tensor, cap: float) -> float:
    """Texels per reference pixel so that the most magnified frame still gets one texel per pixel.

    A maps frame NDC to reference NDC; its smallest singular value below 1 means the frame shows the
    layer larger than the reference does (a zoom-in), and a texture sized for the reference would
    blur that frame. Frames where the layer is absent do not count.
    """
    present = weights.flatten(1).amax(1) > 0.05
    if not present.any():
        return 1.0
    smin = torch.linalg.svdvals(A[present][:, :, :2])[:, -1].min()
    return float(min(cap, max(1.0, 1 / float(smin))))


def texture_coverage(seen: Tensor, baked_hw: tuple[int, int]) -> Tensor:
    """Hc×Wc: 1 where some frame sees the texel with composite weight (so edits there show), else 0.

    `seen` is every frame's composite weight splatted at the field's resolution (about one texel per
    pixel, so a seen texel gathers about one pixel's weight), resized here to the baked grid; a 3×3
    closing fills the pinholes that splatting leaves where the texture is magnified, so the PNG shows
    one clean used region.
    """
    cov = (seen > 0.25).float()[None, None]
    closed = -F.max_pool2d(-F.max_pool2d(cov, 3, stride=1, padding=1), 3, stride=1, padding=1)
    return F.interpolate(torch.maximum(cov, closed), size=baked_hw, mode="nearest")[0, 0]


def layered_param_groups(
    cfg: LayeredFitConfig, layers: list[list[nn.Module]], affines: list[Tensor]
) -> list[dict]:
    """Adam groups: grid features, MLP weights and per-frame affines, each at its own learning rate.

    `layers` holds each layer's fields, background first. With `lr_grid_background` set, the
    background's grids get a group of their own: the background has no alpha for faster grids to
    outrun, though it can take ground from a foreground's (bench/RESULTS.md). The parameters keep
    their order either way, so a checkpoint resumes with or without the option (`optim_state.regrouped`).
    """
    grids = [[p for f in fields for p in f.enc.parameters()] for fields in layers]
    own = cfg.lr_grid_background > 0 and cfg.lr_grid_background != cfg.lr_grid
    grid_groups = [{"params": sum(grids[1:] if own else grids, []), "lr": cfg.lr_grid}]
    if own:
        grid_groups.insert(0, {"params": grids[0], "lr": cfg.lr_grid_background})
    return [
        *grid_groups,
        {"params": [p for fields in layers for f in fields for p in f.mlp.parameters()], "lr": cfg.lr_mlp},
        {"params": affines, "lr": cfg.lr_affine},
    ]


def patch_batch(
    cfg: LayeredFitConfig, per_pixel: dict[str, Tensor], generator: torch.Generator
) -> dict[str, Tensor]:
    """A batch of random patches: their (t, y, x) indices and every T×H×W×… buffer gathered there."""
    T, H, W = next(iter(per_pixel.values())).shape[:3]
    device = next(iter(per_pixel.values())).device
    return gather_patches(per_pixel, *sample_patches(cfg.patches, cfg.patch_size, T, H, W, generator, device))


def gather_patches(per_pixel: dict[str, Tensor], t: Tensor, y: Tensor, x: Tensor) -> dict[str, Tensor]:
    """The patches' (t, y, x) indices and every T×H×W×… buffer gathered there."""
    return {"t": t, "y": y, "x": x, **{k: v[t, y, x] for k, v in per_pixel.items()}}


def sample_patches(
    n: int, size: int, frames: int, height: int, width: int, generator: torch.Generator, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """Indices (t, y, x), each n×P×P, of n random P×P patches: gradient and smoothness terms come free."""
    P = min(size, height, width)
    t, y0, x0 = uniform_corners(n, P, frames, height, width, generator)
    return patch_indices(t.to(device), y0.to(device), x0.to(device), P)


def uniform_corners(
    n: int, P: int, frames: int, height: int, width: int, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Frames and top-left corners (t, y0, x0) of n P×P patches, uniform over every whole patch."""
    t = torch.randint(frames, (n,), generator=generator)
    y0 = torch.randint(height - P + 1, (n,), generator=generator)
    x0 = torch.randint(width - P + 1, (n,), generator=generator)
    return t, y0, x0


def patch_indices(t: Tensor, y0: Tensor, x0: Tensor, P: int) -> tuple[Tensor, Tensor, Tensor]:
    """The (t, y, x) indices, each n×P×P, of the P×P patches whose top-left corners are (y0, x0)."""
    n = len(t)
    ar = torch.arange(P, device=t.device)
    tt = t[:, None, None].expand(n, P, P)
    yy = (y0[:, None] + ar)[:, :, None].expand(n, P, P)
    xx = (x0[:, None] + ar)[:, None, :].expand(n, P, P)
    return tt, yy, xx


def cell_extents(corners: int, cell: int) -> Tensor:
    """How many patch corners each cell of `cell` corners holds along an axis of `corners` of them."""
    n = -(-corners // cell)
    extents = torch.full((n,), cell)
    extents[-1] = corners - cell * (n - 1)
    return extents


def error_map_shape(cfg: LayeredFitConfig, frames: int, height: int, width: int) -> tuple[int, int, int]:
    """The mining error map's cells: one per `mining_cell`² patch corners of each frame."""
    P = min(cfg.patch_size, height, width)
    return (
        frames,
        len(cell_extents(height - P + 1, cfg.mining_cell)),
        len(cell_extents(width - P + 1, cfg.mining_cell)),
    )


def mined_batch(
    cfg: LayeredFitConfig, per_pixel: dict[str, Tensor], error: Tensor, generator: torch.Generator
) -> dict[str, Tensor]:
    """`patch_batch` with `mined_share` of the patches drawn in proportion to `error` (T×Hc×Wc).

    Adds each patch's cell (`cell`, the flat index into `error`) and loss weight (`weight`, mean 1):
    (u / q) ** `mining_correction`, u the cell's probability under uniform corners, q under this mixture.
    """
    T, H, W = next(iter(per_pixel.values())).shape[:3]
    device = next(iter(per_pixel.values())).device
    P, cell = min(cfg.patch_size, H, W), cfg.mining_cell
    mined = max(1, round(cfg.patches * cfg.mined_share))  # mined_share > 0: at least one patch
    t, y0, x0 = uniform_corners(cfg.patches - mined, P, T, H, W, generator)
    ey, ex = cell_extents(H - P + 1, cell), cell_extents(W - P + 1, cell)
    flat = error.detach().flatten().float().cpu()
    drawn = torch.multinomial(flat, mined, replacement=True, generator=generator)
    tm, cy, cx = drawn // (len(ey) * len(ex)), drawn // len(ex) % len(ey), drawn % len(ex)
    ym = cy * cell + (torch.rand(mined, generator=generator) * ey[cy]).long()
    xm = cx * cell + (torch.rand(mined, generator=generator) * ex[cx]).long()
    t, y0, x0 = torch.cat([t, tm]), torch.cat([y0, ym]), torch.cat([x0, xm])
    cells = (t * len(ey) + y0 // cell) * len(ex) + x0 // cell
    uniform = (ey[y0 // cell] * ex[x0 // cell]).double() / (T * (H - P + 1) * (W - P + 1))
    q = (1 - cfg.mined_share) * uniform + cfg.mined_share * flat[cells].double() / flat.double().sum()
    weight = (uniform / q) ** cfg.mining_correction
    batch = gather_patches(per_pixel, *patch_indices(t.to(device), y0.to(device), x0.to(device), P))
    return batch | {"cell": cells.to(device), "weight": (weight / weight.mean()).float().to(device)}


def pixel_ndc(x: Tensor, y: Tensor, height: int, width: int) -> Tensor:
    """Integer pixel indices → NDC of the pixel centres, stacked on a new last axis (x, y)."""
    return torch.stack([(x + 0.5) / width * 2 - 1, (y + 0.5) / height * 2 - 1], -1)


def gradient_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Squared error of horizontal and vertical finite differences of n×P×P×C patches (edge sharpness)."""
    gx = (pred[:, :, 1:] - pred[:, :, :-1]) - (target[:, :, 1:] - target[:, :, :-1])
    gy = (pred[:, 1:] - pred[:, :-1]) - (target[:, 1:] - target[:, :-1])
    return (gx**2).mean() + (gy**2).mean()


class LayeredRepresentation(Representation):
    """Layers composited back to front, each a mapping (x, y, t) → canonical space and a texture."""

    bake_class = CanonicalVideo
    presets = "canon_edit_representations.presets"
    run_files = frozenset({INIT_FILE})

    @classmethod
    def prepare(
        cls, clip: Clip, cfg: Any, run: RunFolder, show_progress: bool
    ) -> tuple[Clip, dict[str, Any]]:
        """Where the layers' initialisation is kept (it needs the flow, so `setup` computes it)."""
        return clip, {"init_cache": run.path / INIT_FILE}

    def setup(
        self,
        clip: Clip,
        flow: Flow,
        cfg: LayeredFitConfig,
        weights: Tensor,
        init_cache: Path | None = None,
        **per_pixel: Tensor,
    ) -> list[LayerInit]:
        """Keep the clip as T×H×W×… buffers for patch batches; each layer's (affines, lo, hi).

        `weights` (L×T×H×W) say where each layer is visible; `per_pixel` are further T×H×W×… buffers
        a form's losses need in every batch (the atlas's masks). The initialisation is read from
        `init_cache` when that holds it for this clip and these options (layer_init.py).
        """
        self.cfg = cfg
        self.schedule_steps = cfg.train.steps  # the fitting loop lowers it to what a time budget allows
        T, H, W = clip.T, clip.H, clip.W
        self.T, self.H, self.W = T, H, W
        self.fps = clip.fps
        fwd = torch.cat([flow.forward, torch.zeros(1, 2, H, W)])
        ok = torch.cat([flow.forward_ok, torch.zeros(1, H, W, dtype=torch.bool)])
        self.register_buffer("frames", clip.frames.permute(0, 2, 3, 1).contiguous(), persistent=False)
        self.register_buffer("weights", weights.permute(1, 2, 3, 0).contiguous(), persistent=False)
        for name, tensor in per_pixel.items():
            self.register_buffer(name, tensor, persistent=False)
        self.register_buffer("flow_fwd", fwd.permute(0, 2, 3, 1).contiguous(), persistent=False)
        self.register_buffer("flow_ok", ok, persistent=False)
        if cfg.mined_share > 0:  # kept in checkpoints, so a resumed fit draws as an unbroken one
            # unseen cells start far above any pixel's error: they are drawn before the worst seen
            self.register_buffer("error_map", torch.ones(error_map_shape(cfg, T, H, W)))
        self.batch_buffers = {"rgb": "frames", "w": "weights", **{k: k for k in per_pixel}}
        self.batch_buffers |= {"flow": "flow_fwd", "ok": "flow_ok"}
        ref = cfg.reference if cfg.reference >= 0 else T // 2
        grid = pixel_grid_ndc(H, W)
        photometric = clip.frames if cfg.photometric_init else None
        key = init_key(clip.frames, weights, {"reference": ref, "photometric": cfg.photometric_init})

        def compute() -> list[LayerInit]:
            return [init_layer_affine(flow, w, ref, photometric, grid) for w in weights]

        return cached_inits(init_cache, key, T, compute)

    def level_weights(self, step: int, n_levels: int, end: float) -> Tensor:
        return anneal_weights(self.cfg, step, self.schedule_steps, n_levels, end).to(self.frames.device)

    def detail_on(self, step: int) -> bool:
        return step >= self.cfg.detail_start * self.schedule_steps

    def frame_residuals(
        self, shading: nn.Module | None, detail: DetailField | None, uv: Tensor, xy: Tensor, t: int
    ) -> tuple[Tensor | None, Tensor | None]:
        """A bake's shading (exp) and detail for one frame, H×W×3 each on the CPU, None where absent."""
        tt = torch.full((len(xy),), t, device=xy.device)
        s = in_chunks(shading, uv, tt).exp().reshape(self.H, self.W, 3).cpu() if shading is not None else None
        d = in_chunks(detail.at, uv, xy, tt).reshape(self.H, self.W, 3).cpu() if detail is not None else None
        return s, d

    def sample(self, step: int, generator: torch.Generator) -> dict[str, Tensor]:
        per_pixel = {key: getattr(self, buffer) for key, buffer in self.batch_buffers.items()}
        if self.cfg.mined_share > 0:
            return mined_batch(self.cfg, per_pixel, self.error_map, generator)
        return patch_batch(self.cfg, per_pixel, generator)

    def reconstruction_mse(self, pred: Tensor, rgb: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """The batch's squared error (n×P×P×3 patches); when mining, weighted by patch, and each
        patch's error written into the error map the next batches are drawn from."""
        if "cell" not in batch:
            return ((pred - rgb) ** 2).mean()
        per_patch = ((pred - rgb) ** 2).mean((1, 2, 3))
        self.error_map.view(-1)[batch["cell"]] = per_patch.detach()
        return (per_patch * batch["weight"]).mean()

    def bake_grid(self) -> tuple[torch.device, Tensor, Tensor]:
        """(device, every mapping level on, the H·W×2 pixel centres): what a bake evaluates at."""
        dev = self.frames.device
        level_w = torch.ones(self.layers[0].mapping.enc.n_levels, device=dev)
        return dev, level_w, pixel_grid_ndc(self.H, self.W).to(dev).reshape(-1, 2)

    def flow_term(
        self, mapping: MappingField, xy: Tensor, t: Tensor, q: Tensor, flow: Tensor, ok: Tensor,
        px_scale: Tensor, level_w: Tensor,
    ) -> Tensor | None:  # fmt: skip
        """Mean distance (pixels) in canonical space between a point and where the flow takes it
        in the next frame; N points, `ok` (N, bool) where the flow is trusted for this layer."""
        idx = ok.nonzero().squeeze(1)[: self.cfg.flow_samples]
        if not len(idx):
            return None
        p2 = xy[idx] + flow[idx] / px_scale
        q2, _ = mapping(p2, t[idx] + 1, level_w)
        return ((q2 - q[idx]) * px_scale).norm(dim=-1).mean()
