"""Speed of the diffusion guidance at Stable-Diffusion-1.5 scale, with random weights.

Full-size SD-1.5-architecture components (UNet 860M, VAE, CLIP ViT-L text encoder) are built in
code with random weights: the same FLOPs as the real model, no download. Measured through the
library's own code paths:

- UNet with CFG: one batched (uncond, cond) UNet call, steps/s;
- SDS on latents: `score.SDS` loss on a latent parameter, backward, Adam, steps/s;
- SDS through the VAE: the real texture loop (`distill`: render → crop → VAE encode → SDS →
  backward through encoder and renderer → Adam), with the KL VAE and with the tiny autoencoder;
- one 20-step InstructPix2Pix edit (`regenerate.ip2p`) of a size² texture, seconds;
- peak memory (CUDA allocator on a GPU, max RSS on CPU).

fp16 on a GPU, fp32 on CPU; on CPU pass --size 256 (a 512² fp32 UNet step takes many seconds).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from canon_edit.canonical import CanonicalVideo, Layer
from canon_edit.guidance.distill import DistillConfig, distill, unet_eps
from canon_edit.guidance.models import DiffusionModel, LoadOptions, encode_prompts, freeze, resolve_dtype
from canon_edit.guidance.regenerate import IP2PConfig, ip2p
from canon_edit.guidance.score import SDS
from canon_edit.run import versions


def sd15_unet(in_channels: int, sample_size: int = 64):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768,
        attention_head_dim=8,
    )


def sd15_parts() -> dict:
    """Text encoder, VAE, scheduler and tokenizer with SD-1.5's shapes and noise schedule."""
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = {c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}
    vocab |= {c + "</w>": i + 26 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}
    vocab |= {"<|startoftext|>": 52, "<|endoftext|>": 53}
    text = CLIPTextConfig(
        hidden_size=768,
        intermediate_size=3072,
        num_attention_heads=12,
        num_hidden_layers=12,
        vocab_size=49408,
        max_position_embeddings=77,
        projection_dim=768,
    )
    return {
        "tokenizer": CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77),
        "text_encoder": CLIPTextModel(text),
        "vae": AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            sample_size=512,
        ),
        "scheduler": DDIMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
        ),
    }


