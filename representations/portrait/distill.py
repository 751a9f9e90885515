"""SDS / DDS on a portrait: scores of renders from tracked frames and novel views, into features and decoder.

The loop, the score and the guidance are the core's (`canon_edit.guidance.distill.distill_steps`);
this module only says what a view is. A view is a random frame, seen from its tracked camera over its
source frame, or (with `view_chance`) from a camera swung around the head over grey, so the edit
holds from angles the video never showed. The crop is the person's bounding square, since the
person is what the prompt describes. Geometry is not optimised: only the person's pixels can change.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from canon_edit.edit.checkpoint import EditCheckpoint
from canon_edit.guidance.distill import crop_resize, distill_steps
from canon_edit.guidance.models import DiffusionModel

from .avatar import EditableAvatar
from .edit_config import PortraitDistillConfig
from .orbit import head_centre, turned_camera

GREY = 0.5


def person_square(alpha: Tensor, margin: float) -> tuple[int, int, int]:
    """(y, x, side): the person's bounding square grown by `margin`, kept inside the frame."""
    h, w = alpha.shape[-2:]
    ys, xs = torch.nonzero(alpha.reshape(h, w) > 0.5, as_tuple=True)
    if len(ys) == 0:
        side = min(h, w)
        return (h - side) // 2, (w - side) // 2, side
    side = min(h, w, round(max(int(ys.max() - ys.min()), int(xs.max() - xs.min())) * margin) + 1)
    cy, cx = (int(ys.max()) + int(ys.min())) // 2, (int(xs.max()) + int(xs.min())) // 2
    y = min(max(cy - side // 2, 0), h - side)
    x = min(max(cx - side // 2, 0), w - side)
    return y, x, side


def distill_portrait(
    avatar: EditableAvatar,
    original: EditableAvatar,
    model: DiffusionModel,
    method: str,
    prompt: str,
    cfg: PortraitDistillConfig,
    *,
    source_prompt: str = "",
    seed: int = 0,
    progress: bool = True,
    checkpoint: EditCheckpoint | None = None,
) -> dict[str, Any]:
    """Optimise `avatar`'s features and decoder under SDS/DDS; `original` renders DDS's reference views."""
    avatar.offset.requires_grad_(False)
    res = model.resolution
    counts = {"novel_views": 0}  # kept with the checkpoint: a resumed edit counts them all

    def render(who: EditableAvatar, t: int, yaw: float | None, pitch: float) -> tuple[Tensor, Tensor]:
        if yaw is None:
            image, alpha, _ = who.render(t)
        else:
            camera = turned_camera(who.camera(t), head_centre(who.body, who.tracking, t), yaw, pitch)
            grey = torch.full((3, who.H, who.W), GREY)
            image, alpha, _ = who.render(t, camera, grey)
        return image, alpha

    def views(step: int, picks: torch.Generator) -> tuple[Tensor, Tensor | None]:
        images, sources = [], []
        for _ in range(cfg.batch):
            t = int(torch.randint(avatar.T, (1,), generator=picks))
            yaw, pitch = None, 0.0
            if float(torch.rand((), generator=picks)) < cfg.view_chance:
                yaw, pitch = (float(a) * cfg.view_degrees for a in torch.rand(2, generator=picks) * 2 - 1)
                counts["novel_views"] += 1
            image, alpha = render(avatar, t, yaw, pitch)
            box = person_square(alpha.detach(), cfg.crop_margin)
            images.append(crop_resize(image[None], box, res))
            if method == "dds":
                with torch.no_grad():
                    sources.append(crop_resize(render(original, t, yaw, pitch)[0][None], box, res))
        return torch.cat(images).to(model.device), torch.cat(sources).to(model.device) if sources else None

    opt = torch.optim.Adam(
        [
            {"params": [avatar.features], "lr": cfg.lr},
            {"params": list(avatar.decoder.parameters()), "lr": cfg.lr_decoder},
        ]
    )
    distill_steps(
        model, method, prompt, cfg, opt, views, source_prompt=source_prompt, seed=seed, progress=progress,
        checkpoint=checkpoint, counts=counts,
    )  # fmt: skip
    return {**counts, **avatar.shift()}
