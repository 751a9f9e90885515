"""Loading Stable-Diffusion-1.5-family components through diffusers, and their codecs.

Components are loaded one by one from the diffusers folder layout (`unet/`, `vae/`,
`text_encoder/`, `tokenizer/`, `scheduler/`) of a local folder or a hub id, so nothing an edit
does not use (safety checker, feature extractor) is fetched. A text-to-image and an
InstructPix2Pix model differ only in the UNet's input channels (4 vs 8). Missing weights are one
`UserError` naming the model and the way to pass a local folder, never a hang: local folders and
cached hub ids are read with `local_files_only`. Nothing is downloaded unless the user asks for it:
an uncached hub id is fetched only when the caller passes `allow_download=True` (the CLI's
`--allow-download`) or `CANON_EDIT_ALLOW_DOWNLOAD=1` is set, `HF_HUB_OFFLINE` is unset, and the hub
answers a 3-second probe (offline, the hub client's own retries take minutes). canon-edit runs in
folders of other people's footage and runs; a model name there must not cause network traffic.
Without the diffusion extra, `load_model` is one `UserError` naming it (`canon_edit.extras.require`).
Weights are read from .safetensors only: diffusers falls back to unpickling a .bin, which can run code.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from ..device import pick_device
from ..errors import UserError
from ..extras import require

M = TypeVar("M")

ALLOW_DOWNLOAD_ENV = "CANON_EDIT_ALLOW_DOWNLOAD"
DIFFUSION = "a diffusion edit"  # the feature that needs the diffusion extra, for `require`
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TRUE = {"1", "ON", "YES", "TRUE"}
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class LoadOptions:
    """How the frozen components run. CPU always runs fp32 unless bf16 is asked for."""

    dtype: str = "auto"  # auto (fp16 on CUDA, fp32 on CPU) | fp32 | fp16 | bf16
    sdpa: bool = True  # scaled-dot-product attention; false = the classic attention processor
    channels_last: bool = False  # NHWC convolutions (faster on tensor cores)
    # folder or hub id of an AutoencoderTiny (e.g. madebyollin/taesd); "" = the model's own VAE
    tiny_vae: str = ""
    variant: str = ""  # weight-file variant to load, e.g. fp16


@dataclass
class DiffusionModel:
    """Frozen components of one model, on one device, in one dtype."""

    name: str
    tokenizer: Any
    text_encoder: nn.Module
    unet: nn.Module
    vae: nn.Module
    scheduler: Any
    device: torch.device
    dtype: torch.dtype
    vae_factor: int  # pixels per latent cell
    latent_scale: float  # the KL VAE's scaling factor (raw latents × scale = the UNet's latents)
    controlnet: nn.Module | None = None
    channels_last: bool = False

    @property
    def resolution(self) -> int:
        """The image side the UNet was trained at (512 for SD-1.5)."""
        return int(self.unet.config.sample_size) * self.vae_factor

    @property
    def instruct(self) -> bool:
        """InstructPix2Pix UNets take the image latents as 4 extra input channels."""
        return int(self.unet.config.in_channels) == 8

    @property
    def prediction_type(self) -> str:
        return str(self.scheduler.config.get("prediction_type", "epsilon"))

    @cached_property
    def alphas_cumprod(self) -> Tensor:
        """ᾱ_t for t = 0..T-1 (float32, on the model's device); every SD scheduler carries them."""
        return torch.as_tensor(self.scheduler.alphas_cumprod).to(self.device, torch.float32)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise UserError(f"unknown dtype '{name}'; use auto, fp32, fp16 or bf16")
    if name == "fp16" and device.type == "cpu":
        raise UserError("dtype fp16 needs a GPU; on CPU use fp32 (or bf16)")
    return _DTYPES[name]


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE


def download_allowed(allow_download: bool = False) -> bool:
    """Whether the caller (--allow-download) or the environment (CANON_EDIT_ALLOW_DOWNLOAD=1) allows it."""
    return allow_download or os.environ.get(ALLOW_DOWNLOAD_ENV, "").upper() in _TRUE


@dataclass(frozen=True)
class Kind:
    """What is being loaded, for the error that says how to supply it locally."""

    what: str
    flag: str  # precedes /path/to/local/folder in the hint
    layout: str
    needs: tuple[str, ...]  # entries a local folder must hold


MODEL = Kind(
    "diffusion model",
    "--model ",
    "a diffusers folder with unet/, vae/, text_encoder/, tokenizer/ and scheduler/",
    ("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
)
CONTROLNET = Kind(
    "ControlNet",
    "--controlnet ",
    "a diffusers ControlNetModel folder with config.json and weights",
    ("config.json",),
)
TINY_VAE = Kind(
    "tiny autoencoder",
    "--set load.tiny_vae=",
    "a diffusers AutoencoderTiny folder with config.json and weights",
    ("config.json",),
)


def _hint(kind: Kind) -> str:
    return f"pass {kind.flag}/path/to/local/folder ({kind.layout})"


PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth")


def model_source(model: str, kind: Kind = MODEL) -> tuple[str, bool]:
    """(what to pass to from_pretrained, whether it is a local folder); a missing/partial folder errs."""
    path = Path(model).expanduser()
    if path.is_dir():
        missing = [name for name in kind.needs if not (path / name).exists()]
        if missing:
            raise UserError(f"{kind.what} folder '{model}' has no {', '.join(missing)}; {_hint(kind)}")
        return str(path), True
    if path.exists() or not _HUB_ID.match(model):
        raise UserError(
            f"{kind.what} '{model}' is neither a folder here nor a hub id (org/name); {_hint(kind)}"
        )
    return model, False


def _hub_errors() -> tuple[type[BaseException], ...]:
    """What from_pretrained raises when weights are missing, unreachable or malformed."""
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError

    errors: list[type[BaseException]] = [OSError, EntryNotFoundError, HFValidationError]
    try:
        import httpx

        errors.append(httpx.HTTPError)
    except ImportError:
        pass
    return tuple(errors)


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's host accepts a TCP connection within `timeout` s (DNS included).

    Asked only when a hub id is not cached: without it, hub retries take minutes offline.
    """
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout + 1)
    return bool(result and result[0])


@contextmanager
def _libraries_quiet() -> Iterator[None]:
    """diffusers' and transformers' own log lines and progress bars off while a part loads: a failed
    load must end in our one line, not after "An error occurred while trying to fetch" and a bar."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    libraries = (diffusers_logging, transformers_logging)
    saved = [(lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in libraries]
    for lib in libraries:
        lib.set_verbosity(lib.CRITICAL)
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, (verbosity, bar) in zip(libraries, saved, strict=True):
            lib.set_verbosity(verbosity)
            if bar:
                lib.enable_progress_bar()


def pickled_weights(folder: Path) -> Path | None:
    """The first pickled weights file (.bin/.ckpt/.pt/.pth) in `folder` when it has no .safetensors."""
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return None
    return next((f for f in sorted(folder.iterdir()) if f.suffix in PICKLE_SUFFIXES), None)


def load_part(
    loader: Callable[..., M], model: str, kind: Kind = MODEL, allow_download: bool = False, **kwargs: Any
) -> M:
    """`loader(source, **kwargs)` with every missing-weights failure turned into one line.

    Local folders and cached hub ids load without touching the network; an uncached hub id is
    fetched only if downloads are allowed (`download_allowed`), HF_HUB_OFFLINE is unset and the hub
    answers at once. Library warnings raised while loading (deprecated hub arguments and the like)
    are silenced: they are not the user's to act on, and an error must stay one line.
    """
    source, local = model_source(model, kind)
    errors = _hub_errors()

    def attempt(local_only: bool) -> M:
        with warnings.catch_warnings(), _libraries_quiet():
            warnings.simplefilter("ignore")
            return loader(source, local_files_only=local_only, **kwargs)

    def fail(reason: str) -> UserError:
        return UserError(f"cannot load {kind.what} '{model}': {reason}; {_hint(kind)}")

    try:
        return attempt(local_only=True)
    except errors as e:
        if local:
            pickles = pickled_weights(Path(source) / kwargs.get("subfolder", ""))
            if pickles:
                raise UserError(
                    f"cannot load {kind.what} '{model}': {pickles} holds its weights only as a pickle, "
                    "which can run code when read, and canon-edit reads safetensors only; convert it "
                    "(load it once where you trust it and save_pretrained(..., safe_serialization=True)) "
                    "or get the model's .safetensors files"
                ) from None
            raise fail((str(e).strip().splitlines() or [type(e).__name__])[0][:200]) from None
    if _offline():
        raise fail("it is not in the local Hugging Face cache and HF_HUB_OFFLINE is set")
    if not download_allowed(allow_download):
        raise UserError(
            f"{kind.what} '{model}' is not in the local Hugging Face cache and downloads are off; "
            f"get it with `huggingface-cli download {model} --local-dir /path/to/local/folder` and "
            f"{_hint(kind)}, or allow the download with --allow-download (or {ALLOW_DOWNLOAD_ENV}=1)"
        )
    if not hub_reachable():
        raise fail("it is not in the local Hugging Face cache and the hub cannot be reached")
    try:
        return attempt(local_only=False)
    except errors as e:
        raise fail((str(e).strip().splitlines() or [type(e).__name__])[0][:200]) from None


def freeze(module: nn.Module, device: torch.device, dtype: torch.dtype, options: LoadOptions) -> nn.Module:
    """Frozen, eval, on device; SDPA or classic attention; channels_last if asked."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    module.requires_grad_(False).eval()
    module.to(device)
    if module.dtype != dtype:  # loaded with torch_dtype already; components built in code may differ
        module.to(dtype)
    if hasattr(module, "set_attn_processor") and getattr(module, "attn_processors", None):
        module.set_attn_processor(AttnProcessor2_0() if options.sdpa else AttnProcessor())
    if options.channels_last:
        module.to(memory_format=torch.channels_last)
    return module


def _scheduler(model: str, allow_download: bool) -> Any:
    """The scheduler class and config the model folder names."""
    diffusers = require("diffusers", "diffusion", DIFFUSION)
    config = load_part(
        diffusers.DDIMScheduler.load_config, model, allow_download=allow_download, subfolder="scheduler"
    )
    cls = getattr(diffusers, str(config.get("_class_name", "DDIMScheduler")), diffusers.DDIMScheduler)
    return cls.from_config(config)


def load_model(
    model: str,
    device: str = "auto",
    options: LoadOptions | None = None,
    controlnet: str = "",
    allow_download: bool = False,
) -> DiffusionModel:
    """Tokenizer, text encoder, UNet, VAE (or the tiny autoencoder), scheduler and an optional ControlNet.

    `allow_download` lets uncached hub ids be fetched (see the module docstring).
    """
    diffusers = require("diffusers", "diffusion", DIFFUSION)
    transformers = require("transformers", "diffusion", DIFFUSION)
    options = options or LoadOptions()
    dev = pick_device(device)
    dtype = resolve_dtype(options.dtype, dev)
    weights: dict[str, Any] = {"torch_dtype": dtype, "use_safetensors": True}
    if options.variant:
        weights["variant"] = options.variant
    fetch = {"allow_download": allow_download}
    tokenizer = load_part(transformers.CLIPTokenizer.from_pretrained, model, subfolder="tokenizer", **fetch)
    text_encoder = load_part(
        transformers.CLIPTextModel.from_pretrained, model, subfolder="text_encoder", **fetch, **weights
    )
    unet = load_part(
        diffusers.UNet2DConditionModel.from_pretrained, model, subfolder="unet", **fetch, **weights
    )
    vae = load_part(diffusers.AutoencoderKL.from_pretrained, model, subfolder="vae", **fetch, **weights)
    scheduler = _scheduler(model, allow_download)
    vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
    latent_scale = float(vae.config.scaling_factor)
    if options.tiny_vae:
        vae = load_part(
            diffusers.AutoencoderTiny.from_pretrained,
            options.tiny_vae,
            TINY_VAE,
            **fetch,
            torch_dtype=dtype,
            use_safetensors=True,
        )
        tiny_factor = 2 ** (len(vae.config.encoder_block_out_channels) - 1)
        if tiny_factor != vae_factor:
            raise UserError(
                f"tiny autoencoder '{options.tiny_vae}' downsamples by {tiny_factor} but '{model}' by "
                f"{vae_factor}; pass one made for this model family (madebyollin/taesd for SD-1.5)"
            )
    net = None
    if controlnet:
        net = load_part(diffusers.ControlNetModel.from_pretrained, controlnet, CONTROLNET, **fetch, **weights)
        freeze(net, dev, dtype, options)
    for module in (text_encoder, unet, vae):
        freeze(module, dev, dtype, options)
    return DiffusionModel(
        name=model,
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        unet=unet,
        vae=vae,
        scheduler=scheduler,
        device=dev,
        dtype=dtype,
        vae_factor=vae_factor,
        latent_scale=latent_scale,
        controlnet=net,
        channels_last=options.channels_last,
    )


@torch.no_grad()
def encode_prompts(model: DiffusionModel, prompts: list[str]) -> Tensor:
    """N prompts → N×77×D text embeddings (the text encoder's last hidden state), in the model dtype."""
    tok = model.tokenizer(
        prompts,
        padding="max_length",
        max_length=model.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    return model.text_encoder(tok.input_ids.to(model.device))[0].to(model.dtype)


def _is_tiny(vae: nn.Module) -> bool:
    from diffusers import AutoencoderTiny

    return isinstance(vae, AutoencoderTiny)


def _nhwc(model: DiffusionModel, x: Tensor) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last) if model.channels_last else x


def encode_images(model: DiffusionModel, images: Tensor) -> Tensor:
    """B×3×H×W in [0,1] → the UNet's latents (scaled), float32; differentiable, deterministic (the mean)."""
    x = _nhwc(model, (images * 2 - 1).to(model.dtype))
    out = model.vae.encode(x)
    if _is_tiny(model.vae):
        return out.latents.float()  # the tiny autoencoder works in the scaled latent space already
    return out.latent_dist.mean.float() * model.latent_scale


def decode_latents(model: DiffusionModel, latents: Tensor) -> Tensor:
    """The UNet's latents → B×3×H×W in [0,1], float32."""
    scale = 1.0 if _is_tiny(model.vae) else model.latent_scale
    x = model.vae.decode(_nhwc(model, (latents / scale).to(model.dtype))).sample
    return ((x.float() + 1) / 2).clamp(0, 1)


def unet_input(model: DiffusionModel, latents: Tensor) -> Tensor:
    """Latents cast (and laid out) for the UNet."""
    return _nhwc(model, latents.to(model.dtype))
