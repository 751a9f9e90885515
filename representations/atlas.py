"""Layered neural atlas (Kasten et al. 2021) with grid encodings and a shading residual (Hashing-NVD).

Per layer (background, then one foreground layer per mask label, back to front):
- a mapping (x, y, t) → (u, v): the CoDeF mapping (`fields.MappingField`, a per-frame affine from
  chained flow fits plus a zero-initialised residual field), so the layout starts identity-like and
  unfolded at step 0 — the cheap form of the original method's 15-minute mapping pre-training;
- a texture field over (u, v) sampled onto the editable texel grid at bake time;
- a multiplicative shading residual exp(s(u, v, t)) whose output layer starts at zero (shading 1),
  so lighting changes and shadows are kept out of the texture and re-applied to an edited one, and
  an additive detail residual for dynamic texture (`fields.appearance`), over (u, v, t) as the
  preset has it (`detail_canonical`), else over (x, y, t);
- for foreground layers, an alpha field over (x, y, t), evaluated through the layer's mapping as
  σ(a(u, v, t)): the silhouette rides with the object, so a moving shape is a static one plus a
  small change in time, and the edge of the alpha follows the edge of the texture exactly.
The prediction is the same back-to-front `over` composite `CanonicalVideo.render` uses
(`canonical.composite_weights`), so the bake renders what training optimised.

Losses, one term each in `losses`: reconstruction, gradient, sparsity (mean
foreground alpha: a layer covers only what it must), flow on uv, local rigidity of the mapping
(symmetric Dirichlet energy of the residual's Jacobian, which allows local rotation but not stretch
or folding), alpha supervised by the masks (for the whole fit by default; `alpha_bootstrap` > 0
decays it to zero) and regularisation of the log-shading towards 0.

Choices, measured on DAVIS blackswan at 426×240, 1500 steps, one CPU thread (bench/RESULTS.md):
- texture encoding: feature fields.planes (default) 28.90 dB in 295 s against the hash grid (16 levels ×
  2 features, 2^19 table) 28.87 dB in 391 s: the same quality per step, fields.planes faster per step,
  so fields.planes; `--set texture.kind=hash` keeps the hash grid (the better choice at large scale on
  GPU with tinycudann, where its capacity per parameter counts);
- shading resolution: fields.planes at 16–64 texels 28.90 dB; 8–16 28.55 dB; 16–128 27.81 dB with the
  alpha IoU down from 0.96 to 0.92, because a fine shading field starts to explain the object;
- texture resolution: the field has one texel per pixel where the layer is most magnified and
  the bake samples it twice as finely (`bake_oversample`), which recovers the 0.3–0.6 dB that
  bilinear re-rendering of a 1:1 texture loses; fitting the field itself at 2× reached the same
  PSNR 43% slower;
- colour only where a layer shows (`visible_colour`): texture, shading and detail are evaluated where
  the layer's composite weight exceeds 1e-3, mapping and alpha everywhere; on car-roundabout a
  step took 192 ms instead of 215 and a 600 s fit reached 28.6 dB instead of 28.3 (more steps);
- no separate mapping pre-training: the chained-affine init is already an unfolded,
  identity-like layout at step 0, and the rigidity term keeps it so;
- the alpha starts as the masks (`init_alpha`, `alpha_init_steps`): before the fit each alpha field
  alone is fitted to its mask through the initial mapping, about 20 s on a slow core. In 600 s on a CPU
  that took half the steps of the runs above, breakdance's alpha IoU went from 0.87 to 0.92 and a
  checkerboard edit's on-mask share from 0.94 to 0.98; camel and car-roundabout gained 0.6 dB, but
  that edit's warping error rose 14–16% on car-turn and car-roundabout (car-turn twice), so it is
  off by default: `--set alpha_init_steps=1000` for a clip whose silhouette the fit gets wrong;
- flow weight 5e-3, ten times CoDeF's: the turning cars' layouts slid along their motion and their
  canonicals were ghosted, with the residuals patching the rest (a car at 20-22 dB inside its mask,
  the rest of its frame at 28-34). At 1500 steps on the five DAVIS clips a checkerboard edit's warping
  error fell 5-39% (car-turn, camel, car-roundabout -22 to -24%) and PSNR moved -0.3 to +0.4 dB; on the
  demo clip the sprite gained 2.7 dB reconstructed and 1.6 dB edited against the truth. 1.5e-2 cost
  car-turn 0.5 dB more; a weaker rigidity, a finer mapping or a stronger shading regulariser did not
  help the cars;
- the grids learn at 1e-2; `lr_grid_background` (off) gives the background layer's a rate of their
  own: at 3e-2 and 1500 steps breakdance gained 1.0 dB (its crowd), car-roundabout 0.2, but in 600 s
  its dancer's alpha lost ground (IoU 0.90 -> 0.82 and 0.89, the checkerboard's on-mask share 0.97
  -> 0.91 and 0.96), so it is not the default; every grid at 3e-2 lost the dancer outright (IoU
  0.23);
- the detail residual from 30% of the fit on (`detail_start`, 0.5 before) and over each layer's
  canonical point (u, v, t) rather than the frame's (`detail_canonical`): at 4200 steps +0.25 to
  +0.6 dB on all five DAVIS clips, the canonicals' sharpness within -0.01/+0.03, a checkerboard edit
  still on its object and its warping error +0.5-7%, the demo's lifted keyframe edit unchanged against
  the truth. Started earlier over frame points, breakdance gained more (+0.9 dB at a weaker weight)
  but its canonical's sharpness fell from 0.43 to 0.24: the detail had taken the crowd's texture,
  which an edit does not carry; over canonical points it stayed at 0.45;
- rigidity weight 1e-2, not 1e-3: on car-turn (600 s) 29.5 dB and a checkerboard edit's warping
  error of 3.6e-3 against 26.4 dB and 8.0e-3 (the turning car's layout bent), on blackswan 29.9
  against 28.7 dB at the same edit error (part of both PSNR gains is more steps under less load);
  a foreground that truly bends (the procedural sprite) loses some PSNR to the stiffer layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from canon_edit.canonical import CanonicalVideo, composite_weights
from canon_edit.errors import UserError
from canon_edit.flow import Flow
from canon_edit.memory import FitCost
from canon_edit.video import Clip

from . import fields
from .encoding import EncodingConfig
from .motion import pixel_grid_ndc

NO_MASKS_NOTE = (
    "no masks: fitted a single background layer (no foreground); "
    "pass --masks DIR to get a separately editable foreground layer per mask label"
)


@dataclass
class AtlasConfig(fields.LayeredFitConfig):
    """Every option of the layered atlas (`--set key=value`); *_weight are the loss terms' weights.

    The options shared with CoDeF (schedule, learning rates, batches) are in `fields.LayeredFitConfig`.
    """

    texture: EncodingConfig = fields.planes(*fields.TEXTURE_ENCODING)
    texture_hidden: int = 64
    texture_layers: int = 1
    mapping: EncodingConfig = fields.planes(*fields.MAPPING_ENCODING)
    mapping_hidden: int = 64
    mapping_layers: int = 2
    alpha: EncodingConfig = fields.planes(4, 4, 16)
    alpha_hidden: int = 32
    alpha_layers: int = 1
    shading_residual: bool = True  # the atlas always had one: runs from before the option resume as fitted
    texture_anneal_end: float = 0.3  # the texture is annealed too (BARF): smooth images register better
    rigidity_weight: float = 1e-2
    # ten times CoDeF's: a checkerboard edit's warping error 5-39% lower on five DAVIS clips, the demo
    # sprite's edit +1.6 dB against the truth (bench/RESULTS.md); CoDeF keeps 5e-4, as 5e-3 cost its
    # demo keyframe lift 8 dB
    flow_weight: float = 5e-3
    sparsity_weight: float = 1e-3
    alpha_weight: float = 0.1  # mask supervision of alpha ...
    # ... decaying to zero (released) at this fraction of the planned steps; 0 = held for the whole
    # fit. Released at half of a 600 s fit, car-roundabout's alpha IoU fell from 0.99 to 0.96 and a
    # checkerboard edit's on-mask share from 1.0 to 0.98 (bench/RESULTS.md): a user's masks are kept.
    alpha_bootstrap: float = 0.0
    # Adam steps fitting each alpha alone to its mask before the fit; off by default: 1000 helped breakdance's
    # alpha but raised car-turn's edited warping error by 12-14% in two runs (bench/RESULTS.md)
    alpha_init_steps: int = 0
    texture_scale: float = 0.0  # field texels per reference pixel; 0 = 1 per pixel where most magnified
    max_texture_scale: float = 2.0
    bake_oversample: float = 2.0  # baked texels per field texel, so detail survives bilinear re-rendering
    max_foreground: int = 4  # mask labels beyond this are refused rather than fitted slowly
    require_masks: bool = False


class AtlasLayer(nn.Module):
    """One layer: mapping, texture, shading residual and (foreground only) alpha."""

    def __init__(
        self,
        cfg: AtlasConfig,
        affines: Tensor,
        lo: Tensor,
        hi: Tensor,
        texture_hw: tuple[int, int],
        foreground: bool,
    ) -> None:
        super().__init__()
        frames = affines.shape[0]
        self.mapping = fields.MappingField(
            cfg.mapping, cfg.mapping_hidden, cfg.mapping_layers, affines, lo, hi
        )
        self.texture = fields.TextureField(cfg.texture, cfg.texture_hidden, cfg.texture_layers, texture_hw)
        self.shading, self.detail = fields.residual_fields(cfg, frames)
        self.alpha = (
            fields.SpaceTimeField(cfg.alpha, cfg.alpha_hidden, cfg.alpha_layers, 1, frames, zero_init=False)
            if foreground
            else None
        )


class LayerSample(NamedTuple):
    q: Tensor  # N×2 reference-space points
    uv: Tensor  # N×2 texture coordinates in [0, 1]
    logit: Tensor | None  # N alpha logits (foreground layers)
    look: fields.Appearance | None = None  # colour and residuals, where the composite asked for them


def evaluate_layer(la: AtlasLayer, xy: Tensor, t: Tensor, map_w: Tensor) -> LayerSample:
    """One layer's geometry at frame points xy (N×2 NDC) of frames t (N,); colour is `visible_colour`."""
    q, _ = la.mapping(xy, t, map_w)
    uv = la.mapping.to_unit(q)
    return LayerSample(q, uv, la.alpha(uv, t)[:, 0] if la.alpha is not None else None)


