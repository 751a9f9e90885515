"""Iterative dataset update on a portrait (PortraitGen, Instruct-NeRF2NeRF): an image editor drives it.

Every `keyframe_every`-th frame is a keyframe; the others are never edited or trained on, so they
measure how the edit generalises. The dataset starts as the source keyframes. Every `reedit_every`
steps one keyframe is edited again *from the current render* (conditioned on its original frame),
so the edits converge on one look the avatar can hold instead of fighting each other. Each step
trains the features and the decoder on one keyframe: L1 and SSIM to its edited image, the first three
feature channels to the original frame (the base colour stays the source's; the decoder carries the
edit), and the offsets, when free at all, under a regulariser.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from kornia.losses import ssim_loss
from torch import Tensor
from tqdm.auto import tqdm

from canon_edit.edit.checkpoint import CheckpointedLoop, EditCheckpoint, per_step_seed
from canon_edit.guidance.iclight import GREY, ICLightConfig, relight_image
from canon_edit.guidance.models import DiffusionModel
from canon_edit.guidance.regenerate import IP2PConfig, ip2p

from .avatar import EditableAvatar
from .edit_config import IDUConfig
from .tracking import project_points

# (frame, current render 3×H×W, original frame 3×H×W, alpha 1×H×W, draw) → the edited frame 3×H×W;
# `draw` (the step asking) seeds the editor's random choices, so a resumed update repeats them
Editor = Callable[[int, Tensor, Tensor, Tensor, int], Tensor]


def keyframes(T: int, every: int) -> list[int]:
    """Every `every`-th frame, at least two when the clip has two (one frame cannot show a trend)."""
    picks = list(range(0, T, every))
    if len(picks) < 2 and T > 1:
        picks = [0, T - 1]
    return picks


def iterative_dataset_update(
    avatar: EditableAvatar,
    editor: Editor,
    cfg: IDUConfig,
    seed: int = 0,
    progress: bool = True,
    checkpoint: EditCheckpoint | None = None,
    draws_on: torch.device | None = None,
) -> dict[str, Any]:
    """Train `avatar` towards `editor`'s view of its keyframes; returns what edit.json records.

    With a `checkpoint` the edited dataset, the re-edit order and counts are kept with the
    parameters, and every step's draws are seeded by its index: a stopped update resumes bit for bit
    when the editor draws on the same kind of device, `draws_on` (its model's; default the avatar's),
    which the checkpoint records.
    """
    frames = keyframes(avatar.T, cfg.keyframe_every)
    original = avatar.asset.background
    dataset = {str(k): original[k] for k in frames}  # keyed as the checkpoint stores them
    state: dict[str, Any] = {"order": [], "edits": [0] * len(frames)}
    picks = torch.Generator()
    groups = [
        {"params": [avatar.features], "lr": cfg.lr_features},
        {"params": list(avatar.decoder.parameters()), "lr": cfg.lr_decoder},
    ]
    if cfg.lr_offset > 0:
        groups.append({"params": [avatar.offset], "lr": cfg.lr_offset})
    else:
        avatar.offset.requires_grad_(False)
    opt = torch.optim.Adam(groups)
    loop = CheckpointedLoop(checkpoint, opt, draws_on or avatar.features.device, cfg.steps, state, dataset)
    bar = tqdm(total=cfg.steps, initial=loop.start, desc="iterative dataset update", disable=not progress)
    with loop.running(), bar:
        for step in range(loop.start, cfg.steps):
            picks.manual_seed(per_step_seed(seed, step))
            edits = state["edits"]
            open_ = [i for i in range(len(frames)) if not cfg.max_edits or edits[i] < cfg.max_edits]
            if step % cfg.reedit_every == 0 and open_:
                state["order"] = [i for i in state["order"] if i in open_]
                if not state["order"]:
                    state["order"] = [open_[j] for j in torch.randperm(len(open_), generator=picks).tolist()]
                i = state["order"].pop()
                k = frames[i]
                with torch.no_grad():
                    render, alpha, _ = avatar.render(k)
                    edited = editor(k, render.clamp(0, 1), original[k], alpha, step)
                    dataset[str(k)] = (alpha * edited + (1 - alpha) * original[k]).clamp(0, 1)
                edits[i] += 1
            k = frames[int(torch.randint(len(frames), (1,), generator=picks))]
            pred, alpha, feats = avatar.render(k)
            target = dataset[str(k)]
            loss = cfg.l1_weight * (pred - target).abs().mean()
            loss = loss + cfg.ssim_weight * ssim_loss(pred[None], target[None], 11)
            base = torch.sigmoid(feats[:3])
            loss = loss + cfg.feature_weight * ((base - original[k]).abs() * alpha).mean()
            if cfg.lr_offset > 0:
                loss = loss + cfg.offset_weight * avatar.offset_penalty()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update(1)
            loop.step_done(step)
    calls = sum(state["edits"])
    return {"keyframes": frames, "held_out": avatar.T - len(frames), "editor_calls": calls, **avatar.shift()}


def face_boxes(avatar: EditableAvatar, scale: float) -> list[tuple[int, int, int]]:
    """Per frame, the square (y, x, side) around the head: `scale` × the projected face landmarks' extent.

    The square may reach past the frame; `crop` pads it with the frame's edge pixels.
    """
    body, tr = avatar.body, avatar.tracking
    boxes = []
    with torch.no_grad():
        for t in range(avatar.T):
            vertices = body(tr.pose[t : t + 1], tr.expression[t : t + 1], tr.shape).vertices
            uv = project_points(body.landmarks(vertices)[0], tr.viewmat[t], tr.K)
            lo, hi = uv.amin(0), uv.amax(0)
            side = max(8, round(float((hi - lo).max()) * scale))
            cx, cy = (lo + hi) / 2
            boxes.append((round(float(cy) - side / 2), round(float(cx) - side / 2), side))
    return boxes


def crop(image: Tensor, box: tuple[int, int, int], size: int) -> Tensor:
    """The square `box` of a C×H×W image (edge-padded where it leaves the frame), resized to size²."""
    y, x, s = box
    h, w = image.shape[-2:]
    pad = (max(0, -x), max(0, x + s - w), max(0, -y), max(0, y + s - h))
    padded = F.pad(image[None], pad, mode="replicate")
    y0, x0 = y + pad[2], x + pad[0]
    square = padded[..., y0 : y0 + s, x0 : x0 + s]
    return F.interpolate(square, size=(size, size), mode="bilinear", align_corners=False, antialias=s > size)[
        0
    ]


def paste(image: Tensor, patch: Tensor, box: tuple[int, int, int], weight: Tensor) -> Tensor:
    """`patch` (C×R×R) resized into `box` of `image`, blended by `weight` (1×H×W in [0, 1])."""
    y, x, s = box
    h, w = image.shape[-2:]
    patch = F.interpolate(patch[None], size=(s, s), mode="bilinear", align_corners=False)[0]
    canvas = image.clone()
    ys, xs = slice(max(0, y), min(h, y + s)), slice(max(0, x), min(w, x + s))
    canvas[:, ys, xs] = patch[:, ys.start - y : ys.stop - y, xs.start - x : xs.stop - x]
    return weight * canvas + (1 - weight) * image


def head_weight(alpha: Tensor, box: tuple[int, int, int], feather: float = 0.15) -> Tensor:
    """1×H×W: the person, dilated by a few pixels, inside the box with feathered edges (the paste mask)."""
    y, x, s = box
    h, w = alpha.shape[-2:]
    radius = max(1, round(0.02 * s))
    person = F.max_pool2d((alpha > 0.5).float()[None], 2 * radius + 1, stride=1, padding=radius)[0]
    ramp = max(1.0, feather * s)
    ys = torch.arange(h, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(w, dtype=torch.float32)[None, :] + 0.5
    inside_y = ((ys - y).clamp(0, ramp).minimum((y + s - ys).clamp(0, ramp))) / ramp
    inside_x = ((xs - x).clamp(0, ramp).minimum((x + s - xs).clamp(0, ramp))) / ramp
    return person * (inside_y * inside_x)[None]


def ip2p_editor(
    model: DiffusionModel,
    instruction: str,
    cfg: IDUConfig,
    boxes: list[tuple[int, int, int]] | None,
    seed: int = 0,
) -> Editor:
    """InstructPix2Pix from the noised render, conditioned on the original frame; the head edited again
    in a square crop at `face_resolution` with the same noise seed and pasted back."""
    draws = torch.Generator()
    base = IP2PConfig(
        model=cfg.model,
        guidance_scale=cfg.guidance_scale,
        image_guidance_scale=cfg.image_guidance_scale,
        negative_prompt=cfg.negative_prompt,
        scheduler="ddim",
        tile_overlap=cfg.tile_overlap,
        tile_batch=cfg.tile_batch,
        load=cfg.load,
    )

    def edit(t: int, render: Tensor, original: Tensor, alpha: Tensor, draw: int) -> Tensor:
        draws.manual_seed(per_step_seed(seed, draw, stream=2))
        strength = cfg.t_min + (cfg.t_max - cfg.t_min) * float(torch.rand((), generator=draws))
        rcfg = replace(base, strength=strength, steps=math.ceil(cfg.denoise_steps / strength))
        noise_seed = int(torch.randint(2**31, (), generator=draws))

        def run(image: Tensor, condition: Tensor) -> Tensor:
            generator = torch.Generator(model.device).manual_seed(noise_seed)
            return ip2p(model, image, instruction, rcfg, generator, progress=False, condition=condition)

        out = run(render, original).to(render)
        if boxes is not None:
            box, size = boxes[t], cfg.face_resolution
            face = run(crop(render, box, size), crop(original, box, size)).to(render)
            out = paste(out, face, box, head_weight(alpha, box))
        return out

    return edit


def iclight_editor(model: DiffusionModel, prompt: str, cfg: ICLightConfig, seed: int = 0) -> Editor:
    """IC-Light on the person over grey 127 (IC-Light's convention for what is not the subject)."""

    def edit(t: int, render: Tensor, original: Tensor, alpha: Tensor, draw: int) -> Tensor:
        foreground = render + (GREY - original) * (1 - alpha)  # the person over grey, not the source
        generator = torch.Generator(model.device).manual_seed(seed + t)
        return relight_image(model, foreground, prompt, cfg, generator).to(render)

    return edit
