"""Weight-free relighting of a portrait: fit the clip's SH light, split albedo from shading, shade anew.

1. The light: every Gaussian's colour in each of `light_frames` source frames, and its mesh normal
   there, go to `lighting.fit_light` (alternating least squares with the head's turns making light
   and albedo separable). Its scale is fixed so the mean shading over the observed normals is 1:
   the light carries relative shading, the albedo the average colour (the albedo–light ambiguity).
2. The albedo: by default ("ratio") the fit is kept and its colour is divided by the fitted shading
   at render time, so relighting with the fitted light is the fit itself, detail and all. "refit"
   trains the features and decoder so that decoded colour × shading(n, fitted light) reproduces the
   source frames (the decoder then outputs albedo, and the shading a head turn brings is modelled
   rather than averaged into the texture), refining the light's directional bands with it. Measured
   on the Lambertian procedural portrait, ratio came closer to the truth under a new light (20.0
   against 19.4 dB) and refit to the source under the old one (+4 dB); on a real clip refit costs
   80 s more (bench/RESULTS.md).
3. The new light replaces the fitted one at render time (shading.render_relit), so the same edit
   renders every frame, and novel views, under it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from kornia.losses import ssim_loss
from torch import Tensor
from tqdm.auto import tqdm

from canon_edit.errors import UserError

from .asset import spread
from .avatar import EditableAvatar
from .edit_config import RelightConfig
from .lighting import (
    directional_light,
    envmap_to_sh,
    fit_light,
    front_brightness,
    preset_light,
    read_envmap,
    shading,
)
from .shading import Relighting, gaussian_normals, render_relit

MIN_WEIGHT = 0.5  # a Gaussian is observed in a frame when it makes at least half a pixel of it


def interior(alpha: Tensor, margin: int = 1) -> Tensor:
    """1×H×W: pixels the person covers fully, `margin` pixels in from its silhouette."""
    solid = (alpha > 0.99).float()[None]
    return -F.max_pool2d(-solid, 2 * margin + 1, stride=1, padding=margin)[0]


def observations(avatar: EditableAvatar, frames: list[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(colours, normals, Gaussian ids, weights) of every Gaussian seen in `frames`, one row per sighting.

    Only pixels inside the person count: at the silhouette the source mixes the person with what is
    behind it, which no light explains.
    """
    rows: list[tuple[Tensor, ...]] = []
    g = avatar.gaussians()
    for t in frames:
        source = avatar.asset.background[t]
        with torch.no_grad():
            _, alpha, _ = avatar.render(t)
            normals = gaussian_normals(avatar.body, avatar.tracking, t, g["tri_id"], g["bary"])
        inside = interior(alpha)
        sums = avatar.splat_sums(t, torch.cat([source * inside, inside]))
        weight = sums[:, 3]
        ids = (weight > MIN_WEIGHT).nonzero()[:, 0]
        rows.append((sums[ids, :3] / weight[ids, None], normals[ids], ids, weight[ids].clamp(max=1)))
    if not rows or sum(len(r[2]) for r in rows) == 0:
        raise UserError("no Gaussian is seen in the source frames; check the fit before relighting")
    return tuple(torch.cat(parts) for parts in zip(*rows, strict=True))  # type: ignore[return-value]


def estimate_light(avatar: EditableAvatar, frames: list[int]) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """The clip's light (9×3), each Gaussian's albedo (N×3) and the fit's residual."""
    colours, normals, ids, weights = observations(avatar, frames)
    light, albedo = fit_light(colours, normals, ids, len(avatar.features), weights=weights)
    predicted = albedo[ids] * shading(normals, light)
    residual = float(((predicted - colours).abs() * weights[:, None]).sum() / (3 * weights.sum()))
    return light, albedo, {"light_frames": frames, "sightings": len(ids), "light_fit_l1": round(residual, 5)}


def target_light(cfg: RelightConfig) -> Tensor:
    """The new light (9×3), its brightness on a face-on surface `intensity`."""
    if cfg.preset:
        light = preset_light(cfg.preset)
    elif cfg.envmap:
        light = envmap_to_sh(read_envmap(cfg.envmap))
    else:
        az, el = math.radians(cfg.azimuth or 0.0), math.radians(cfg.elevation)
        direction = (math.sin(az) * math.cos(el), -math.sin(el), -math.cos(az) * math.cos(el))
        light = directional_light(direction, tuple(cfg.colour), 1.0, cfg.ambient)
    brightness = float(front_brightness(light).mean())
    if brightness <= 1e-6:
        raise UserError("the new light does not reach the face (it is dark from the front); choose another")
    return light * (cfg.intensity / brightness)


def refit_albedo(
    avatar: EditableAvatar, fitted: Tensor, cfg: RelightConfig, progress: bool
) -> tuple[Tensor, float]:
    """Train features and decoder so decoded albedo × shading reproduces the source; refine the light too.

    The light's directional bands (1 and 2) are refined with the albedo, through the renderer: the
    per-Gaussian colours `fit_light` starts from are blurred by the footprints (each pixel mixes
    several Gaussians), which biases it; rendering the model removes that bias. Its constant band
    stays, which keeps the albedo–light scale where `fit_light` fixed it. Returns the light and the
    final loss.
    """
    bands = fitted[1:].clone().requires_grad_(True)
    opt = torch.optim.Adam(
        [
            {"params": [avatar.features], "lr": cfg.lr_features},
            {"params": list(avatar.decoder.parameters()), "lr": cfg.lr_decoder},
            {"params": [bands], "lr": cfg.lr_light},
        ]
    )
    picks = torch.Generator().manual_seed(0)
    loss = torch.zeros(())
    for _ in tqdm(range(cfg.refit_steps), desc="albedo", disable=not progress):
        t = int(torch.randint(avatar.T, (1,), generator=picks))
        light = torch.cat([fitted[:1], bands])
        lit = Relighting(fitted=light, target=light, albedo=True)
        pred, _ = render_relit(
            avatar.body, avatar.gaussians(), avatar.decoder, avatar.tracking, t, avatar.camera(t),
            avatar.asset.background[t], lit,
        )  # fmt: skip
        target = avatar.asset.background[t]
        loss = (pred - target).abs().mean() + 0.2 * ssim_loss(pred[None], target[None], 11)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return torch.cat([fitted[:1], bands]).detach(), float(loss.detach())


def relight(
    avatar: EditableAvatar, cfg: RelightConfig, progress: bool = True
) -> tuple[Relighting, dict[str, Any]]:
    """Fit the clip's light, refit the albedo if asked, and set the new light; edit.json's record."""
    new = target_light(cfg)  # a bad environment map fails before any work
    light, _, stats = estimate_light(avatar, spread(avatar.T, cfg.light_frames))
    if cfg.albedo == "refit" and cfg.refit_steps > 0:
        light, loss = refit_albedo(avatar, light, cfg, progress)
        stats["albedo_refit_loss"] = round(loss, 5)
    lit = Relighting(fitted=light, target=new, rotate=cfg.rotate, albedo=cfg.albedo == "refit")
    return lit, {**stats, "fitted_light": light.tolist(), "light": new.tolist()}
