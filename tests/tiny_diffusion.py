"""Tiny random-weight Stable-Diffusion components, built in code the way diffusers' own tests do.

No network: the CLIP tokenizer is built from a vocab.json / merges.txt written at test time.
`save_tiny_pipeline` writes a real diffusers folder, so tests load it through the same path as
a downloaded model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

LATENT = 32  # UNet sample size: 64×64 images through a VAE that halves
WIDTH = 32  # text hidden size = cross-attention dim


def bytes_to_unicode() -> list[str]:
    """CLIP's byte-level alphabet: every byte maps to a printable character."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def write_vocab(folder: Path) -> tuple[Path, Path]:
    """A CLIP BPE vocabulary covering every byte (alone and word-final) plus a few merges."""
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = bytes_to_unicode()
    tokens = alphabet + [c + "</w>" for c in alphabet]
    merges = ["a n", "a n</w>", "s w", "sw an</w>", "c a", "ca t</w>"]
    tokens += ["an", "an</w>", "sw", "swan</w>", "ca", "cat</w>", "<|startoftext|>", "<|endoftext|>"]
    vocab, merges_path = folder / "vocab.json", folder / "merges.txt"
    vocab.write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    merges_path.write_text("\n".join(["#version: 0.2", *merges]) + "\n")
    return vocab, merges_path


def tiny_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    vocab, merges = write_vocab(folder)
    return CLIPTokenizer(str(vocab), str(merges), model_max_length=77)


def tiny_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    return CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
            hidden_size=WIDTH,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=1000,
            max_position_embeddings=77,
        )
    )


def tiny_unet(in_channels: int = 4):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=LATENT,
        in_channels=in_channels,
        out_channels=4,
        cross_attention_dim=WIDTH,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=8,
        norm_num_groups=32,
    )


def tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        layers_per_block=1,
        sample_size=2 * LATENT,
    )


def tiny_autoencoder_tiny():
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    return AutoencoderTiny(
        encoder_block_out_channels=(16, 16),
        decoder_block_out_channels=(16, 16),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
    )


def tiny_controlnet():
    from diffusers import ControlNetModel

    torch.manual_seed(0)
    return ControlNetModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        in_channels=4,
        cross_attention_dim=WIDTH,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        conditioning_embedding_out_channels=(16, 32),
        attention_head_dim=8,
        norm_num_groups=32,
    )


def tiny_scheduler(kind: str):
    from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler

    common = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
    if kind == "ip2p":
        return EulerAncestralDiscreteScheduler(**common)
    return DDIMScheduler(clip_sample=False, set_alpha_to_one=False, steps_offset=1, **common)


def save_tiny_pipeline(folder: str | Path, kind: str = "sd") -> Path:
    """Save a tiny model of `kind` (sd, ip2p, controlnet, taesd) as a diffusers folder; returns it."""
    folder = Path(folder)
    if kind == "controlnet":
        tiny_controlnet().save_pretrained(folder)
        return folder
    if kind == "taesd":
        tiny_autoencoder_tiny().save_pretrained(folder)
        return folder
    from diffusers import StableDiffusionInstructPix2PixPipeline, StableDiffusionPipeline

    cls = {"sd": StableDiffusionPipeline, "ip2p": StableDiffusionInstructPix2PixPipeline}[kind]
    pipe = cls(
        unet=tiny_unet(8 if kind == "ip2p" else 4),
        vae=tiny_vae(),
        text_encoder=tiny_text_encoder(),
        tokenizer=tiny_tokenizer(folder.with_name(folder.name + "_vocab")),
        scheduler=tiny_scheduler(kind),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder
