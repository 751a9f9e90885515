"""SDS / DDS edits: optimise canonical textures through differentiable renders of random frames.

Each step renders a batch of random frames with the current textures (the same `grid_sample`
gather and `over` composite that plays the edit back), crops a random square, resizes it to the
model's resolution, encodes it with the VAE and applies the score's update through the encoder
and the renderer to the RGB texels (Adam, values kept in [0, 1]).

Why RGB texels and not a latent texture: the render is defined in pixel space (per-layer
alpha, multiplicative shading, warps that rotate and scale), and latents do not commute with
any of these, so a latent texture would be rendered wrongly and decoding it would blur the texels
the edit never touched. RGB keeps the playback model exact and lets `--layers`/`--mask` act
texel by texel. The price is the VAE encoder's backward each step; the tiny autoencoder
(`load.tiny_vae`) removes most of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ..canonical import CanonicalVideo
from ..edit.checkpoint import CheckpointedLoop, EditCheckpoint, per_step_seed
from ..errors import UserError
from .models import DiffusionModel, LoadOptions, encode_images, encode_prompts, unet_input
from .score import (
    ANNEALING,
    DDS,
    SDS,
    WEIGHTINGS,
    EpsFn,
    Guidance,
    epsilon_from_v,
    sample_timesteps,
    timestep_bounds,
)


@dataclass
class DistillConfig:
    """Options of `--mode sds` and `--mode dds` (presets sds.yaml, dds.yaml in canon_edit/presets/edit/)."""

    model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    steps: int = 300
    lr: float = 0.01  # Adam step on texels in [0, 1]
    batch: int = 1  # frames rendered per step
    guidance_scale: float = 100.0
    negative_prompt: str = ""  # the unconditional branch of CFG
    t_min: float = 0.02  # timestep range as fractions of T
    t_max: float = 0.98
    t_max_end: float = 0.5  # upper bound at the last step when annealing
    anneal: str = "linear"  # none | linear
    weighting: str = "sds"  # sds: w(t) = 1 − ᾱ_t | uniform
    grad_clip: float = 0.0  # clamp g elementwise to ±grad_clip; 0 = off
    load: LoadOptions = field(default_factory=LoadOptions)


def check_config(cfg: DistillConfig) -> None:
    """Reject option values the loop would only fail on later."""
    if cfg.steps < 1 or cfg.batch < 1 or cfg.lr <= 0:
        raise UserError("sds/dds need steps ≥ 1, batch ≥ 1 and lr > 0")
    if not 0 < cfg.t_min <= cfg.t_max < 1 or not 0 < cfg.t_max_end < 1:
        raise UserError(
            f"timestep fractions must satisfy 0 < t_min ≤ t_max < 1, got {cfg.t_min}, {cfg.t_max}"
        )
    if cfg.anneal not in ANNEALING:
        raise UserError(f"unknown anneal '{cfg.anneal}'; use one of {', '.join(ANNEALING)}")
    if cfg.weighting not in WEIGHTINGS:
        raise UserError(f"unknown weighting '{cfg.weighting}'; use one of {', '.join(WEIGHTINGS)}")


def unet_eps(model: DiffusionModel) -> EpsFn:
    """The model's UNet as an ε-predictor (v-prediction models converted), float32 out."""

    def eps(noisy: Tensor, t: Tensor, emb: Tensor) -> Tensor:
        t = t.to(model.device)
        out = model.unet(
            unet_input(model, noisy), t, encoder_hidden_states=emb.to(model.dtype)
        ).sample.float()
        if model.prediction_type == "v_prediction":
            return epsilon_from_v(out, noisy.float(), model.alphas_cumprod, t)
        return out

    return eps


def crop_resize(images: Tensor, box: tuple[int, int, int], size: int) -> Tensor:
    """Square crop (y, x, side) of B×3×H×W renders, resized to size×size; differentiable."""
    y, x, s = box
    crop = images[..., y : y + s, x : x + s]
    if s == size:
        return crop
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=s > size)


def random_square(height: int, width: int, generator: torch.Generator) -> tuple[int, int, int]:
    """The largest square in the frame, at a random position along the long side."""
    s = min(height, width)
    y = int(torch.randint(height - s + 1, (1,), generator=generator))
    x = int(torch.randint(width - s + 1, (1,), generator=generator))
    return y, x, s


