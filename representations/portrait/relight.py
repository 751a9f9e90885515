"""Weight-free relighting of a portrait: fit the clip's SH light, split albedo from shading, shade anew.

1. The light: the source's colour at every point of the surface probe (surface.py: small flat
   Gaussians on the tracked mesh) in each of `light_frames` frames, and the mesh normal there, go to
   `lighting.fit_light` (the head's turns make light and albedo separable). Its scale is fixed so
   the mean shading over the observed normals is 1: the light carries relative shading, the albedo
   the average colour (the albedo–light ambiguity). The new light is scaled to the same mean
   shading times `intensity` (`as_bright`), so both measure brightness on the same surfaces.
2. The albedo: by default ("refit") the features and decoder are trained so that decoded colour ×
   shading(n, fitted light) reproduces the source frames: the decoder then outputs albedo, and the
   shading a head turn brings is modelled rather than averaged into the texture. "ratio" keeps the
   fit and divides its colour by the fitted shading at render time, so relighting with the fitted
   light is the fit itself, and it costs nothing, but every error of the fit in a shadow is
   multiplied by the new light's gain there. Measured on the Lambertian procedural portrait against
   its true render under a new light (bench/RESULTS.md, default shading_blur): refit 30.8 dB,
   ratio 26.1 dB.
3. The new light replaces the fitted one at render time (shading.render_relit), so the same edit
   renders every frame, and novel views, under it. By default ("footage") the tracked views relight
   the source frames themselves by the same ratio; the albedo serves novel views.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from kornia.losses import ssim_loss
from torch import Tensor
from tqdm.auto import tqdm

from canon_edit.edit.checkpoint import CheckpointedLoop, EditCheckpoint
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
from .shading import Relighting, render_relit
from .surface import SurfaceProbe

MIN_WEIGHT = 0.2  # a probe point is observed in a frame when it makes at least this much of a pixel
CLIPPED = 0.98  # a source pixel this bright in any channel may be clipped: not albedo × shading


def interior(alpha: Tensor, margin: int = 1) -> Tensor:
    """1×H×W: pixels the person covers fully, `margin` pixels in from its silhouette."""
    solid = (alpha > 0.99).float()[None]
    return -F.max_pool2d(-solid, 2 * margin + 1, stride=1, padding=margin)[0]


def observations(
    avatar: EditableAvatar, probe: SurfaceProbe, frames: list[int]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(colours, normals, probe point ids, weights) of each surface point seen in `frames`, a row a sighting.

    The points are the surface probe's (surface.py), small and flat on the mesh, so a point's colour is
    the source over about one pixel of its surface. Only unclipped pixels inside the person count:
    at the silhouette the source mixes the person with what is behind it, and where the camera
    clipped it the colour stops growing with the shading; no light explains either. (On the
    Lambertian procedural portrait lit so that 31% of the person's pixels clip, the fitted light was
    9.3% off with them and 7.5% without.)
    """
    rows: list[tuple[Tensor, ...]] = []
    for t in frames:
        source = avatar.asset.background[t]
        with torch.no_grad():
            _, alpha, _ = avatar.render(t)
            normals = probe.normals(avatar.body, avatar.tracking, t)
        inside = interior(alpha) * (source.amax(0, keepdim=True) < CLIPPED)
        sums = probe.sums(avatar.body, avatar.tracking, t, torch.cat([source * inside, inside]))
        weight = sums[:, 3]
        ids = (weight > MIN_WEIGHT).nonzero()[:, 0]
        rows.append((sums[ids, :3] / weight[ids, None], normals[ids], ids, weight[ids].clamp(max=1)))
    if not rows or sum(len(r[2]) for r in rows) == 0:
        raise UserError("no part of the body is seen in the source frames; check the fit before relighting")
    return tuple(torch.cat(parts) for parts in zip(*rows, strict=True))  # type: ignore[return-value]


