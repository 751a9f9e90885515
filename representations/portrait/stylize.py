"""Stylisation of a portrait by a style image: its colours, then its texture, on the avatar itself.

First the colour statistics (appearance.py, as ARF does before its feature loss). Then, in
`texture` mode, the Gram matrices of fixed random multi-scale filters (Ustyuzhaninov et al. 2017:
weight-free) of the person in random frames are pulled to the style image's, or, with `--vgg`, ARF's
nearest-neighbour feature matching (or Gatys's Grams) on the user's VGG; a content term keeps the
features of the original renders. Features and decoder train; the geometry is the fit's, so the
style rides with the head. Grams are taken inside the person only (its alpha, downsampled), so the
black around the person is not part of the texture.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from canon_edit.edit.checkpoint import CheckpointedLoop, EditCheckpoint
from canon_edit.guidance.distill import crop_resize
from canon_edit.style.features import RandomFeatures
from canon_edit.style.losses import (
    ARF_CONTENT_WEIGHT,
    ARF_LAYERS,
    GATYS_STYLE_LAYERS,
    nn_feature_matching_loss,
    tv_loss,
)
from canon_edit.style.vgg import load_vgg

from .avatar import EditableAvatar
from .distill import person_square
from .edit_config import StylizeConfig

CROP_MARGIN = 1.1


def masked_gram(features: Tensor, mask: Tensor) -> Tensor:
    """B×C×C correlations of the features inside `mask` (B×1×h×w at any size), per masked position."""
    m = F.interpolate(mask, size=features.shape[-2:], mode="area")
    flat = (features * m).flatten(2)
    return flat @ features.flatten(2).transpose(1, 2) / m.flatten(1).sum(1).clamp(min=1)[:, None, None]


class StyleFeatures:
    """Feature maps for the style loss: random filters, or the user's VGG's named layers."""

    def __init__(self, cfg: StylizeConfig, vgg: str | None):
        self.cfg = cfg
        self.vgg = load_vgg(vgg) if vgg else None
        self.random = RandomFeatures(seed=cfg.seed) if self.vgg is None else None
        self.layers = ARF_LAYERS if cfg.loss == "nnfm" else GATYS_STYLE_LAYERS

    def __call__(self, images: Tensor) -> list[Tensor]:
        if self.vgg is None:
            return self.random(images)
        named = self.vgg(images, self.layers)
        return [named[k] for k in self.layers]

    def style_loss(self, feats: list[Tensor], mask: Tensor, style: list[Tensor]) -> Tensor:
        if self.vgg is not None and self.cfg.loss == "nnfm":
            m = F.interpolate(mask, size=feats[0].shape[-2:], mode="area") > 0.5
            block = torch.cat(feats, 1).permute(0, 2, 3, 1)[m[:, 0]]  # person positions only
            return nn_feature_matching_loss(block.T[None, :, :, None], torch.cat(style, 1))
        return torch.stack(
            [
                (masked_gram(f, mask) - masked_gram(s, torch.ones_like(s[:, :1]))).square().mean()
                for f, s in zip(feats, style, strict=True)
            ]
        ).mean()


def gram_distance(images: Tensor, masks: Tensor, style: Tensor, seed: int = 0) -> float:
    """The random-filter Gram distance of person crops to a style image: the texture figure."""
    net = RandomFeatures(seed=seed)
    with torch.no_grad():
        style_grams = [masked_gram(s, torch.ones_like(s[:, :1])) for s in net(style[None])]
        grams = [masked_gram(f, masks) for f in net(images)]
    return float(
        torch.stack([(g - s).square().mean() for g, s in zip(grams, style_grams, strict=True)]).mean()
    )


def person_crops(avatar: EditableAvatar, t: int, size: int) -> tuple[Tensor, Tensor]:
    """Frame t's person over black and its alpha, cropped to its square and resized (1×3×R×R, 1×1×R×R)."""
    black = torch.zeros(3, avatar.H, avatar.W)
    image, alpha, _ = avatar.render(t, background=black)
    box = person_square(alpha.detach(), CROP_MARGIN)
    return crop_resize(image[None], box, size), crop_resize(alpha[None].detach(), box, size)


def stylize_texture(
    avatar: EditableAvatar,
    reference: EditableAvatar,
    style: Tensor,
    cfg: StylizeConfig,
    vgg: str | None,
    progress: bool = True,
    checkpoint: EditCheckpoint | None = None,
) -> dict[str, Any]:
    """Optimise `avatar`'s features and decoder towards the style's texture; returns what edit.json
    records. The content a frame keeps is `reference`'s render (the avatar before this loop), whatever
    step the frame is first drawn at: the avatar's own render would be a target already stylized.
    With a `checkpoint` a stopped loop resumes bit for bit (the content targets are taken again from
    `reference`, which does not change)."""
    net = StyleFeatures(cfg, vgg)
    side = min(style.shape[-2:])
    style_crop = F.interpolate(style[None, :3], scale_factor=cfg.crop / side, mode="bilinear", antialias=True)
    with torch.no_grad():
        style_feats = net(style_crop.clamp(0, 1))
    originals: dict[int, tuple[list[Tensor], Tensor]] = {}
    opt = torch.optim.Adam(
        [
            {"params": [avatar.features], "lr": cfg.lr_features},
            {"params": list(avatar.decoder.parameters()), "lr": cfg.lr_decoder},
        ]
    )
    avatar.offset.requires_grad_(False)
    picks = torch.Generator().manual_seed(cfg.seed)
    loop = CheckpointedLoop(checkpoint, opt, avatar.features.device, cfg.steps, generator=picks)
    bar = tqdm(total=cfg.steps, initial=loop.start, desc="stylize", disable=not progress)

    def loss_at(t: int) -> Tensor:
        if t not in originals:
            with torch.no_grad():
                image, mask = person_crops(reference, t, cfg.crop)
                originals[t] = (net(image), mask)
        content, mask = originals[t]
        image, _ = person_crops(avatar, t, cfg.crop)
        feats = net(image)
        loss = cfg.style_weight * net.style_loss(feats, mask, style_feats)
        weight = cfg.content_weight * (
            ARF_CONTENT_WEIGHT if net.vgg is not None and cfg.loss == "nnfm" else 1.0
        )
        kept = [
            F.mse_loss(f * mask_at(mask, f), c * mask_at(mask, c))
            for f, c in zip(feats, content, strict=True)
        ]
        loss = loss + weight * torch.stack(kept).mean()
        return loss + cfg.tv_weight * tv_loss(image) if cfg.tv_weight else loss

    with loop.running(), bar:
        for step in range(loop.start, cfg.steps):
            loss = loss_at(int(torch.randint(avatar.T, (1,), generator=picks)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update(1)
            loop.step_done(step)
    return {"style_features": "vgg" if vgg else "random", "loss": cfg.loss if vgg else "gram"}


def mask_at(mask: Tensor, like: Tensor) -> Tensor:
    return F.interpolate(mask, size=like.shape[-2:], mode="area")
