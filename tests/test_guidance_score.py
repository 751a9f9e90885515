"""SDS / DDS: the pure formulas, and autograd through the target-MSE loss against them (tiny UNet)."""

from __future__ import annotations

import pytest
import torch
from tiny_diffusion import LATENT, save_tiny_pipeline

from canon_edit.guidance.distill import unet_eps
from canon_edit.guidance.models import DiffusionModel, encode_prompts, load_model
from canon_edit.guidance.score import (
    DDS,
    SDS,
    add_noise,
    clip_grad,
    epsilon_from_v,
    guided_noise,
    sample_timesteps,
    target_mse_loss,
    timestep_bounds,
    weight,
)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> DiffusionModel:
    return load_model(str(save_tiny_pipeline(tmp_path_factory.mktemp("sd") / "sd", "sd")), device="cpu")


def _latents(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, LATENT, LATENT, generator=g), torch.randn(
        batch, 4, LATENT, LATENT, generator=g
    )


@pytest.mark.parametrize("batch", [1, 3])
def test_target_mse_gradient_is_g(batch: int) -> None:
    z, g = _latents(batch)
    z.requires_grad_(True)
    target_mse_loss(z, g).backward()
    assert torch.allclose(z.grad, g / batch, atol=1e-6)


def test_forward_process_weight_and_cfg() -> None:
    ac = torch.linspace(0.99, 0.01, 1000)
    t = torch.tensor([0, 500, 999])
    z, eps = _latents(3)
    a = ac[t].view(-1, 1, 1, 1)
    assert torch.allclose(add_noise(z, eps, ac, t), a.sqrt() * z + (1 - a).sqrt() * eps)
    assert torch.allclose(weight(ac, t, "sds"), 1 - a)
    assert torch.equal(weight(ac, t, "uniform"), torch.ones_like(a))
    assert torch.allclose(guided_noise(z, eps, 7.5), z + 7.5 * (eps - z))
    assert torch.equal(clip_grad(eps, 0.0), eps)
    assert clip_grad(eps * 10, 0.5).abs().max() <= 0.5


def test_epsilon_from_v_recovers_the_noise() -> None:
    ac = torch.linspace(0.99, 0.01, 1000)
    t = torch.tensor([10, 700])
    z0, eps = _latents(2)
    a = ac[t].view(-1, 1, 1, 1)
    v = a.sqrt() * eps - (1 - a).sqrt() * z0
    assert torch.allclose(epsilon_from_v(v, add_noise(z0, eps, ac, t), ac, t), eps, atol=1e-5)


def test_timestep_annealing() -> None:
    assert timestep_bounds(0.3, 0.02, 0.98, 0.5, "none") == (0.02, 0.98)
    assert timestep_bounds(0.0, 0.02, 0.98, 0.5, "linear") == (0.02, 0.98)
    assert timestep_bounds(1.0, 0.02, 0.98, 0.5, "linear") == pytest.approx((0.02, 0.5))
    assert timestep_bounds(0.5, 0.02, 0.98, 0.5, "linear") == pytest.approx((0.02, 0.74))
    t = sample_timesteps(torch.Generator().manual_seed(0), 500, (0.02, 0.5), 1000)
    assert t.min() >= 20 and t.max() <= 500


def _eps_cfg(
    model: DiffusionModel,
    noisy: torch.Tensor,
    t: torch.Tensor,
    uncond: torch.Tensor,
    cond: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """ε̂_cfg computed independently: two separate UNet calls."""
    eps = unet_eps(model)
    b = noisy.shape[0]
    e_u = eps(noisy, t, uncond.expand(b, -1, -1))
    e_c = eps(noisy, t, cond.expand(b, -1, -1))
    return e_u + scale * (e_c - e_u)


@pytest.mark.parametrize("batch", [1, 2])
def test_sds_gradient_equals_formula(model: DiffusionModel, batch: int) -> None:
    uncond, cond = encode_prompts(model, ["", "a swan"]).chunk(2)
    ac = model.alphas_cumprod
    sds = SDS(unet_eps(model), ac, cond=cond, uncond=uncond, guidance_scale=7.5)
    z, noise = _latents(batch)
    t = torch.tensor([120, 870][:batch])
    z.requires_grad_(True)
    sds.loss(z, t, noise).backward()

    a = ac[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * z.detach() + (1 - a).sqrt() * noise
    g = (1 - a) * (_eps_cfg(model, noisy, t, uncond, cond, 7.5) - noise)
    assert g.abs().max() > 0
    assert torch.allclose(z.grad * batch, g, atol=1e-4, rtol=1e-4)  # CFG amplifies batching noise


@pytest.mark.parametrize("batch", [1, 2])
def test_dds_gradient_equals_formula(model: DiffusionModel, batch: int) -> None:
    uncond, cond, src = encode_prompts(model, ["", "an origami swan", "a swan"]).chunk(3)
    ac = model.alphas_cumprod
    dds = DDS(unet_eps(model), ac, cond=cond, source_cond=src, uncond=uncond, guidance_scale=7.5)
    z, noise = _latents(batch)
    source, _ = _latents(batch, seed=1)
    t = torch.tensor([300, 640][:batch])
    z.requires_grad_(True)
    dds.loss(z, t, noise, source).backward()

    a = ac[t].view(-1, 1, 1, 1)
    noisy_tgt = a.sqrt() * z.detach() + (1 - a).sqrt() * noise
    noisy_src = a.sqrt() * source + (1 - a).sqrt() * noise
    g = (1 - a) * (
        _eps_cfg(model, noisy_tgt, t, uncond, cond, 7.5) - _eps_cfg(model, noisy_src, t, uncond, src, 7.5)
    )
    assert g.abs().max() > 0
    assert torch.allclose(z.grad * batch, g, atol=1e-4, rtol=1e-4)  # CFG amplifies batching noise


def test_dds_is_zero_without_a_change(model: DiffusionModel) -> None:
    """Same image, same prompt: the delta score vanishes (what SDS's noise term cannot do)."""
    uncond, cond = encode_prompts(model, ["", "a swan"]).chunk(2)
    dds = DDS(unet_eps(model), model.alphas_cumprod, cond=cond, source_cond=cond, uncond=uncond)
    z, noise = _latents(1)
    assert dds.grad(z, torch.tensor([500]), noise, z.clone()).abs().max() < 1e-5
