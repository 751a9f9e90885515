"""Keyframe lift on a portrait: pixels painted on one frame become the colour of the Gaussians under them.

Only the features of the Gaussians the keyframe sees are optimised (the decoder, shared by every
frame, stays fixed), so a mark painted on the cheek in frame 20 is carried by the cheek's Gaussians
into every other frame, and a Gaussian the keyframe did not see keeps its colour exactly. The
keyframe's target is the painted image where it changed and the current render elsewhere; a few
other frames are held to their previous renders wherever the painted Gaussians do not reach them, so
a Gaussian seen only at a grazing angle cannot drift to fit the keyframe.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from canon_edit.canonical import changed_mask
from canon_edit.errors import UserError

from .avatar import EditableAvatar
from .edit_config import LiftConfig
from .raster import rasterize
from .render import posed_gaussians


@torch.no_grad()
def coverage(avatar: EditableAvatar, t: int, chosen: Tensor) -> Tensor:
    """H×W: the share of each pixel of frame t that the `chosen` (N bool) Gaussians make."""
    tr, g = avatar.tracking, avatar.gaussians()
    means, quats = posed_gaussians(
        avatar.body, tr.pose[t], tr.expression[t], tr.shape, g["tri_id"], g["bary"], g["offset"],
        g["quats_local"],
    )  # fmt: skip
    image, _ = rasterize(
        means, quats, g["log_scales"].exp(), torch.sigmoid(g["opacity_logits"]), chosen.float()[:, None],
        avatar.camera(t),
    )  # fmt: skip
    return image[..., 0]


def hold_frames(T: int, t: int, count: int) -> list[int]:
    """`count` frames spread over the clip, the keyframe left out."""
    picks = torch.linspace(0, T - 1, count + 1).round().long().unique().tolist()
    return [s for s in picks if s != t][:count]


def lift_keyframe(
    avatar: EditableAvatar,
    t: int,
    edited: Tensor,
    mask: Tensor | None,
    cfg: LiftConfig,
    progress: bool = True,
) -> dict[str, Any]:
    """Optimise `avatar`'s features so frame t shows `edited` (3×H×W); returns what edit.json records.

    `mask` (H×W) marks the pixels to lift; None: those that differ from both the source frame and
    the current render, so reconstruction error is never mistaken for paint.
    """
    with torch.no_grad():
        before, _, _ = avatar.render(t)
    if mask is None:
        mask = changed_mask(edited, avatar.asset.background[t]) * changed_mask(edited, before)
    if not mask.any():
        raise UserError(f"the edited frame does not differ from frame {t}; paint on it or give a change mask")
    seen = avatar.visibility(t, torch.ones(avatar.H, avatar.W)) > cfg.seen_threshold
    painted = avatar.visibility(t, mask) > cfg.seen_threshold * 0.1
    target = edited * mask + before * (1 - mask)
    held = []
    with torch.no_grad():
        for s in hold_frames(avatar.T, t, cfg.hold_frames):
            keep = (coverage(avatar, s, painted) < 0.01).float()
            held.append((s, avatar.render(s)[0], keep))
    avatar.features.register_hook(lambda grad: grad * seen[:, None])
    opt = torch.optim.Adam([avatar.features], lr=cfg.lr)
    for step in tqdm(range(cfg.steps), desc="lift keyframe", disable=not progress):
        pred, _, _ = avatar.render(t)
        loss = F.mse_loss(pred, target) + (pred - target).abs().mean()
        if held:
            s, previous, keep = held[step % len(held)]
            loss = loss + cfg.hold_weight * ((avatar.render(s)[0] - previous).abs() * keep).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        after, _, _ = avatar.render(t)
        err = float(((after - edited) ** 2 * mask).sum() / (3 * mask.sum()))
    return {
        "lifted_pixels": int(mask.sum()),
        "gaussians_seen": int(seen.sum()),
        "gaussians_painted": int(painted.sum()),
        "held_frames": [s for s, _, _ in held],
        "keyframe_psnr_on_paint": round(-10 * torch.log10(torch.tensor(max(err, 1e-10))).item(), 3),
    }