def on_device(cv: CanonicalVideo, device: torch.device) -> CanonicalVideo:
    """A view of `cv` whose per-frame fields live on `device` (textures are passed separately)."""

    def move(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.to(device)

    return replace(
        cv,
        layers=[
            replace(
                la,
                uv=la.uv.to(device),
                alpha=move(la.alpha),
                shading=move(la.shading),
                detail=move(la.detail),
            )
            for la in cv.layers
        ],
    )


def make_guidance(
    model: DiffusionModel, method: str, prompt: str, source_prompt: str, cfg: DistillConfig
) -> Guidance:
    """SDS or DDS over the model's UNet with the prompts encoded once."""
    emb = encode_prompts(model, [cfg.negative_prompt, prompt, source_prompt])
    uncond, cond, source = emb[0:1], emb[1:2], emb[2:3]
    common = {
        "eps_fn": unet_eps(model),
        "alphas_cumprod": model.alphas_cumprod,
        "cond": cond,
        "uncond": uncond,
        "guidance_scale": cfg.guidance_scale,
        "weighting": cfg.weighting,
        "grad_clip": cfg.grad_clip,
    }
    if method == "dds":
        return DDS(source_cond=source, **common)
    return SDS(**common)


Views = Callable[[int, torch.Generator], tuple[Tensor, Tensor | None]]


def distill_steps(
    model: DiffusionModel,
    method: str,
    prompt: str,
    cfg: DistillConfig,
    optimiser: torch.optim.Optimizer,
    views: Views,
    *,
    source_prompt: str = "",
    seed: int = 0,
    progress: bool = True,
    after_backward: Callable[[], None] | None = None,
    after_step: Callable[[], None] | None = None,
    checkpoint: EditCheckpoint | None = None,
    counts: dict[str, int] | None = None,
) -> None:
    """The SDS/DDS loop over any differentiable renderer: textures here, Gaussians in a plugin.

    `views(step, generator)` returns B×3×R×R renders at the model's resolution that carry gradients
    to the optimised parameters, and (for DDS) the same views from the unedited asset; it draws its
    frames and crops from `generator` before the timesteps are drawn from it. Every step's draws are
    seeded by its index, so with a `checkpoint` a stopped loop resumes bit for bit (`counts`, what
    `views` counts, are kept with it).
    """
    check_config(cfg)
    device = model.device
    guidance = make_guidance(model, method, prompt, source_prompt, cfg)
    picks = torch.Generator()
    noise_gen = torch.Generator(device)
    num_train = model.alphas_cumprod.shape[0]
    loop = CheckpointedLoop(checkpoint, optimiser, device, cfg.steps, counts)
    bar = tqdm(total=cfg.steps, initial=loop.start, desc=method, disable=not progress)
    with loop.running(), bar:
        for step in range(loop.start, cfg.steps):
            picks.manual_seed(per_step_seed(seed, step))
            noise_gen.manual_seed(per_step_seed(seed, step, stream=1))
            images, sources = views(step, picks)
            bounds = timestep_bounds(
                step / max(cfg.steps - 1, 1), cfg.t_min, cfg.t_max, cfg.t_max_end, cfg.anneal
            )
            t = sample_timesteps(picks, images.shape[0], bounds, num_train).to(device)
            latents = encode_images(model, images)
            noise = torch.randn(latents.shape, generator=noise_gen, device=device)
            source = None
            if method == "dds":
                if sources is None:
                    raise ValueError("dds needs the unedited views")
                with torch.no_grad():
                    source = encode_images(model, sources)
            loss = guidance.loss(latents, t, noise, source)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if after_backward is not None:
                after_backward()
            optimiser.step()
            if after_step is not None:
                after_step()
            bar.update(1)
            loop.step_done(step)


def distill(
    cv: CanonicalVideo,
    model: DiffusionModel,
    method: str,
    prompt: str,
    cfg: DistillConfig,
    *,
    layers: list[int],
    masks: dict[int, Tensor] | None = None,
    source_prompt: str = "",
    seed: int = 0,
    progress: bool = True,
    checkpoint: EditCheckpoint | None = None,
) -> dict[int, Tensor]:
    """Optimised textures of `layers` (k → 3×Hc×Wc on the CPU) under SDS or DDS.

    `masks[k]` (Hc×Wc bool) limits the update of layer k to its True texels; DDS compares each
    render with the same frames and crop rendered from the original textures.
    """
    check_config(cfg)
    device = model.device
    view = on_device(cv, device)
    original = [t.to(device, torch.float32) for t in cv.textures()]
    params = {k: original[k].clone().requires_grad_(True) for k in layers}
    keep = {k: m.to(device, torch.float32) for k, m in (masks or {}).items() if k in params}
    res = model.resolution

    def views(step: int, picks: torch.Generator) -> tuple[Tensor, Tensor | None]:
        frames = torch.randint(cv.T, (cfg.batch,), generator=picks)
        box = random_square(cv.H, cv.W, picks)
        textures = [params.get(k, tex) for k, tex in enumerate(original)]
        images = crop_resize(view.render(frames, textures), box, res)
        if method != "dds":
            return images, None
        with torch.no_grad():
            return images, crop_resize(view.render(frames, original), box, res)

    def mask_grads() -> None:
        for k, m in keep.items():
            if params[k].grad is not None:
                params[k].grad.mul_(m)

    def clamp() -> None:
        with torch.no_grad():
            for p in params.values():
                p.clamp_(0, 1)

    opt = torch.optim.Adam(list(params.values()), lr=cfg.lr)
    distill_steps(
        model, method, prompt, cfg, opt, views,
        source_prompt=source_prompt, seed=seed, progress=progress,
        after_backward=mask_grads, after_step=clamp, checkpoint=checkpoint,
    )  # fmt: skip
    return {k: p.detach().cpu() for k, p in params.items()}
