"""img2img (SDEdit, optionally with a Canny ControlNet) and InstructPix2Pix on a canonical texture.

The texture is brought to the model's scale (short side ≥ its resolution), encoded, noised to
the chosen strength and denoised. The UNet runs on overlapping tiles at its own resolution and
their noise predictions are blended with feathered weights at every step (MultiDiffusion), so a
large or non-square texture comes out as one coherent image; the VAE works on the same tiles.
The result is resized back to the texture's size.

With a ControlNet, the condition is the Canny edge map of the texture itself: the regenerated
texture keeps its edges where they were, so it stays registered to the fitted uv mapping.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import UserError
from ..video import to_uint8
from .models import DiffusionModel, LoadOptions, decode_latents, encode_images, encode_prompts, unet_input
from .score import guided_noise
from .tiles import Box, blend, resize, scale_box, tile_boxes, working_size

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpm": "DPMSolverMultistepScheduler",
    "model": "",
}

Predict = Callable[[Tensor, Tensor, list[Box]], Tensor]  # (n tiles of scaled latents, t, their boxes) → ε̂


@dataclass
class RegenerateConfig:
    """Options shared by img2img and ip2p."""

    model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    steps: int = 30  # scheduler steps for strength 1 (fewer run at lower strength)
    strength: float = 0.6  # how far to noise the texture: 0 = unchanged, 1 = from pure noise
    guidance_scale: float = 7.5  # text CFG
    negative_prompt: str = ""
    scheduler: str = "ddim"  # ddim | euler_a | dpm | model (the one saved with the model)
    tile_overlap: float = 0.25  # fraction of a tile shared with each neighbour
    tile_batch: int = 4  # tiles per UNet call
    load: LoadOptions = field(default_factory=LoadOptions)


@dataclass
class Img2ImgConfig(RegenerateConfig):
    """`--mode img2img` (canon_edit/presets/edit/img2img.yaml)."""

    controlnet: str = ""  # folder or hub id of a Canny ControlNet; "" = none
    control_scale: float = 1.0
    canny_low: int = 100
    canny_high: int = 200


@dataclass
class IP2PConfig(RegenerateConfig):
    """`--mode ip2p` (canon_edit/presets/edit/ip2p.yaml)."""

    model: str = "timbrooks/instruct-pix2pix"
    steps: int = 20
    strength: float = 1.0
    image_guidance_scale: float = 1.5  # how closely the edit follows the input texture
    scheduler: str = "model"


def check_config(cfg: RegenerateConfig) -> None:
    """Reject option values the loop would only fail on later."""
    if cfg.steps < 1 or cfg.tile_batch < 1:
        raise UserError("steps and tile_batch must be ≥ 1")
    if not 0 < cfg.strength <= 1:
        raise UserError(f"strength must be in (0, 1], got {cfg.strength}")
    if not 0 <= cfg.tile_overlap <= 0.5:
        raise UserError(f"tile_overlap must be in [0, 0.5], got {cfg.tile_overlap}")
    if cfg.scheduler not in SCHEDULERS:
        raise UserError(f"unknown scheduler '{cfg.scheduler}'; use one of {', '.join(SCHEDULERS)}")


def make_scheduler(model: DiffusionModel, name: str) -> Any:
    """A fresh scheduler (they are stateful) of the named kind, with the model's noise schedule."""
    import diffusers

    cls = getattr(diffusers, SCHEDULERS[name]) if SCHEDULERS[name] else type(model.scheduler)
    return cls.from_config(model.scheduler.config)


def denoise_timesteps(scheduler: Any, steps: int, strength: float) -> Tensor:
    """The last `strength` share of the schedule (SDEdit), with the scheduler told where it starts."""
    start = steps - min(int(steps * strength), steps)
    if start == steps:
        raise UserError(f"strength {strength} with {steps} steps runs no step; raise strength or steps")
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start * scheduler.order)
    return scheduler.timesteps[start * scheduler.order :]


