"""CoDeF (Ouyang et al. 2023): one canonical image per layer plus a deformation field over (x, y, t).

Improvements over the paper's recipe, each aimed at a sharp, editable canonical image:
- the deformation is a per-frame affine map (initialised by chaining robust affine fits of the
  optical flow) plus a residual field, so camera pans and object motion need no large offsets;
- the residual field is annealed coarse-to-fine and kept smooth inside each training patch;
- training batches are small patches, which gives the gradient (edge) loss and the smoothness
  term for free, and the flow-consistency loss ties deformations of neighbouring frames.
One canonical/deformation pair per mask group (background + one layer per mask label).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from canon_edit.canonical import CanonicalVideo, Layer, composite_weights, splat
from canon_edit.flow import Flow
from canon_edit.train import TrainConfig
from canon_edit.video import Clip

from .base import Representation
from .encoding import MLP, EncodingConfig, apply_level_weights, build_encoding, coarse_to_fine_weights
from .motion import chain_affines, pixel_grid_ndc


@dataclass
class CoDeFConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=4000))
    canonical: EncodingConfig = field(
        default_factory=lambda: EncodingConfig(kind="planes", n_levels=8, n_features=4, base_resolution=16)
    )
    canonical_hidden: int = 64
    canonical_layers: int = 1
    deformation: EncodingConfig = field(
        default_factory=lambda: EncodingConfig(
            kind="planes", n_levels=4, n_features=8, base_resolution=8, per_level_scale=2.0
        )
    )
    deformation_hidden: int = 64
    deformation_layers: int = 2
    anneal_start: float = 0.05  # fraction of the steps at which finer deformation levels start to switch on
    anneal_end: float = 0.5  # ... and by which all are on
    canonical_anneal_end: float = (
        0.3  # the canonical image is annealed too (BARF): smooth images register better
    )
    lr_grid: float = 1e-2
    lr_mlp: float = 2e-3
    lr_affine: float = 3e-3
    patches: int = 256
    patch_size: int = 8
    grad_weight: float = 0.1
    flow_weight: float = 5e-4
    flow_samples: int = 4096
    smooth_weight: float = 0.05
    texture_scale: float = 1.0  # canonical texels per pixel of the reference frame
    max_texture: int = 2048
    reference: int = -1  # reference frame of the canonical space; -1 = the middle frame
    photometric_init: bool = True  # refine each frame pair's flow-fitted affine photometrically


class LayerField(nn.Module):
    """Canonical colour field and deformation (affine per frame + residual) of one layer."""

    def __init__(
        self,
        cfg: CoDeFConfig,
        affines: Tensor,
        lo: Tensor,
        hi: Tensor,
        frames: int,
        texture_hw: tuple[int, int],
    ):
        super().__init__()
        self.frames = frames
        self.texture_hw = texture_hw
        self.affine = nn.Parameter(affines.clone())
        self.register_buffer("lo", lo.clone())
        self.register_buffer("hi", hi.clone())
        dcfg = EncodingConfig(**{**cfg.deformation.__dict__, "max_time_resolution": frames})
        self.deform_enc = build_encoding(dcfg, 3)
        self.deform_mlp = MLP(
            self.deform_enc.out_dim, 2, cfg.deformation_hidden, cfg.deformation_layers, zero_init_last=True
        )
        ccfg = cfg.canonical
        finest = max(texture_hw)
        scale = (
            (finest / ccfg.base_resolution) ** (1 / max(1, ccfg.n_levels - 1))
            if finest > ccfg.base_resolution
            else 1.0
        )
        self.canon_enc = build_encoding(EncodingConfig(**{**ccfg.__dict__, "per_level_scale": scale}), 2)
        self.canon_mlp = MLP(self.canon_enc.out_dim, 3, cfg.canonical_hidden, cfg.canonical_layers)

    def deform(self, xy: Tensor, t: Tensor, level_w: Tensor) -> tuple[Tensor, Tensor]:
        """Frame NDC points N×2 at frames t (N,) → reference-space points N×2 and the residual offsets."""
        A = self.affine[t]
        base = (A[:, :, :2] @ xy[:, :, None]).squeeze(-1) + A[:, :, 2]
        tn = t.to(xy.dtype)[:, None] / max(1, self.frames - 1)
        # the residual lives in canonical-aligned coordinates, so motion attached to a moving
        # object (a bend, a wave) is low-rank in the factorised (x, y, t) planes
        feats = self.deform_enc(torch.cat([self.to_unit(base), tn], 1).clamp(0, 1))
        feats = apply_level_weights(feats, level_w, self.deform_enc.n_features)
        offset = self.deform_mlp(feats)
        return base + offset, offset

    def to_unit(self, q: Tensor) -> Tensor:
        """Reference-space points → [0, 1]² canonical texture coordinates."""
        return (q - self.lo) / (self.hi - self.lo)

    def color(self, c: Tensor, level_w: Tensor | None = None) -> Tensor:
        feats = self.canon_enc(c.clamp(0, 1))
        if level_w is not None:
            feats = apply_level_weights(feats, level_w, self.canon_enc.n_features)
        return torch.sigmoid(self.canon_mlp(feats))


def _layer_extent(A: Tensor, weights: Tensor, grid: Tensor, margin: float = 0.04) -> tuple[Tensor, Tensor]:
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


class CoDeF(Representation):
    name = "codef"
    config_class = CoDeFConfig

    def __init__(self, clip: Clip, flow: Flow, cfg: CoDeFConfig):
        super().__init__()
        self.cfg = cfg
        T, H, W = clip.T, clip.H, clip.W
        self.T, self.H, self.W = T, H, W
        self.fps = clip.fps
        alphas = [torch.ones(T, H, W)] + (
            [clip.masks[:, k] for k in range(clip.masks.shape[1])] if clip.masks is not None else []
        )
        self.alphas = alphas
        weights = composite_weights(alphas)  # L×T×H×W
        fwd = torch.cat([flow.forward, torch.zeros(1, 2, H, W)])
        ok = torch.cat([flow.forward_ok, torch.zeros(1, H, W, dtype=torch.bool)])
        self.register_buffer("frames", clip.frames.permute(0, 2, 3, 1).contiguous(), persistent=False)
        self.register_buffer("weights", weights.permute(1, 2, 3, 0).contiguous(), persistent=False)
        self.register_buffer("flow_fwd", fwd.permute(0, 2, 3, 1).contiguous(), persistent=False)
        self.register_buffer("flow_ok", ok, persistent=False)
        ref = cfg.reference if cfg.reference >= 0 else T // 2
        grid = pixel_grid_ndc(H, W)
        self.layers = nn.ModuleList()
        for k in range(len(alphas)):
            A = chain_affines(
                flow.forward,
                flow.backward,
                flow.forward_ok,
                flow.backward_ok,
                weights[k],
                ref,
                frames=clip.frames if cfg.photometric_init else None,
            )
            lo, hi = _layer_extent(A, weights[k], grid)
            size = (hi - lo) / 2 * torch.tensor([W, H]) * cfg.texture_scale
            shrink = min(1.0, cfg.max_texture / float(size.max()))
            wc, hc = (max(8, round(float(s) * shrink)) for s in size)
            self.layers.append(LayerField(cfg, A, lo, hi, T, (hc, wc)))

    def level_weights(self, step: int, n_levels: int, end: float) -> Tensor:
        steps = self.cfg.train.steps
        w = coarse_to_fine_weights(
            step, int(self.cfg.anneal_start * steps), int(end * steps), n_levels, min_levels=min(n_levels, 2)
        )
        return w.to(self.frames.device)

    def param_groups(self) -> list[dict[str, Any]]:
        grids, mlps, affines = [], [], []
        for la in self.layers:
            grids += list(la.deform_enc.parameters()) + list(la.canon_enc.parameters())
            mlps += list(la.deform_mlp.parameters()) + list(la.canon_mlp.parameters())
            affines.append(la.affine)
        return [
            {"params": grids, "lr": self.cfg.lr_grid},
            {"params": mlps, "lr": self.cfg.lr_mlp},
            {"params": affines, "lr": self.cfg.lr_affine},
        ]

    def sample(self, step: int, generator: torch.Generator) -> dict[str, Tensor]:
        n, P = self.cfg.patches, min(self.cfg.patch_size, self.H, self.W)
        dev = self.frames.device
        t = torch.randint(self.T, (n,), generator=generator).to(dev)
        y0 = torch.randint(self.H - P + 1, (n,), generator=generator).to(dev)
        x0 = torch.randint(self.W - P + 1, (n,), generator=generator).to(dev)
        ar = torch.arange(P, device=dev)
        tt = t[:, None, None].expand(n, P, P)
        yy = (y0[:, None] + ar)[:, :, None].expand(n, P, P)
        xx = (x0[:, None] + ar)[:, None, :].expand(n, P, P)
        return {
            "t": tt,
            "y": yy,
            "x": xx,
            "rgb": self.frames[tt, yy, xx],
            "w": self.weights[tt, yy, xx],
            "flow": self.flow_fwd[tt, yy, xx],
            "ok": self.flow_ok[tt, yy, xx],
        }

    def losses(self, batch: dict[str, Tensor], step: int) -> tuple[dict[str, Tensor], dict[str, float]]:
        cfg = self.cfg
        lw = self.level_weights(step, self.layers[0].deform_enc.n_levels, cfg.anneal_end)
        lc = self.level_weights(step, self.layers[0].canon_enc.n_levels, cfg.canonical_anneal_end)
        t, rgb, w = batch["t"], batch["rgb"], batch["w"]
        px_scale = torch.tensor([self.W / 2, self.H / 2], device=rgb.device)
        xy = torch.stack([(batch["x"] + 0.5) / self.W * 2 - 1, (batch["y"] + 0.5) / self.H * 2 - 1], -1)
        pred = torch.zeros_like(rgb)
        smooth = rgb.new_zeros(())
        flow_terms = []
        for k, la in enumerate(self.layers):
            wk = w[..., k]
            sel = (wk.flatten(1).amax(1) > 0).nonzero().squeeze(1)
            if len(sel) == 0:
                continue
            m, P = len(sel), wk.shape[1]
            q, off = la.deform(xy[sel].reshape(-1, 2), t[sel].reshape(-1), lw)
            color = la.color(la.to_unit(q), lc).reshape(m, P, P, 3)
            pred = pred.index_add(0, sel, wk[sel][..., None] * color)
            off = off.reshape(m, P, P, 2) * px_scale
            inside = (wk[sel] > 0.5).float()
            sx = ((off[:, :, 1:] - off[:, :, :-1]) ** 2).sum(-1) * inside[:, :, 1:] * inside[:, :, :-1]
            sy = ((off[:, 1:] - off[:, :-1]) ** 2).sum(-1) * inside[:, 1:] * inside[:, :-1]
            smooth = smooth + (sx.sum() + sy.sum()) / inside.numel()
            ok = (batch["ok"][sel] & (wk[sel] > 0.5)).reshape(-1).nonzero().squeeze(1)
            if len(ok):
                ok = ok[: cfg.flow_samples]
                p = xy[sel].reshape(-1, 2)[ok]
                p2 = p + batch["flow"][sel].reshape(-1, 2)[ok] / px_scale
                q2, _ = la.deform(p2, t[sel].reshape(-1)[ok] + 1, lw)
                flow_terms.append(((q2 - q[ok]) * px_scale).norm(dim=-1).mean())
        mse = ((pred - rgb) ** 2).mean()
        gx = (pred[:, :, 1:] - pred[:, :, :-1]) - (rgb[:, :, 1:] - rgb[:, :, :-1])
        gy = (pred[:, 1:] - pred[:, :-1]) - (rgb[:, 1:] - rgb[:, :-1])
        terms = {
            "rgb": mse,
            "grad": cfg.grad_weight * ((gx**2).mean() + (gy**2).mean()),
            "smooth": cfg.smooth_weight * smooth,
        }
        if flow_terms:
            terms["flow"] = cfg.flow_weight * torch.stack(flow_terms).mean()
        return terms, {"mse": float(mse.detach())}

    @torch.no_grad()
    def bake(self) -> CanonicalVideo:
        dev = self.frames.device
        lw = torch.ones(self.layers[0].deform_enc.n_levels, device=dev)
        grid = pixel_grid_ndc(self.H, self.W).to(dev).reshape(-1, 2)
        weights = self.weights.permute(3, 0, 1, 2).cpu()
        layers = []
        for k, la in enumerate(self.layers):
            uv = torch.stack(
                [
                    (la.to_unit(la.deform(grid, torch.full((len(grid),), t, device=dev), lw)[0]) * 2 - 1)
                    .reshape(self.H, self.W, 2)
                    .cpu()
                    for t in range(self.T)
                ]
            )
            hc, wc = la.texture_hw
            ys = (torch.arange(hc, device=dev) + 0.5) / hc
            xs = (torch.arange(wc, device=dev) + 0.5) / wc
            cy, cx = torch.meshgrid(ys, xs, indexing="ij")
            coords = torch.stack([cx, cy], -1).reshape(-1, 2)
            texture = torch.cat([la.color(c) for c in coords.split(65536)]).T.reshape(3, hc, wc).cpu()
            seen = splat(weights[k].reshape(-1, 1), uv.reshape(-1, 2), (hc, wc))[0]
            coverage = (seen > 0.25).float()
            layers.append(
                Layer(
                    texture=texture,
                    uv=uv.half(),
                    alpha=None if k == 0 else self.alphas[k].half(),
                    coverage=coverage,
                    name="background" if k == 0 else f"foreground_{k}",
                )
            )
        return CanonicalVideo(layers=layers, fps=self.fps)
