"""CoDeF (Ouyang et al. 2023): one canonical image per layer plus a deformation field over (x, y, t).

Improvements over the paper's recipe, each aimed at a sharp, editable canonical image:
- the deformation is a per-frame affine map (initialised by chaining robust affine fits of the
  optical flow) plus a residual field, so camera pans and object motion need no large offsets;
- the residual field is annealed coarse-to-fine and kept smooth inside each training patch;
- the canonical has one texel per pixel where its layer is most magnified and is baked at twice
  that (as the atlas), so a zoom does not blur and bilinear re-rendering keeps the detail;
- training batches are small patches, which gives the gradient (edge) loss and the smoothness
  term for free, and the flow-consistency loss ties deformations of neighbouring frames; half the
  patches are drawn where the fit is worst (`fields.mined_batch`, the default preset's `mined_share`).
One canonical/deformation pair per mask group (background + one layer per mask label), and, as in
the layered atlas, a shading and a detail residual per layer (`fields.appearance`), which the paper
lacks: without them the light on blackswan's water and its ripples went into the canonical or stayed
as error.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from canon_edit.canonical import CanonicalVideo, composite_weights
from canon_edit.flow import Flow
from canon_edit.memory import FitCost
from canon_edit.video import Clip

from . import fields
from .encoding import EncodingConfig
from .fields import (
    MAPPING_ENCODING,
    TEXTURE_ENCODING,
    LayeredFitConfig,
    LayeredRepresentation,
    MappingField,
    TextureField,
    appearance,
    auto_texture_scale,
    gradient_loss,
    layered_param_groups,
    pixel_ndc,
    planes,
    residual_fields,
    residual_terms,
    texture_size,
)


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
    # deformation smoothness inside a patch; 0.05 resisted real bends: the demo's bending sprite
    # drifted by a texel a frame away from the keyframe (edit 28.3 dB against 34.0 at 0.005) and
    # DAVIS blackswan / car-turn gained 0.3 / 0.2 dB at 0.005 (bench/RESULTS.md)
    smooth_weight: float = 0.005
    # canonical texels per pixel of the reference frame; 0 = one per pixel where the layer is most
    # magnified (as the atlas). 1 and no oversampling in the dataclass, so that runs from before
    # resume with the texture shapes they were fitted with; the preset asks for 0 and 2.
    texture_scale: float = 1.0
    max_texture_scale: float = 2.0
    bake_oversample: float = 1.0  # baked texels per field texel, so detail survives bilinear re-rendering


class CoDeFLayer(nn.Module):
    """One layer: its deformation (affine per frame + residual) and its canonical colour field."""

    def __init__(
        self, cfg: CoDeFConfig, affines: Tensor, lo: Tensor, hi: Tensor, texture_hw: tuple[int, int]
    ):
        super().__init__()
        self.mapping = MappingField(
            cfg.deformation, cfg.deformation_hidden, cfg.deformation_layers, affines, lo, hi
        )
        self.texture = TextureField(cfg.canonical, cfg.canonical_hidden, cfg.canonical_layers, texture_hw)
        self.shading, self.detail = residual_fields(cfg, affines.shape[0])


class CoDeF(LayeredRepresentation):
    name = "codef"
    config_class = CoDeFConfig
    # a fit's peak with one mask label (two layers), fitted to davis_camel at 426×240 (875 / 1273 MiB at
    # 30 / 90 frames) and davis_breakdance at 854×480 (2040 / 2952 MiB at 30 / 60); within -11% to +4% of
    # later runs (bench/RESULTS.md, "Fit memory: what fit checks before it reads a clip"); each label more,
    # fitted to davis_camel's mask split in two and three labels (section "each mask label is a layer")
    fit_memory = FitCost(550e6, 1544.0, 73.0, label_clip_pixel=25.0)

    def __init__(self, clip: Clip, flow: Flow, cfg: CoDeFConfig, init_cache: Path | None = None):
        super().__init__()
        T, H, W = clip.T, clip.H, clip.W
        alphas = [torch.ones(T, H, W)] + (
            [clip.masks[:, k] for k in range(clip.masks.shape[1])] if clip.masks is not None else []
        )
        self.alphas = alphas
        init = self.setup(clip, flow, cfg, composite_weights(alphas), init_cache)  # weights L×T×H×W
        self.layers = nn.ModuleList()
        self.baked_hw: list[tuple[int, int]] = []
        for k, (A, lo, hi) in enumerate(init):
            scale = cfg.texture_scale or auto_texture_scale(A, self.weights[..., k], cfg.max_texture_scale)
            hw = texture_size(lo, hi, H, W, scale, cfg.max_texture)
            self.baked_hw.append(texture_size(lo, hi, H, W, scale * cfg.bake_oversample, cfg.max_texture))
            self.layers.append(CoDeFLayer(cfg, A, lo, hi, hw))

    def param_groups(self) -> list[dict[str, Any]]:
        fields = [
            [f for f in (la.mapping, la.texture, la.shading, la.detail) if f is not None]
            for la in self.layers
        ]
        return layered_param_groups(self.cfg, fields, [la.mapping.affine for la in self.layers])

    def losses(self, batch: dict[str, Tensor], step: int) -> tuple[dict[str, Tensor], dict[str, float]]:
        cfg = self.cfg
        lw = self.level_weights(step, self.layers[0].mapping.enc.n_levels, cfg.anneal_end)
        lc = self.level_weights(step, self.layers[0].texture.enc.n_levels, cfg.canonical_anneal_end)
        t, rgb, w = batch["t"], batch["rgb"], batch["w"]
        px_scale = torch.tensor([self.W / 2, self.H / 2], device=rgb.device)
        xy = pixel_ndc(batch["x"], batch["y"], self.H, self.W)
        pred = torch.zeros_like(rgb)
        smooth = rgb.new_zeros(())
        flow_terms, parts = [], []
        detail_on = self.detail_on(step)
        for k, la in enumerate(self.layers):
            wk = w[..., k]
            sel = (wk.flatten(1).amax(1) > 0).nonzero().squeeze(1)
            if len(sel) == 0:
                continue
            m, P = len(sel), wk.shape[1]
            xs, ts = xy[sel].reshape(-1, 2), t[sel].reshape(-1)
            q, off = la.mapping(xs, ts, lw)
            uv = la.mapping.to_unit(q)
            part = appearance(la.texture(uv, lc), la.shading, la.detail if detail_on else None, uv, xs, ts)
            parts.append(part)
            pred = pred.index_add(0, sel, wk[sel][..., None] * part.color.reshape(m, P, P, 3))
            off = off.reshape(m, P, P, 2) * px_scale
            inside = (wk[sel] > 0.5).float()
            sx = ((off[:, :, 1:] - off[:, :, :-1]) ** 2).sum(-1) * inside[:, :, 1:] * inside[:, :, :-1]
            sy = ((off[:, 1:] - off[:, :-1]) ** 2).sum(-1) * inside[:, 1:] * inside[:, :-1]
            smooth = smooth + (sx.sum() + sy.sum()) / inside.numel()
            ok = (batch["ok"][sel] & (wk[sel] > 0.5)).reshape(-1)
            term = self.flow_term(
                la.mapping, xs, ts, q,
                batch["flow"][sel].reshape(-1, 2), ok, px_scale, lw,
            )  # fmt: skip
            if term is not None:
                flow_terms.append(term)
        mse = self.reconstruction_mse(pred, rgb, batch)
        terms = {
            "rgb": mse,
            "grad": cfg.grad_weight * gradient_loss(pred, rgb),
            "smooth": cfg.smooth_weight * smooth,
            **residual_terms(cfg, parts),
        }
        if flow_terms:
            terms["flow"] = cfg.flow_weight * torch.stack(flow_terms).mean()
        return terms, {"mse": float(mse.detach())}

    @torch.no_grad()
    def bake(self) -> CanonicalVideo:
        dev, lw, grid = self.bake_grid()
        weights = self.weights.permute(3, 0, 1, 2).cpu()
        layers = []
        for k, la in enumerate(self.layers):
            bake = fields.LayerBake(self.T, self.H, self.W, la.texture.texture_hw)
            for t in range(self.T):
                frame_t = torch.full((len(grid),), t, device=dev)
                unit = la.mapping.to_unit(fields.in_chunks(partial(la.mapping, level_w=lw), grid, frame_t)[0])
                residuals = self.frame_residuals(la.shading, la.detail, unit, grid, t)
                bake.add(t, unit, weights[k, t], None if k == 0 else self.alphas[k][t], residuals)
            name = "background" if k == 0 else f"foreground_{k}"
            layers.append(bake.layer(la.texture.bake(self.baked_hw[k]), self.baked_hw[k], name))
        return CanonicalVideo(layers=layers, fps=self.fps)