def canny_edges(image: Tensor, low: int, high: int) -> Tensor:
    """1×3×H×W in [0,1] → its Canny edge map as 1×3×H×W in {0, 1} (the ControlNet's input)."""
    rgb = to_uint8(image[0]).permute(1, 2, 0).cpu().numpy()
    edges = cv2.Canny(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY), low, high)
    return torch.from_numpy(edges).to(image.device, torch.float32).div(255)[None, None].expand(1, 3, -1, -1)


@dataclass
class Canvas:
    """A texture at the model's scale and its tiling (boxes in latent cells)."""

    image: Tensor  # 1×3×H×W in [0, 1], on the model's device
    boxes: list[Box]
    ramp: int  # feather width in latent cells


def canvas(model: DiffusionModel, texture: Tensor, overlap: float) -> Canvas:
    f, tile = model.vae_factor, int(model.unet.config.sample_size)
    size = working_size(texture.shape[-2], texture.shape[-1], model.resolution, f)
    image = resize(texture[None].float().to(model.device), size).clamp(0, 1)
    ramp = round(overlap * tile)
    return Canvas(image=image, boxes=tile_boxes(size[0] // f, size[1] // f, tile, ramp), ramp=ramp)


def encode_tiled(model: DiffusionModel, c: Canvas) -> Tensor:
    """The canvas's scaled latents, each tile encoded at the model's resolution."""
    f = model.vae_factor

    def tiles() -> Iterator[tuple[Tensor, Box]]:
        for box in c.boxes:
            y0, x0, y1, x1 = scale_box(box, f)
            yield encode_images(model, c.image[..., y0:y1, x0:x1]), box

    return blend(tiles(), (c.image.shape[-2] // f, c.image.shape[-1] // f), c.ramp)


def decode_tiled(model: DiffusionModel, latents: Tensor, c: Canvas) -> Tensor:
    f = model.vae_factor

    def tiles() -> Iterator[tuple[Tensor, Box]]:
        for y0, x0, y1, x1 in c.boxes:
            yield decode_latents(model, latents[..., y0:y1, x0:x1]), scale_box((y0, x0, y1, x1), f)

    return blend(tiles(), tuple(c.image.shape[-2:]), c.ramp * f)


def _tile_predictions(
    predict: Predict, latents: Tensor, t: Tensor, boxes: list[Box], batch: int
) -> Iterator[tuple[Tensor, Box]]:
    for i in range(0, len(boxes), batch):
        chunk = boxes[i : i + batch]
        eps = predict(torch.cat([latents[..., y0:y1, x0:x1] for y0, x0, y1, x1 in chunk]), t, chunk)
        yield from ((eps[j : j + 1], box) for j, box in enumerate(chunk))


def denoise(
    model: DiffusionModel,
    start: Tensor,
    c: Canvas,
    predict: Predict,
    cfg: RegenerateConfig,
    generator: torch.Generator,
    desc: str,
    progress: bool = True,
) -> Tensor:
    """SDEdit from `start` (scaled latents) at cfg.strength, tiles blended at every step."""
    scheduler = make_scheduler(model, cfg.scheduler)
    scheduler.set_timesteps(cfg.steps, device=model.device)
    timesteps = denoise_timesteps(scheduler, cfg.steps, cfg.strength)
    noise = torch.randn(start.shape, generator=generator, device=model.device)
    if cfg.strength >= 1:
        latents = noise * scheduler.init_noise_sigma
    else:
        latents = scheduler.add_noise(start, noise, timesteps[:1])
    step_kw = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    for t in tqdm(timesteps, desc=desc, disable=not progress):
        scaled = scheduler.scale_model_input(latents, t)
        eps = blend(
            _tile_predictions(predict, scaled, t, c.boxes, cfg.tile_batch), tuple(latents.shape[-2:]), c.ramp
        )
        latents = scheduler.step(eps, t, latents, **step_kw).prev_sample
    return latents


def _finish(model: DiffusionModel, latents: Tensor, c: Canvas, texture: Tensor) -> Tensor:
    return resize(decode_tiled(model, latents, c), tuple(texture.shape[-2:])).clamp(0, 1)[0].cpu()


def _crops(image: Tensor, boxes: list[Box], f: int) -> Tensor:
    return torch.cat([image[..., y0:y1, x0:x1] for y0, x0, y1, x1 in (scale_box(b, f) for b in boxes)])


@torch.no_grad()
def img2img(
    model: DiffusionModel,
    texture: Tensor,
    prompt: str,
    cfg: Img2ImgConfig,
    generator: torch.Generator,
    progress: bool = True,
) -> Tensor:
    """SDEdit of a 3×Hc×Wc texture towards `prompt`, structure kept by the ControlNet if loaded."""
    check_config(cfg)
    c = canvas(model, texture, cfg.tile_overlap)
    emb = encode_prompts(model, [cfg.negative_prompt, prompt])
    control = canny_edges(c.image, cfg.canny_low, cfg.canny_high) if model.controlnet is not None else None

    def predict(z: Tensor, t: Tensor, boxes: list[Box]) -> Tensor:
        z2 = unet_input(model, torch.cat([z, z]))
        e = emb.repeat_interleave(z.shape[0], 0)
        extra: dict[str, Any] = {}
        if control is not None and model.controlnet is not None:
            cond = _crops(control, boxes, model.vae_factor).to(model.dtype)
            down, mid = model.controlnet(
                z2,
                t,
                encoder_hidden_states=e,
                controlnet_cond=torch.cat([cond, cond]),
                conditioning_scale=cfg.control_scale,
                return_dict=False,
            )
            extra = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        eps_u, eps_c = model.unet(z2, t, encoder_hidden_states=e, **extra).sample.float().chunk(2)
        return guided_noise(eps_u, eps_c, cfg.guidance_scale)

    latents = denoise(model, encode_tiled(model, c), c, predict, cfg, generator, "img2img", progress)
    return _finish(model, latents, c, texture)


@torch.no_grad()
def ip2p(
    model: DiffusionModel,
    texture: Tensor,
    instruction: str,
    cfg: IP2PConfig,
    generator: torch.Generator,
    progress: bool = True,
    condition: Tensor | None = None,
) -> Tensor:
    """InstructPix2Pix on a 3×Hc×Wc texture: text and image guidance as in the paper.

    The UNet is conditioned on `condition` (same size; default the texture itself). Iterative
    dataset updates start from the current render and condition on the original frame, so an edit
    refines what the asset already shows instead of drifting from the source.
    """
    check_config(cfg)
    c = canvas(model, texture, cfg.tile_overlap)
    latents = encode_tiled(model, c)
    if condition is not None:
        cond_canvas = canvas(model, condition, cfg.tile_overlap)
        image_latents = encode_tiled(model, cond_canvas) / model.latent_scale
    else:
        image_latents = latents / model.latent_scale  # the UNet is conditioned on unscaled latents
    cond, uncond = encode_prompts(model, [instruction, cfg.negative_prompt]).chunk(2)

    def predict(z: Tensor, t: Tensor, boxes: list[Box]) -> Tensor:
        n = z.shape[0]
        image = torch.cat([image_latents[..., y0:y1, x0:x1] for y0, x0, y1, x1 in boxes])
        x = torch.cat([torch.cat([z, z, z]), torch.cat([image, image, torch.zeros_like(image)])], dim=1)
        e = torch.cat([cond.expand(n, -1, -1), uncond.expand(n, -1, -1), uncond.expand(n, -1, -1)])
        eps_text, eps_image, eps_none = (
            model.unet(unet_input(model, x), t, encoder_hidden_states=e).sample.float().chunk(3)
        )
        return (
            eps_none
            + cfg.guidance_scale * (eps_text - eps_image)
            + cfg.image_guidance_scale * (eps_image - eps_none)
        )

    out = denoise(model, latents, c, predict, cfg, generator, "ip2p", progress)
    return _finish(model, out, c, texture)
