"""Score distillation: SDS and DDS as pure tensor formulas, and the `Guidance` they implement.

Both turn a frozen noise predictor into an update g for the latents z of a rendered image:

- SDS (DreamFusion): z_t = √ᾱ_t z + √(1-ᾱ_t) ε,  g = w(t) (ε̂_cfg(z_t, y) − ε);
- DDS (Hertz et al.): the same ε and t applied to the source latents too, and
  g = w(t) (ε̂_cfg(z_t, y_tgt) − ε̂_cfg(ẑ_t, y_src)), which cancels the noisy part SDS shares
  with every image, so only the direction the prompt change asks for remains.

g is applied through the target-MSE loss 0.5‖z − (z − g).detach()‖² / B, whose gradient is g / B
(exactly g for one sample): no gradient flows through the denoiser, and any optimiser and any
chain rule back to the texture (VAE encoder, renderer) applies unchanged. ε, t and the noise are
inputs, so every formula can be checked against autograd with them fixed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

EpsFn = Callable[[Tensor, Tensor, Tensor], Tensor]  # (noisy latents B×C×h×w, t B, text B×L×D) → ε̂

WEIGHTINGS = ("sds", "uniform")
ANNEALING = ("none", "linear")


class Guidance(Protocol):
    """Given latents (and the source latents, for DDS) and a fixed t and ε: a loss whose gradient is g."""

    def loss(self, latents: Tensor, t: Tensor, noise: Tensor, source: Tensor | None = None) -> Tensor: ...


def _expand(a: Tensor, t: Tensor) -> Tensor:
    return a[t].float().view(-1, 1, 1, 1)


def add_noise(latents: Tensor, noise: Tensor, alphas_cumprod: Tensor, t: Tensor) -> Tensor:
    """z_t = √ᾱ_t z + √(1−ᾱ_t) ε (the forward process)."""
    a = _expand(alphas_cumprod, t)
    return a.sqrt() * latents + (1 - a).sqrt() * noise


def weight(alphas_cumprod: Tensor, t: Tensor, kind: str = "sds") -> Tensor:
    """w(t) as B×1×1×1: 'sds' = 1−ᾱ_t (DreamFusion), 'uniform' = 1."""
    if kind == "sds":
        return 1 - _expand(alphas_cumprod, t)
    if kind == "uniform":
        return torch.ones_like(_expand(alphas_cumprod, t))
    raise ValueError(f"unknown weighting '{kind}'; use one of {WEIGHTINGS}")


def guided_noise(eps_uncond: Tensor, eps_cond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance: ε̂_u + s (ε̂_c − ε̂_u)."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def epsilon_from_v(v: Tensor, noisy: Tensor, alphas_cumprod: Tensor, t: Tensor) -> Tensor:
    """ε from a v-prediction: ε = √ᾱ_t v + √(1−ᾱ_t) z_t (v = √ᾱ_t ε − √(1−ᾱ_t) z_0)."""
    a = _expand(alphas_cumprod, t)
    return a.sqrt() * v + (1 - a).sqrt() * noisy


def clip_grad(g: Tensor, limit: float) -> Tensor:
    """Clamp g elementwise to ±limit (0 = off), taming the rare huge CFG residuals."""
    return g.clamp(-limit, limit) if limit > 0 else g


def sds_grad(eps: Tensor, noise: Tensor, w: Tensor) -> Tensor:
    """SDS: g = w(t) (ε̂ − ε)."""
    return w * (eps - noise)


def dds_grad(eps_target: Tensor, eps_source: Tensor, w: Tensor) -> Tensor:
    """DDS: g = w(t) (ε̂_tgt − ε̂_src), both at the same t and ε."""
    return w * (eps_target - eps_source)


def target_mse_loss(latents: Tensor, g: Tensor) -> Tensor:
    """0.5‖z − (z − g).detach()‖² / B: its gradient w.r.t. z is g / B."""
    target = (latents - g).detach()
    return 0.5 * (latents - target).pow(2).sum() / latents.shape[0]


def timestep_bounds(
    progress: float, t_min: float, t_max: float, t_max_end: float, anneal: str
) -> tuple[float, float]:
    """The fraction-of-T interval t is drawn from at `progress` ∈ [0, 1] of the optimisation.

    'linear' lowers the upper bound from t_max to t_max_end: early steps at high noise settle
    layout and colour, late steps at low noise refine detail instead of repainting it.
    """
    if anneal == "none":
        return t_min, t_max
    if anneal == "linear":
        return t_min, max(t_min, t_max + (t_max_end - t_max) * min(max(progress, 0.0), 1.0))
    raise ValueError(f"unknown annealing '{anneal}'; use one of {ANNEALING}")


def sample_timesteps(
    generator: torch.Generator, batch: int, bounds: tuple[float, float], num_train: int
) -> Tensor:
    """B integer timesteps uniform in [lo·T, hi·T] (clamped to 1..T−1), drawn on the CPU generator."""
    lo = min(num_train - 1, max(1, round(bounds[0] * num_train)))
    hi = min(num_train - 1, max(lo, round(bounds[1] * num_train)))
    return torch.randint(lo, hi + 1, (batch,), generator=generator)


def predict_cfg(
    eps_fn: EpsFn, noisy: list[Tensor], t: Tensor, conds: list[Tensor], uncond: Tensor, scale: float
) -> list[Tensor]:
    """CFG noise predictions for several (latents, prompt) pairs in one batched denoiser call."""
    b = t.shape[0]
    z = torch.cat([x for x in noisy for _ in (0, 1)])
    emb = torch.cat([e.expand(b, -1, -1) for c in conds for e in (uncond, c)])
    eps = eps_fn(z, t.repeat(2 * len(noisy)), emb).float()
    chunks = eps.chunk(2 * len(noisy))
    return [guided_noise(chunks[2 * i], chunks[2 * i + 1], scale) for i in range(len(noisy))]


@dataclass
class SDS:
    """Score distillation sampling with a frozen denoiser and CFG."""

    eps_fn: EpsFn
    alphas_cumprod: Tensor
    cond: Tensor  # 1×L×D target prompt
    uncond: Tensor  # 1×L×D negative (usually empty) prompt
    guidance_scale: float = 100.0
    weighting: str = "sds"
    grad_clip: float = 0.0

    @torch.no_grad()
    def grad(self, latents: Tensor, t: Tensor, noise: Tensor, source: Tensor | None = None) -> Tensor:
        noisy = add_noise(latents.detach().float(), noise, self.alphas_cumprod, t)
        (eps,) = predict_cfg(self.eps_fn, [noisy], t, [self.cond], self.uncond, self.guidance_scale)
        return clip_grad(sds_grad(eps, noise, weight(self.alphas_cumprod, t, self.weighting)), self.grad_clip)

    def loss(self, latents: Tensor, t: Tensor, noise: Tensor, source: Tensor | None = None) -> Tensor:
        return target_mse_loss(latents, self.grad(latents, t, noise))


@dataclass
class DDS:
    """Delta denoising score: the target prompt's score minus the source prompt's on the source image."""

    eps_fn: EpsFn
    alphas_cumprod: Tensor
    cond: Tensor  # 1×L×D target prompt
    source_cond: Tensor  # 1×L×D prompt describing the unedited image ("" by default)
    uncond: Tensor  # 1×L×D negative prompt
    guidance_scale: float = 7.5
    weighting: str = "sds"
    grad_clip: float = 0.0

    @torch.no_grad()
    def grad(self, latents: Tensor, t: Tensor, noise: Tensor, source: Tensor | None = None) -> Tensor:
        if source is None:
            raise ValueError("DDS needs the source latents")
        noisy = [add_noise(x.detach().float(), noise, self.alphas_cumprod, t) for x in (latents, source)]
        eps_tgt, eps_src = predict_cfg(
            self.eps_fn, noisy, t, [self.cond, self.source_cond], self.uncond, self.guidance_scale
        )
        return clip_grad(
            dds_grad(eps_tgt, eps_src, weight(self.alphas_cumprod, t, self.weighting)), self.grad_clip
        )

    def loss(self, latents: Tensor, t: Tensor, noise: Tensor, source: Tensor | None = None) -> Tensor:
        return target_mse_loss(latents, self.grad(latents, t, noise, source))
