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

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from canon_edit.canonical import CanonicalVideo, Layer, composite_weights, splat
from canon_edit.flow import Flow
from canon_edit.video import Clip

from .base import Representation
from .encoding import EncodingConfig
from .fields import (
    MAPPING_ENCODING,
    TEXTURE_ENCODING,
    LayeredFitConfig,
    MappingField,
    TextureField,
    anneal_weights,
    gradient_loss,
    init_layer_affine,
    layered_param_groups,
    patch_batch,
    pixel_ndc,
    planes,
    texture_size,
)
from .motion import pixel_grid_ndc


@dataclass
class CoDeFConfig(LayeredFitConfig):
    """Every option of CoDeF (`--set key=value`); the shared ones are in `fields.LayeredFitConfig`."""

    canonical: EncodingConfig = planes(*TEXTURE_ENCODING)
    canonical_hidden: int = 64
    canonical_layers: int = 1
    deformation: EncodingConfig = planes(*MAPPING_ENCODING)
    deformation_hidden: int = 64
    deformation_layers: int = 2
    canonical_anneal_end: float = 0.3  # the canonical is annealed too (BARF): smooth images register better
    smooth_weight: float = 0.05
    texture_scale: float = 1.0  # canonical texels per pixel of the reference frame


class LayerField(nn.Module):
    """One layer: its deformation (affine per frame + residual) and its canonical colour field."""

    def __init__(
        self, cfg: CoDeFConfig, affines: Tensor, lo: Tensor, hi: Tensor, texture_hw: tuple[int, int]
    ):
        super().__init__()
        self.mapping = MappingField(
            cfg.deformation, cfg.deformation_hidden, cfg.deformation_layers, affines, lo, hi
        )
        self.texture = TextureField(cfg.canonical, cfg.canonical_hidden, cfg.canonical_layers, texture_hw)


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
        photometric = clip.frames if cfg.photometric_init else None
        self.layers = nn.ModuleList()
        for k in range(len(alphas)):
            A, lo, hi = init_layer_affine(flow, weights[k], ref, photometric, grid)
            hw = texture_size(lo, hi, H, W, cfg.texture_scale, cfg.max_texture)
            self.layers.append(LayerField(cfg, A, lo, hi, hw))

    def level_weights(self, step: int, n_levels: int, end: float) -> Tensor:
        return anneal_weights(self.cfg, step, n_levels, end).to(self.frames.device)

    def param_groups(self) -> list[dict[str, Any]]:
        fields = [f for la in self.layers for f in (la.mapping, la.texture)]
        return layered_param_groups(self.cfg, fields, [la.mapping.affine for la in self.layers])

    def sample(self, step: int, generator: torch.Generator) -> dict[str, Tensor]:
        return patch_batch(
            self.cfg,
            {"rgb": self.frames, "w": self.weights, "flow": self.flow_fwd, "ok": self.flow_ok},
            generator,
        )

    def losses(self, batch: dict[str, Tensor], step: int) -> tuple[dict[str, Tensor], dict[str, float]]:
        cfg = self.cfg
        lw = self.level_weights(step, self.layers[0].mapping.enc.n_levels, cfg.anneal_end)
        lc = self.level_weights(step, self.layers[0].texture.enc.n_levels, cfg.canonical_anneal_end)
        t, rgb, w = batch["t"], batch["rgb"], batch["w"]
        px_scale = torch.tensor([self.W / 2, self.H / 2], device=rgb.device)
        xy = pixel_ndc(batch["x"], batch["y"], self.H, self.W)
        pred = torch.zeros_like(rgb)
        smooth = rgb.new_zeros(())
        flow_terms = []
        for k, la in enumerate(self.layers):
            wk = w[..., k]
            sel = (wk.flatten(1).amax(1) > 0).nonzero().squeeze(1)
            if len(sel) == 0:
                continue
            m, P = len(sel), wk.shape[1]
            q, off = la.mapping(xy[sel].reshape(-1, 2), t[sel].reshape(-1), lw)
            color = la.texture(la.mapping.to_unit(q), lc).reshape(m, P, P, 3)
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
                q2, _ = la.mapping(p2, t[sel].reshape(-1)[ok] + 1, lw)
                flow_terms.append(((q2 - q[ok]) * px_scale).norm(dim=-1).mean())
        mse = ((pred - rgb) ** 2).mean()
        terms = {
            "rgb": mse,
            "grad": cfg.grad_weight * gradient_loss(pred, rgb),
            "smooth": cfg.smooth_weight * smooth,
        }
        if flow_terms:
            terms["flow"] = cfg.flow_weight * torch.stack(flow_terms).mean()
        return terms, {"mse": float(mse.detach())}

    @torch.no_grad()
    def bake(self) -> CanonicalVideo:
        dev = self.frames.device
        lw = torch.ones(self.layers[0].mapping.enc.n_levels, device=dev)
        grid = pixel_grid_ndc(self.H, self.W).to(dev).reshape(-1, 2)
        weights = self.weights.permute(3, 0, 1, 2).cpu()
        layers = []
        for k, la in enumerate(self.layers):
            uv = torch.stack(
                [
                    (
                        la.mapping.to_unit(la.mapping(grid, torch.full((len(grid),), t, device=dev), lw)[0])
                        * 2
                        - 1
                    )
                    .reshape(self.H, self.W, 2)
                    .cpu()
                    for t in range(self.T)
                ]
            )
            texture = la.texture.bake()
            seen = splat(weights[k].reshape(-1, 1), uv.reshape(-1, 2), la.texture.texture_hw)[0]
            layers.append(
                Layer(
                    texture=texture,
                    uv=uv.half(),
                    alpha=None if k == 0 else self.alphas[k].half(),
                    coverage=(seen > 0.25).float(),
                    name="background" if k == 0 else f"foreground_{k}",
                )
            )
        return CanonicalVideo(layers=layers, fps=self.fps)