def build_model(device: torch.device, options: LoadOptions, size: int) -> DiffusionModel:
    """Random SD-1.5 whose nominal resolution is `size` (so crops and tiles are size²)."""
    dtype = resolve_dtype(options.dtype, device)
    with torch.device(device):
        parts = sd15_parts()
        unet = sd15_unet(4, size // 8)
    for module in (parts["text_encoder"], parts["vae"], unet):
        freeze(module, device, dtype, options)
    return DiffusionModel(
        name="random-sd15",
        unet=unet,
        device=device,
        dtype=dtype,
        vae_factor=8,
        latent_scale=0.18215,
        channels_last=options.channels_last,
        **parts,
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def per_second(fn: Callable[[], object], steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return steps / (time.perf_counter() - start)


def identity_video(size: int, frames: int) -> CanonicalVideo:
    """One full-frame layer whose frames are the texture itself: the render costs one gather."""
    axis = (torch.arange(size) + 0.5) / size * 2 - 1
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    uv = torch.stack([xx, yy], -1)[None].expand(frames, -1, -1, -1).half()
    return CanonicalVideo(layers=[Layer(texture=torch.rand(3, size, size), uv=uv)])


def distill_rate(model: DiffusionModel, cv: CanonicalVideo, steps: int, warmup: int) -> float:
    def run(n: int) -> float:
        sync(model.device)
        start = time.perf_counter()
        distill(cv, model, "sds", "a photo", DistillConfig(steps=n), layers=[0], progress=False)
        sync(model.device)
        return time.perf_counter() - start

    run(warmup)
    return steps / run(steps)


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def unet_and_latent_rates(model: DiffusionModel, size: int, steps: int, warmup: int) -> dict[str, float]:
    device, latent = model.device, size // 8
    emb = encode_prompts(model, ["", "a photo"])
    z = torch.randn(2, 4, latent, latent, device=device, dtype=model.dtype)
    t = torch.full((2,), 500, device=device)

    @torch.no_grad()
    def unet_cfg() -> None:
        model.unet(z, t, encoder_hidden_states=emb)

    sds = SDS(unet_eps(model), model.alphas_cumprod, cond=emb[1:], uncond=emb[:1], guidance_scale=100.0)
    param = torch.zeros(1, 4, latent, latent, device=device, requires_grad=True)
    opt = torch.optim.Adam([param], lr=0.01)
    gen = torch.Generator(device).manual_seed(0)

    def sds_latent() -> None:
        step_t = torch.randint(20, 981, (1,), device=device, generator=gen)
        noise = torch.randn(param.shape, device=device, generator=gen)
        opt.zero_grad(set_to_none=True)
        sds.loss(param, step_t, noise).backward()
        opt.step()

    return {
        "unet_cfg_steps_per_s": per_second(unet_cfg, steps, warmup, device),
        "sds_latent_steps_per_s": per_second(sds_latent, steps, warmup, device),
    }


def texture_rates(
    model: DiffusionModel, options: LoadOptions, size: int, steps: int, warmup: int
) -> dict[str, float]:
    from diffusers import AutoencoderTiny

    cv = identity_video(size, frames=4)
    with torch.device(model.device):
        taesd = AutoencoderTiny()  # madebyollin/taesd's architecture
    tiny = replace(model, vae=freeze(taesd, model.device, model.dtype, options))
    return {
        "sds_vae_steps_per_s": distill_rate(model, cv, steps, warmup),
        "sds_taesd_steps_per_s": distill_rate(tiny, cv, steps, warmup),
    }


def ip2p_seconds(model: DiffusionModel, options: LoadOptions, size: int, steps: int) -> float:
    """One `steps`-step InstructPix2Pix edit of a size² texture (after a 2-step warm-up)."""
    from diffusers import EulerAncestralDiscreteScheduler

    with torch.device(model.device):
        unet = sd15_unet(8, size // 8)
    instruct = replace(
        model,
        unet=freeze(unet, model.device, model.dtype, options),
        scheduler=EulerAncestralDiscreteScheduler.from_config(model.scheduler.config),
    )
    texture = torch.rand(3, size, size)
    for n in (2, steps):
        sync(model.device)
        start = time.perf_counter()
        ip2p(
            instruct,
            texture,
            "make it a painting",
            IP2PConfig(steps=n),
            torch.Generator(model.device).manual_seed(0),
            progress=False,
        )
        sync(model.device)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, default=512, help="image side (the UNet sees size/8 latents)")
    p.add_argument("--steps", type=int, default=50, help="timed steps per figure")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--ip2p-steps", type=int, default=20)
    p.add_argument("--channels-last", action="store_true")
    args = p.parse_args()

    device = torch.device(args.device)
    options = LoadOptions(channels_last=args.channels_last)
    torch.manual_seed(0)
    model = build_model(device, options, args.size)
    figures = unet_and_latent_rates(model, args.size, args.steps, args.warmup)
    figures |= texture_rates(model, options, args.size, args.steps, args.warmup)
    model.unet = None  # free the text-to-image UNet before the InstructPix2Pix one is built
    figures["ip2p_edit_s"] = ip2p_seconds(model, options, args.size, args.ip2p_steps)

    import diffusers
    import transformers

    cpu = f"{platform.machine()}, {os.cpu_count()} cores"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    record = {
        "bench": "guidance_speed",
        "device": f"{device.type}: {name}",
        "threads": torch.get_num_threads(),
        "dtype": str(model.dtype).removeprefix("torch."),
        "size": args.size,
        "steps": args.steps,
        "ip2p_steps": args.ip2p_steps,
        "channels_last": args.channels_last,
        "sdpa": True,
        **{k: round(v, 3) for k, v in figures.items()},
        "peak_memory_gb": round(peak_memory_gb(device), 2),
        "weights": "random, SD-1.5 architecture",
        "versions": {
            **versions(),
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
        },
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
