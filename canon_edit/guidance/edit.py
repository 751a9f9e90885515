"""Diffusion edits of a run's textures: `canon-edit edit RUN --prompt/--instruction ... --mode MODE`.

Everything the user can get wrong (mode, prompt, options, layers, mask) is checked before the
model loads. Only the chosen layers change, and inside them only the mask's texels: every other
texel is returned bit for bit.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..canonical import CanonicalVideo, fit_to_texture
from ..config import load_config, parse_overrides, to_dict
from ..errors import UserError
from ..video import read_image
from .distill import DistillConfig, distill
from .distill import check_config as check_distill
from .models import DiffusionModel, load_model
from .regenerate import Img2ImgConfig, IP2PConfig, img2img, ip2p
from .regenerate import check_config as check_regenerate

MODES: dict[str, tuple[type, Callable[[Any], None]]] = {
    "img2img": (Img2ImgConfig, check_regenerate),
    "ip2p": (IP2PConfig, check_regenerate),
    "sds": (DistillConfig, check_distill),
    "dds": (DistillConfig, check_distill),
}


def parse_layers(spec: str | None, count: int) -> list[int]:
    """'0,2' → [0, 2]; None → every layer."""
    if not spec:
        return list(range(count))
    try:
        layers = sorted({int(part) for part in spec.split(",") if part.strip()})
    except ValueError:
        raise UserError(f"--layers expects comma-separated layer numbers, got '{spec}'") from None
    bad = [k for k in layers if not 0 <= k < count]
    if bad or not layers:
        raise UserError(f"--layers {spec}: this run has layers 0..{count - 1}")
    return layers


def read_mask(path: str, texture: Tensor, layer: int) -> Tensor:
    """Hc×Wc bool from a texture-space PNG: white (and opaque) texels may change."""
    image = read_image(path)
    value = image[:3].mean(0) * (image[3] if image.shape[0] == 4 else 1)
    mask = fit_to_texture(value[None], texture, f"--mask {path}")[0] > 0.5
    if not mask.any():
        raise UserError(f"--mask {path} selects no texel of layer {layer}; white marks what may change")
    return mask


def edit_text(args: argparse.Namespace, mode: str) -> str:
    """The prompt (img2img, sds, dds) or the instruction (ip2p) the mode needs."""
    if mode == "ip2p":
        text = args.instruction or args.prompt
    elif args.instruction:
        raise UserError(
            f"--instruction is for --mode ip2p; describe the result with --prompt for --mode {mode}"
        )
    else:
        text = args.prompt
    if not text or not text.strip():
        raise UserError(
            f"--mode {mode} needs a non-empty {'--instruction' if mode == 'ip2p' else '--prompt'}"
        )
    return text


def _run_mode(
    cv: CanonicalVideo,
    model: DiffusionModel,
    mode: str,
    text: str,
    cfg: Any,
    args: argparse.Namespace,
    layers: list[int],
    masks: dict[int, Tensor],
) -> dict[int, Tensor]:
    if mode in ("sds", "dds"):
        return distill(
            cv,
            model,
            mode,
            text,
            cfg,
            layers=layers,
            masks=masks,
            source_prompt=args.source_prompt or "",
            seed=args.seed,
        )
    generator = torch.Generator(model.device).manual_seed(args.seed)
    run = img2img if mode == "img2img" else ip2p
    return {k: run(model, cv.layers[k].texture, text, cfg, generator) for k in layers}


def diffusion_edit(cv: CanonicalVideo, args: argparse.Namespace) -> tuple[list[Tensor], dict[str, Any]]:
    """Edited textures (every layer, unselected ones untouched) and the edit's metadata."""
    mode = args.mode or ("ip2p" if args.instruction else "img2img")
    if mode not in MODES:
        raise UserError(f"unknown --mode '{mode}'; use one of {', '.join(MODES)}")
    text = edit_text(args, mode)
    if args.source_prompt and mode != "dds":
        raise UserError("--source-prompt is for --mode dds")
    if args.controlnet and mode != "img2img":
        raise UserError("--controlnet is for --mode img2img")
    config_cls, check = MODES[mode]
    cfg = load_config(config_cls, args.preset or mode, parse_overrides(args.overrides), group="edit")
    check(cfg)
    layers = parse_layers(args.layers, len(cv.layers))
    masks = {k: read_mask(args.mask, cv.layers[k].texture, k) for k in layers} if args.mask else {}
    controlnet = (args.controlnet or cfg.controlnet) if mode == "img2img" else ""
    model_id = args.model or cfg.model
    model = load_model(model_id, device=args.device, options=cfg.load, controlnet=controlnet)
    if model.instruct != (mode == "ip2p"):
        kind = (
            "an InstructPix2Pix model (8 UNet input channels)" if model.instruct else "a text-to-image model"
        )
        fix = (
            "use --mode ip2p --instruction ..."
            if model.instruct
            else "pass an InstructPix2Pix --model (e.g. timbrooks/instruct-pix2pix)"
        )
        raise UserError(f"'{model_id}' is {kind}, which --mode {mode} cannot use; {fix}")
    edited = _run_mode(cv, model, mode, text, cfg, args, layers, masks)
    textures = []
    for k, original in enumerate(cv.textures()):
        new = edited.get(k)
        if new is None:
            textures.append(original)
        elif k in masks:
            textures.append(torch.where(masks[k], new.to(original.dtype), original))
        else:
            textures.append(new.to(original.dtype))
    meta = {
        "mode": mode,
        "prompt": text,
        "model": model_id,
        "controlnet": controlnet or None,
        "source_prompt": args.source_prompt if mode == "dds" else None,
        "layers": layers,
        "mask": args.mask,
        "seed": args.seed,
        "device": str(model.device),
        "config": to_dict(cfg),
    }
    return textures, meta