def estimate_light(
    sightings: tuple[Tensor, Tensor, Tensor, Tensor], n_points: int
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """The clip's light (9×3), each probe point's albedo (N×3) and the fit's residual, from `observations`."""
    colours, normals, ids, weights = sightings
    light, albedo = fit_light(colours, normals, ids, n_points, weights=weights)
    predicted = albedo[ids] * shading(normals, light)
    residual = float(((predicted - colours).abs() * weights[:, None]).sum() / (3 * weights.sum()))
    return light, albedo, {"sightings": len(ids), "light_fit_l1": round(residual, 5)}


def as_bright(light: Tensor, normals: Tensor, weights: Tensor, intensity: float) -> Tensor:
    """`light` scaled so its mean shading over the clip's observed normals (mean over RGB) is `intensity`.

    The fitted light's is 1 (fit_light's normalisation), so both lights measure brightness on the
    same surfaces: at intensity 1 a relit clip keeps the fit's brightness, rather than drifting by
    how far the normals the clip shows are from a hemisphere's. The light's colour is kept.
    """
    mean = float(((weights[:, None] * shading(normals, light)).sum(0) / weights.sum()).mean())
    if mean <= 1e-6:
        raise UserError("the new light does not reach the face (it is dark from the front); choose another")
    return light * (intensity / mean)


def target_light(cfg: RelightConfig) -> Tensor:
    """The new light (9×3); `as_bright` sets its brightness once the clip's normals are known.

    A light that is dark over the camera-facing hemisphere fails here, before any work is done.
    """
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
    return light


def refit_albedo(
    avatar: EditableAvatar,
    probe: SurfaceProbe,
    light: Tensor,
    cfg: RelightConfig,
    progress: bool,
    checkpoint: EditCheckpoint | None = None,
) -> float:
    """Train features and decoder so decoded albedo × shading(n, `light`) reproduces the source; the loss.
    With a `checkpoint` a stopped refit resumes bit for bit.

    The light stays as `fit_light` found it from the probe's sightings: refining its bands with the
    albedo through the renderer, as this once did, moved it from 2.3% to 5.1% off the truth on the
    procedural portrait and cost 3 dB under a new light.
    """
    opt = torch.optim.Adam(
        [
            {"params": [avatar.features], "lr": cfg.lr_features},
            {"params": list(avatar.decoder.parameters()), "lr": cfg.lr_decoder},
        ]
    )
    lit = Relighting(fitted=light, target=light, albedo=True, blur=cfg.shading_blur)
    picks = torch.Generator().manual_seed(0)
    state = {"loss": 0.0}
    loop = CheckpointedLoop(checkpoint, opt, avatar.features.device, cfg.refit_steps, state, generator=picks)
    bar = tqdm(total=cfg.refit_steps, initial=loop.start, desc="albedo", disable=not progress)
    with loop.running(), bar:
        for step in range(loop.start, cfg.refit_steps):
            t = int(torch.randint(avatar.T, (1,), generator=picks))
            pred, _ = render_relit(
                avatar.body, avatar.gaussians(), avatar.decoder, avatar.tracking, t, avatar.camera(t),
                avatar.asset.background[t], lit, probe,
            )  # fmt: skip
            target = avatar.asset.background[t]
            loss = (pred - target).abs().mean() + 0.2 * ssim_loss(pred[None], target[None], 11)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            state["loss"] = float(loss.detach())
            bar.update(1)
            loop.step_done(step)
    return state["loss"]


def relight(
    avatar: EditableAvatar,
    cfg: RelightConfig,
    surface: Callable[[], SurfaceProbe],
    progress: bool = True,
    checkpoint: EditCheckpoint | None = None,
) -> tuple[Relighting, dict[str, Any]]:
    """Fit the clip's light, refit the albedo if asked, and set the new light; edit.json's record.

    `surface` gives the asset's surface probe (`EditablePortrait.surface_probe`, which keeps it for the
    relit renders); it is asked for only once the new light has been checked. The refit resumes from
    `checkpoint`.
    """
    new = target_light(cfg)  # a bad environment map fails before any work
    frames = spread(avatar.T, cfg.light_frames)
    probe = surface()
    sightings = observations(avatar, probe, frames)
    light, _, stats = estimate_light(sightings, len(probe))
    new = as_bright(new, sightings[1], sightings[3], cfg.intensity)
    stats["light_frames"] = frames
    refitted = cfg.albedo == "refit" and cfg.refit_steps > 0
    if refitted:
        stats["albedo_refit_loss"] = round(refit_albedo(avatar, probe, light, cfg, progress, checkpoint), 5)
    lit = Relighting(light, new, cfg.rotate, refitted, cfg.shading_blur, cfg.footage)
    return lit, {**stats, "fitted_light": light.tolist(), "light": new.tolist()}
