"""IC-Light (Zhang et al. 2024) from the user's weights: an SD-1.5 UNet widened to see a foreground latent.

IC-Light is not a diffusers pipeline. Its "fc" file holds *offsets*: tensors to add to every weight
of an SD-1.5 UNet whose `conv_in` has first been widened from 4 to 8 input channels (the new 4
zero-initialised), the extra channels taking the foreground's latent. So the base UNet loads from
the user's SD-1.5 folder, is widened, and the offsets are added; nothing else changes, and the file
is read with safetensors only (no pickle).

Relighting a foreground then follows IC-Light's own recipe (its gradio demo, and PortraitGen's use
of it): the area around the subject is grey 127, the initial latent is a left/right (or top/bottom)
brightness gradient encoded by the VAE and noised to `strength`, and it is denoised with CFG on
the prompt, the foreground latent concatenated in both branches.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from .models import (
    DiffusionModel,
    LoadOptions,
    decode_latents,
    encode_images,
    encode_prompts,
    load_model,
    unet_input,
)
from .score import guided_noise

DIRECTIONS = ("left", "right", "top", "bottom", "none")
GREY = 127 / 255


@dataclass
class ICLightConfig:
    """How IC-Light relights one image."""

    steps: int = 25
    strength: float = 0.9  # how far the gradient latent is noised (1: pure noise, the gradient unused)
    guidance_scale: float = 2.0
    direction: str = "left"  # where the light comes from in the image: left | right | top | bottom | none
    negative_prompt: str = "lowres, bad anatomy, bad hands, cropped, worst quality"
    load: LoadOptions = field(default_factory=LoadOptions)

    def validate(self, prefix: str = "") -> None:
        if self.steps < 1 or not 0 < self.strength <= 1 or self.guidance_scale < 0:
            raise UserError(f"{prefix}steps ≥ 1, 0 < strength ≤ 1 and guidance_scale ≥ 0 are needed")
        if self.direction not in DIRECTIONS:
            raise UserError(
                f"{prefix}direction must be one of {', '.join(DIRECTIONS)}, got '{self.direction}'"
            )


def widen_conv_in(unet: nn.Module, channels: int = 8) -> None:
    """Give the UNet's first convolution `channels` inputs, the new ones zero (so nothing changes yet)."""
    old = unet.conv_in
    new = nn.Conv2d(channels, old.out_channels, old.kernel_size, old.stride, old.padding).to(old.weight)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=channels)


def read_offsets(path: str | Path) -> dict[str, Tensor]:
    """IC-Light's offsets file (safetensors), with one line for what is wrong with it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    fix = "give IC-Light's offsets file (e.g. iclight_sd15_fc.safetensors)"
    if path.suffix != ".safetensors":
        raise UserError(f"{path}: IC-Light offsets are read from .safetensors only; {fix}")
    if not path.is_file():
        raise UserError(f"IC-Light offsets {path} not found; {fix}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(
            f"{path} is not a readable safetensors file ({str(e).splitlines()[0][:120]}); {fix}"
        ) from None


def apply_offsets(unet: nn.Module, offsets: dict[str, Tensor], where: str) -> None:
    """Add IC-Light's offsets to the (widened) UNet's weights; every key must name a weight of its shape."""
    state = unet.state_dict()
    unknown = [k for k in offsets if k not in state]
    if unknown:
        raise UserError(
            f"{where} holds '{unknown[0]}', which this UNet has not; it is not an SD-1.5 IC-Light file"
        )
    wrong = [k for k, v in offsets.items() if tuple(v.shape) != tuple(state[k].shape)]
    if wrong:
        k = wrong[0]
        raise UserError(
            f"{where}: '{k}' is {tuple(offsets[k].shape)}, the UNet's is {tuple(state[k].shape)}; "
            "the base model must be the SD-1.5 family the offsets were made for"
        )
    with torch.no_grad():
        for k, v in offsets.items():
            state[k].add_(v.to(state[k]))


def load_iclight(
    base: str,
    offsets: str | Path,
    device: str = "auto",
    options: LoadOptions | None = None,
    allow_download: bool = False,
) -> DiffusionModel:
    """The user's SD-1.5 (`base`, folder or cached hub id) with its UNet turned into IC-Light's."""
    weights = read_offsets(offsets)  # a bad file fails before the model loads
    model = load_model(base, device=device, options=options, allow_download=allow_download)
    if int(model.unet.config.in_channels) != 4:
        channels = model.unet.config.in_channels
        raise UserError(f"'{base}' is not a text-to-image SD-1.5 model (its UNet takes {channels} channels)")
    widen_conv_in(model.unet)
    apply_offsets(model.unet, weights, str(offsets))
    return model


def gradient(height: int, width: int, direction: str) -> Tensor:
    """3×H×W: bright on the side the light comes from, dark on the other (grey for "none")."""
    if direction == "none":
        return torch.full((3, height, width), GREY)
    along = torch.linspace(1, 0, width if direction in ("left", "right") else height)
    if direction in ("right", "bottom"):
        along = along.flip(0)
    ramp = (
        along[None, :].expand(height, width)
        if direction in ("left", "right")
        else along[:, None].expand(height, width)
    )
    return ramp[None].expand(3, -1, -1).clone()


def working_size(height: int, width: int, resolution: int, multiple: int) -> tuple[int, int]:
    """The image's aspect with its short side at `resolution`, both sides multiples of `multiple`."""
    scale = resolution / min(height, width)
    return (
        max(multiple, round(height * scale / multiple) * multiple),
        max(multiple, round(width * scale / multiple) * multiple),
    )


@torch.no_grad()
def relight_image(
    model: DiffusionModel, foreground: Tensor, prompt: str, cfg: ICLightConfig, generator: torch.Generator
) -> Tensor:
    """3×H×W foreground (grey 127 around the subject) → the same image relit as `prompt` says."""
    from .regenerate import denoise_timesteps, make_scheduler

    h, w = foreground.shape[-2:]
    size = working_size(h, w, model.resolution, model.vae_factor * 8)
    fg = F.interpolate(foreground[None].float(), size=size, mode="bilinear", antialias=True).to(model.device)
    fg_latent = encode_images(model, fg.clamp(0, 1))
    start = encode_images(model, gradient(*size, cfg.direction)[None].to(model.device))
    emb = encode_prompts(model, [cfg.negative_prompt, prompt])
    scheduler = make_scheduler(model, "ddim")
    scheduler.set_timesteps(cfg.steps, device=model.device)
    timesteps = denoise_timesteps(scheduler, cfg.steps, cfg.strength)
    noise = torch.randn(start.shape, generator=generator, device=model.device)
    latents = (
        noise * scheduler.init_noise_sigma
        if cfg.strength >= 1
        else scheduler.add_noise(start, noise, timesteps[:1])
    )
    step_kw = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    for t in timesteps:
        z = scheduler.scale_model_input(latents, t)
        x = unet_input(model, torch.cat([torch.cat([z, fg_latent], 1)] * 2))
        eps_u, eps_c = model.unet(x, t, encoder_hidden_states=emb).sample.float().chunk(2)
        latents = scheduler.step(
            guided_noise(eps_u, eps_c, cfg.guidance_scale), t, latents, **step_kw
        ).prev_sample
    out = decode_latents(model, latents)
    return F.interpolate(out, size=(h, w), mode="bilinear", antialias=True)[0].cpu().clamp(0, 1)
