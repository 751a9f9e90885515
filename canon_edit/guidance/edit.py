"""Diffusion edits of a run's textures: `canon-edit edit RUN --prompt/--instruction ... --mode MODE`.

Everything the user can get wrong (mode, prompt, options, layers, mask) is checked before the
model loads. Only the chosen layers change, and inside them only the mask's texels: every other
texel is returned bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..canonical import CanonicalVideo, fit_to_texture
from ..config import load_config, to_dict
from ..edit.checkpoint import Checkpoints, EditCheckpoint
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


@dataclass
class DiffusionRequest:
    """A diffusion edit as the library takes it (the CLI builds one from its flags)."""

    mode: str | None = None  # img2img | ip2p | sds | dds; None: ip2p with an instruction, else img2img
    prompt: str | None = None
    instruction: str | None = None
    model: str | None = None  # local folder or cached hub id; None: the preset's
    controlnet: str | None = None
    source_prompt: str = ""
    layers: list[int] | None = None  # None: every layer
    mask: str | None = None  # texture-space PNG: only white texels may change
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    allow_download: bool = False


def parse_layers(spec: str | None) -> list[int] | None:
    """'0,2' → [0, 2]; None or '' → None (every layer)."""
    if not spec:
        return None
    try:
        layers = sorted({int(part) for part in spec.split(",") if part.strip()})
    except ValueError:
        raise UserError(f"--layers expects comma-separated layer numbers, got '{spec}'") from None
    return layers or None


def check_layers(layers: list[int] | None, count: int) -> list[int]:
    if layers is None:
        return list(range(count))
    bad = [k for k in layers if not 0 <= k < count]
    if bad:
        raise UserError(f"layer {bad[0]} does not exist; this run has layers 0..{count - 1}")
    return layers


def read_mask(path: str, texture: Tensor, layer: int) -> Tensor:
    """Hc×Wc bool from a texture-space PNG: white (and opaque) texels may change."""
    image = read_image(path)
    value = image[:3].mean(0) * (image[3] if image.shape[0] == 4 else 1)
    mask = fit_to_texture(value[None], texture, f"the mask {path}")[0] > 0.5
    if not mask.any():
        raise UserError(f"the mask {path} selects no texel of layer {layer}; white marks what may change")
    return mask


def edit_text(args: DiffusionRequest, mode: str) -> str:
    """The prompt (img2img, sds, dds) or the instruction (ip2p) the mode needs."""
    if mode == "ip2p":
        text = args.instruction or args.prompt
    elif args.instruction:
        raise UserError(f"an instruction is for mode ip2p; describe the result with a prompt for mode {mode}")
    else:
        text = args.prompt
    if not text or not text.strip():
        raise UserError(f"mode {mode} needs a non-empty {'instruction' if mode == 'ip2p' else 'prompt'}")
    return text


def _run_mode(
    cv: CanonicalVideo,
    model: DiffusionModel,
    mode: str,
    text: str,
    cfg: Any,
    args: DiffusionRequest,
    layers: list[int],
    masks: dict[int, Tensor],
    checkpoint: EditCheckpoint | None,
    progress: bool,
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
            progress=progress,
            checkpoint=checkpoint,
        )
    generator = torch.Generator(model.device).manual_seed(args.seed)
    run = img2img if mode == "img2img" else ip2p
    return {k: run(model, cv.layers[k].texture, text, cfg, generator, progress=progress) for k in layers}


def validate_request(args: DiffusionRequest, n_layers: int) -> tuple[str, str, Any, list[int]]:
    """(mode, text, config, layers): everything a request can get wrong, checked before a model loads."""
    mode = args.mode or ("ip2p" if args.instruction else "img2img")
    if mode not in MODES:
        raise UserError(f"unknown mode '{mode}'; use one of {', '.join(MODES)}")
    text = edit_text(args, mode)
    if args.source_prompt and mode != "dds":
        raise UserError("a source prompt is for mode dds")
    if args.controlnet and mode != "img2img":
        raise UserError("a ControlNet is for mode img2img")
    config_cls, check = MODES[mode]
    cfg = load_config(config_cls, args.preset or mode, args.overrides, group="edit")
    check(cfg)
    return mode, text, cfg, check_layers(args.layers, n_layers)


def diffusion_edit(
    cv: CanonicalVideo, args: DiffusionRequest, checkpoints: Checkpoints | None = None, progress: bool = True
) -> tuple[list[Tensor], dict[str, Any]]:
    """Edited textures (every layer, unselected ones untouched) and the edit's metadata.

    `checkpoints(mode)` opens the edit's checkpoint once the mode is known (sds and dds use it).
    """
    mode, text, cfg, layers = validate_request(args, len(cv.layers))
    checkpoint = checkpoints(mode) if checkpoints is not None else None
    masks = {k: read_mask(args.mask, cv.layers[k].texture, k) for k in layers} if args.mask else {}
    controlnet = (args.controlnet or cfg.controlnet) if mode == "img2img" else ""
    model_id = args.model or cfg.model
    model = load_model(
        model_id,
        device=args.device,
        options=cfg.load,
        controlnet=controlnet,
        allow_download=args.allow_download,
    )
    if model.instruct != (mode == "ip2p"):
        kind = (
            "an InstructPix2Pix model (8 UNet input channels)" if model.instruct else "a text-to-image model"
        )
        fix = (
            "use mode ip2p with an instruction"
            if model.instruct
            else "give an InstructPix2Pix model (e.g. timbrooks/instruct-pix2pix)"
        )
        raise UserError(f"'{model_id}' is {kind}, which mode {mode} cannot use; {fix}")
    edited = _run_mode(cv, model, mode, text, cfg, args, layers, masks, checkpoint, progress)
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