HIDDEN = 1e-3  # composite weight at or under which a layer is not seen: its colour is not evaluated


def visible_colour(
    la: AtlasLayer, uv: Tensor, xy: Tensor, t: Tensor, tex_w: Tensor | None, detail_on: bool, weight: Tensor
) -> fields.Appearance:
    """A layer's appearance where its composite weight exceeds `HIDDEN`, zero elsewhere.

    Elsewhere the colour adds under `HIDDEN` of itself to the prediction, and the rgb gradient its
    alpha would get through it is scaled by the sigmoid's slope, α(1 − α) < `HIDDEN` there: a
    foreground is absent from most of a frame and hides the background inside itself, so most of
    the texture, shading and detail evaluations of a step were spent on pixels nobody sees.
    The residual regularisers average over all points as before (zeros where skipped).
    """
    idx = (weight.detach() > HIDDEN).nonzero().squeeze(1)
    look = fields.appearance(
        la.texture(uv[idx], tex_w), la.shading, la.detail if detail_on else None, uv[idx], xy[idx], t[idx]
    )
    return fields.Appearance(
        *(None if v is None else v.new_zeros(len(uv), 3).index_copy(0, idx, v) for v in look)
    )


def init_alpha(la: AtlasLayer, mask: Tensor, cfg: AtlasConfig, seed: int, points: int = 8192) -> None:
    """Fit a foreground layer's alpha field to its mask (T×H×W) through the layer's initial mapping.

    The mapping starts as its per-frame affine (the residual is zero), so this is a cheap fit of the
    alpha field alone; the silhouette is then in place at step 0 instead of being learned while the
    texture and the mapping are, which a short fit cannot afford.
    """
    if cfg.alpha_init_steps <= 0 or la.alpha is None:
        return
    T, H, W = mask.shape
    grid = pixel_grid_ndc(H, W).reshape(-1, 2)
    target = mask.reshape(T, -1)
    alpha = la.alpha
    groups = [(alpha.enc, cfg.lr_grid), (alpha.mlp, cfg.lr_mlp)]
    opt = torch.optim.Adam([{"params": m.parameters(), "lr": lr} for m, lr in groups])
    g = torch.Generator().manual_seed(seed)
    for _ in range(cfg.alpha_init_steps):
        t = torch.randint(T, (points,), generator=g)
        i = torch.randint(H * W, (points,), generator=g)
        with torch.no_grad():
            uv = la.mapping.to_unit(la.mapping.affine_part(grid[i], t))
        logit = alpha(uv, t)[:, 0]
        loss = F.binary_cross_entropy_with_logits(logit, target[t, i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def rigidity_energy(q: Tensor, A: Tensor, px_scale: Tensor) -> Tensor:
    """Mean symmetric Dirichlet energy of the mapping's residual Jacobian over n×P×P patches.

    q: n×P×P×2 mapped points; A: n×2×2 the (detached) linear part of each patch's frame affine;
    px_scale: (W/2, H/2), pixels per NDC unit. The finite-difference Jacobian times A⁻¹ is the
    residual's Jacobian, identity at init; ‖J‖² + ‖J⁻¹‖² − 4 is 0 for any rotation, grows with
    stretch and explodes at folds (det → 0): the layered atlas's layout regulariser, measured
    relative to the affine so that a camera zoom costs nothing. It applies to every pixel, not only
    where the layer is visible: a mapping left free where its layer is hidden or absent drifted and
    folded on blackswan (26.3 dB, alpha IoU 0.80 at 1500 steps, against 29.5 dB and 0.97).
    """
    jx = (q[:, :-1, 1:] - q[:, :-1, :-1]).flatten(1, 2) * px_scale[0]
    jy = (q[:, 1:, :-1] - q[:, :-1, :-1]).flatten(1, 2) * px_scale[1]
    J = torch.stack([jx, jy], -1) @ torch.linalg.inv(A)[:, None]  # n×M×2×2, columns d/dx, d/dy
    return ((J**2).sum((-1, -2)) * (1 + 1 / (torch.linalg.det(J) ** 2 + 1e-4)) - 4).mean()


class Atlas(fields.LayeredRepresentation):
    name = "atlas"
    config_class = AtlasConfig
    # a fit's peak with one mask label (two layers), fitted to davis_camel at 426×240 (968 / 1459 MiB at
    # 30 / 90 frames) and davis_breakdance at 854×480 (2031 / 2891 MiB at 30 / 60); within -11% to +4% of
    # later runs (bench/RESULTS.md, "Fit memory: what fit checks before it reads a clip"); each label more,
    # fitted to davis_camel's mask split in two and three labels (section "each mask label is a layer")
    fit_memory = FitCost(602e6, 1523.0, 79.0, label_frame_pixel=932.0, label_clip_pixel=41.0)

    def __init__(self, clip: Clip, flow: Flow, cfg: AtlasConfig, init_cache: Path | None = None):
        super().__init__()
        T, H, W = clip.T, clip.H, clip.W
        masks = check_masks(clip, cfg)
        self.n_fg = masks.shape[1]
        weights = composite_weights([torch.ones(T, H, W)] + list(masks.unbind(1)))  # L×T×H×W
        init = self.setup(clip, flow, cfg, weights, init_cache, masks=masks.permute(0, 2, 3, 1).contiguous())
        self.layers = nn.ModuleList()
        self.baked_hw: list[tuple[int, int]] = []
        for k, (A, lo, hi) in enumerate(init):
            scale = cfg.texture_scale or fields.auto_texture_scale(A, weights[k], cfg.max_texture_scale)
            hw = fields.texture_size(lo, hi, H, W, scale, cfg.max_texture)
            self.baked_hw.append(
                fields.texture_size(lo, hi, H, W, scale * cfg.bake_oversample, cfg.max_texture)
            )
            self.layers.append(AtlasLayer(cfg, A, lo, hi, hw, foreground=k > 0))
        for k, la in enumerate(self.layers[1:]):
            init_alpha(la, masks[:, k], cfg, seed=cfg.train.seed + k)

    def bootstrap_weight(self, step: int) -> float:
        """Mask supervision of alpha: full at step 0, half-cosine down to 0, then released (or held)."""
        end = self.cfg.alpha_bootstrap * self.schedule_steps
        progress = min(1.0, step / end) if end > 0 else 0.0
        return self.cfg.alpha_weight * 0.5 * (1 + math.cos(math.pi * progress))

    def param_groups(self) -> list[dict[str, Any]]:
        trained = [
            [f for f in (la.mapping, la.texture, la.shading, la.detail, la.alpha) if f is not None]
            for la in self.layers
        ]
        return fields.layered_param_groups(self.cfg, trained, [la.mapping.affine for la in self.layers])

    def composite(
        self, xy: Tensor, t: Tensor, map_w: Tensor, tex_w: Tensor | None, detail_on: bool = True
    ) -> tuple[Tensor, list[LayerSample], list[Tensor]]:
        """N×3 prediction: the back-to-front `over` composite `CanonicalVideo.render` computes.

        A layer's colour is evaluated only where its composite weight exceeds `HIDDEN`
        (`visible_colour`): the geometry (mapping, alpha) is evaluated everywhere.
        """
        out = [evaluate_layer(la, xy, t, map_w) for la in self.layers]
        alphas = [torch.ones_like(xy[:, 0])] + [torch.sigmoid(o.logit) for o in out[1:]]
        comp = composite_weights(alphas)
        out = [
            o._replace(look=visible_colour(la, o.uv, xy, t, tex_w, detail_on, w))
            for la, o, w in zip(self.layers, out, comp, strict=True)
        ]
        return (comp[..., None] * torch.stack([o.look.color for o in out])).sum(0), out, alphas

    def losses(self, batch: dict[str, Tensor], step: int) -> tuple[dict[str, Tensor], dict[str, float]]:
        cfg = self.cfg
        map_w = self.level_weights(step, self.layers[0].mapping.enc.n_levels, cfg.anneal_end)
        tex_w = self.level_weights(step, self.layers[0].texture.enc.n_levels, cfg.texture_anneal_end)
        t, rgb, w = batch["t"], batch["rgb"], batch["w"]
        n, P = t.shape[:2]
        tf = t.reshape(-1)
        xy = fields.pixel_ndc(batch["x"], batch["y"], self.H, self.W).reshape(-1, 2)
        px_scale = xy.new_tensor([self.W / 2, self.H / 2])
        pred, out, alphas = self.composite(xy, tf, map_w, tex_w, self.detail_on(step))
        pred = pred.reshape(n, P, P, 3)
        mse = self.reconstruction_mse(pred, rgb, batch)
        flow_terms, rigid_terms = [], []
        for k, (la, o) in enumerate(zip(self.layers, out, strict=True)):
            A = la.mapping.affine.detach()[t[:, 0, 0], :, :2]
            rigid_terms.append(rigidity_energy(o.q.reshape(n, P, P, 2), A, px_scale))
            # flow is the visible layer's motion: it constrains a layer only where the masks give it
            ok = (batch["ok"] & (w[..., k] > 0.5)).reshape(-1)
            term = self.flow_term(la.mapping, xy, tf, o.q, batch["flow"].reshape(-1, 2), ok, px_scale, map_w)
            if term is not None:
                flow_terms.append(term)
        terms = {
            "rgb": mse,
            "grad": cfg.grad_weight * fields.gradient_loss(pred, rgb),
            "rigidity": cfg.rigidity_weight * torch.stack(rigid_terms).mean(),
            **fields.residual_terms(cfg, [o.look for o in out]),
        }
        if flow_terms:
            terms["flow"] = cfg.flow_weight * torch.stack(flow_terms).mean()
        if self.n_fg:
            logits = torch.stack([o.logit for o in out[1:]], -1)
            terms["sparsity"] = cfg.sparsity_weight * torch.stack(alphas[1:]).mean()
            boot = self.bootstrap_weight(step)
            if boot > 0:
                target = batch["masks"].reshape(-1, self.n_fg)
                terms["alpha"] = boot * F.binary_cross_entropy_with_logits(logits, target)
        return terms, {"mse": float(mse.detach())}

    @torch.no_grad()
    def bake(self) -> CanonicalVideo:
        """Textures on their texel grids; uv, alpha and the residuals at every pixel of every frame."""
        dev, map_w, grid = self.bake_grid()
        bakes = [fields.LayerBake(self.T, self.H, self.W, la.texture.texture_hw) for la in self.layers]
        for t in range(self.T):
            frame_t = torch.full((len(grid),), t, device=dev)
            samples = [
                fields.in_chunks(partial(evaluate_layer, la, map_w=map_w), grid, frame_t)
                for la in self.layers
            ]
            alphas = [torch.ones(len(grid), device=dev)] + [
                torch.sigmoid(s.logit) for s in samples if s.logit is not None
            ]
            for la, s, bake, weight, alpha in zip(
                self.layers, samples, bakes, composite_weights(alphas), alphas, strict=True
            ):
                residuals = self.frame_residuals(la.shading, la.detail, s.uv, grid, t)
                bake.add(t, s.uv, weight, None if la.alpha is None else alpha, residuals)
        layers = [
            bake.layer(
                la.texture.bake(self.baked_hw[k]),
                self.baked_hw[k],
                "background" if k == 0 else f"foreground_{k}",
            )
            for k, (la, bake) in enumerate(zip(self.layers, bakes, strict=True))
        ]
        return CanonicalVideo(layers=layers, fps=self.fps)

    def extra_metrics(self, clip: Clip, cv: CanonicalVideo) -> dict[str, Any]:
        """alpha_iou: visible foreground (composite weight > 0.5) against the masks, mean over layers.

        The visible part, not the raw alpha, is what a mask label marks when objects overlap; with
        one foreground layer the two are the same.
        """
        figures: dict[str, Any] = {"layers": len(cv.layers)}
        if clip.masks is None:
            figures["note"] = NO_MASKS_NOTE
            return figures
        visible = composite_weights(
            [torch.ones(cv.T, cv.H, cv.W)] + [la.alpha.float() for la in cv.layers[1:]]
        )
        ious = [mask_iou(visible[k + 1] > 0.5, clip.masks[:, k] > 0.5) for k in range(clip.masks.shape[1])]
        figures["alpha_iou"] = round(sum(ious) / len(ious), 4)
        if len(ious) > 1:
            figures["alpha_iou_per_layer"] = [round(v, 4) for v in ious]
        return figures


def check_masks(clip: Clip, cfg: AtlasConfig) -> Tensor:
    """T×K×H×W foreground masks (K = 0 without masks), refusing what the config cannot fit."""
    if clip.masks is None:
        if cfg.require_masks:
            raise UserError(
                "this atlas preset needs masks (require_masks=true) but the clip has none; "
                "pass --masks DIR or --set require_masks=false for a single background layer"
            )
        return torch.zeros(clip.T, 0, clip.H, clip.W)
    k = clip.masks.shape[1]
    if k > cfg.max_foreground:
        raise UserError(
            f"the masks have {k} labels but the atlas fits at most {cfg.max_foreground} foreground "
            f"layers; merge labels in the mask PNGs or pass --set max_foreground={k}"
        )
    return clip.masks.float()


def mask_iou(pred: Tensor, target: Tensor) -> float:
    union = (pred | target).sum()
    return float((pred & target).sum() / union) if union > 0 else 1.0
