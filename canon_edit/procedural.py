"""A procedural clip whose canonical truth is known: a textured background under a camera pan
and zoom, and a textured sprite that translates, rotates and bends non-rigidly.

The truth is itself a `CanonicalVideo` (true textures, true per-frame uv and alpha), so fits and
edit propagation can be scored against ground truth, and the frames are exactly its render.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .canonical import CanonicalVideo, Layer, over, sample_texture, splat
from .video import Clip


@dataclass
class ProceduralClip:
    clip: Clip
    truth: CanonicalVideo


def _smooth_noise(g: torch.Generator, channels: int, h: int, w: int, cells: int) -> Tensor:
    coarse = torch.rand(1, channels, cells, max(2, round(cells * w / h)), generator=g)
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)[0]


def background_texture(g: torch.Generator, h: int, w: int) -> Tensor:
    """Smooth colour fields plus sharp stripes and discs: detail for flow and for PSNR to reward."""
    tex = 0.55 * _smooth_noise(g, 3, h, w, 4) + 0.25 * _smooth_noise(g, 3, h, w, 12)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    stripes = (torch.sin(2 * math.pi * (xx * 9 + yy * 3)) > 0.6).float()
    tex = tex + 0.15 * stripes[None] * torch.tensor([0.9, 0.3, -0.4])[:, None, None]
    for _ in range(14):
        cx, cy, r = torch.rand(3, generator=g).tolist()
        d = ((xx - cx) ** 2 * (w / h) ** 2 + (yy - cy) ** 2).sqrt()
        disc = torch.sigmoid((0.03 + 0.05 * r - d) * h * 0.5)
        color = torch.rand(3, generator=g)[:, None, None]
        tex = tex * (1 - disc) + color * disc
    return tex.clamp(0, 1)


def sprite_texture(g: torch.Generator, size: int) -> Tensor:
    """RGBA sprite: an elliptic body with a soft edge and an internal pattern."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    r = ((xx / 0.95) ** 2 + (yy / 0.7) ** 2).sqrt()
    alpha = torch.sigmoid((1 - r) * size)  # about one texel of soft edge, like a real object
    rgb = 0.3 + 0.6 * _smooth_noise(g, 3, size, size, 6)
    checker = ((torch.floor((xx + 1) * 4) + torch.floor((yy + 1) * 4)) % 2)[None]
    rgb = rgb * (0.55 + 0.45 * checker)  # a textured object, trackable like a real one
    ring = torch.exp(-(((r - 0.55) * 12) ** 2))[None] * torch.tensor([0.8, 0.7, 0.1])[:, None, None]
    rgb = (rgb + ring).clamp(0, 1)
    return torch.cat([rgb, alpha[None]])


def make_clip(
    frames: int = 16,
    height: int = 64,
    width: int = 96,
    seed: int = 0,
    pan: float = 0.35,
    zoom: float = 0.2,
    rotate_deg: float = 25.0,
    bend: float = 0.12,
    light: float = 0.0,
) -> ProceduralClip:
    """Render the procedural clip and return it with its canonical truth.

    `light` > 0 sweeps a soft band of light across the frame over the clip (the scene's brightness
    changes by up to ±light), the truth's shading residual: a fit must keep it out of the texture.
    """
    g = torch.Generator().manual_seed(seed)
    extent = 1.0 + pan + 0.1  # background texture half-size in frame NDC units
    bg = background_texture(g, round(height * extent), round(width * extent))
    sprite_px = max(16, round(0.45 * min(height, width)))
    sprite = sprite_texture(g, 2 * sprite_px)

    px, py = _pixel_grid(height, width)
    tt = torch.linspace(0, 1, frames)

    bg_uv, fg_uv, fg_alpha = [], [], []
    for t in tt.tolist():
        s = 1.0 - zoom * t
        cx = pan * (2 * t - 1)
        cy = 0.15 * pan * math.sin(math.pi * t)
        bg_uv.append(torch.stack([(s * px + cx) / extent, (s * py + cy) / extent], -1))

        center = (width * (0.5 - 0.22 * (2 * t - 1)), height * (0.5 + 0.1 * math.sin(2 * math.pi * t)))
        theta = math.radians(rotate_deg) * math.sin(math.pi * (t - 0.5))
        uv, a = _place_sprite(sprite, px, py, center, theta, sprite_px, bend, 2 * math.pi * t)
        fg_uv.append(uv)
        fg_alpha.append(a)
    shading = None
    if light:
        band = torch.stack([torch.cos(math.pi * (px - (3 * t - 1.5)) / 2) for t in tt.tolist()])
        shading = (1 + light * band)[..., None].expand(-1, -1, -1, 3)
    return _assemble(bg, torch.stack(bg_uv), sprite, torch.stack(fg_uv), torch.stack(fg_alpha), seed, shading)


def _place_sprite(
    sprite: Tensor,
    px: Tensor,
    py: Tensor,
    center: tuple[float, float],
    theta: float,
    size: int,
    bend: float = 0.0,
    phase: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """The sprite's uv and alpha in one frame; placement is in pixels, so rotation keeps the aspect."""
    height, width = px.shape
    dx = (px + 1) * width / 2 - center[0]
    dy = (py + 1) * height / 2 - center[1]
    c, sn = math.cos(theta), math.sin(theta)
    qx = (c * dx + sn * dy) / size
    qy = (-sn * dx + c * dy) / size
    qy = qy + bend * torch.sin(math.pi * qx + phase)
    uv = torch.stack([qx, qy], -1)
    a = F.grid_sample(sprite[None, 3:4], uv[None], mode="bilinear", padding_mode="zeros", align_corners=False)
    return uv, a[0, 0]


def _assemble(
    bg: Tensor, bg_uv: Tensor, sprite: Tensor, fg_uv: Tensor, fg_alpha: Tensor, seed: int,
    shading: Tensor | None = None,
) -> ProceduralClip:  # fmt: skip
    lit = None if shading is None else shading.half()
    truth = CanonicalVideo(
        layers=[
            Layer(texture=bg, uv=bg_uv.half(), shading=lit, name="background"),
            Layer(
                texture=sprite[:3],
                uv=fg_uv.half(),
                alpha=fg_alpha.half(),
                shading=lit,
                coverage=sprite[3],
                name="sprite",
            ),  # fmt: skip
        ],
        fps=24.0,
    )
    rendered = truth.render().clamp(0, 1)
    masks = (truth.layers[1].alpha.float() > 0.5).float()[:, None]
    clip = Clip(frames=rendered, fps=truth.fps, masks=masks, source=f"procedural(seed={seed})")
    return ProceduralClip(clip=clip, truth=truth)


def _pixel_grid(height: int, width: int) -> tuple[Tensor, Tensor]:
    ys = (torch.arange(height) + 0.5) / height * 2 - 1
    xs = (torch.arange(width) + 0.5) / width * 2 - 1
    py, px = torch.meshgrid(ys, xs, indexing="ij")
    return px, py


def make_long_clip(
    frames: int = 600, height: int = 48, width: int = 64, seed: int = 0, span: float = 6.0, period: int = 180
) -> ProceduralClip:
    """A long pan and a sprite that leaves and comes back, with their canonical truth.

    The camera pans once across a background `span` frames wide, so no single canonical at the
    frames' resolution holds it all. The sprite swings out of the frame on either side and back
    every `period` frames: it is centred at multiples of period/2 and out near the quarter periods.
    """
    g = torch.Generator().manual_seed(seed)
    ex, ey = span, 1.1  # the background's half-extent in frame NDC units
    bg = background_texture(g, round(height * ey), round(width * ex))
    sprite_px = max(16, round(0.45 * min(height, width)))
    sprite = sprite_texture(g, 2 * sprite_px)
    px, py = _pixel_grid(height, width)
    bg_uv, fg_uv, fg_alpha = [], [], []
    for f in range(frames):
        t = f / max(1, frames - 1)
        cx = (ex - 1.05) * (2 * t - 1)
        cy = 0.05 * math.sin(2 * math.pi * f / 150)
        bg_uv.append(torch.stack([(px + cx) / ex, (py + cy) / ey], -1))
        swing = math.sin(2 * math.pi * f / period)
        center = (width * (0.5 + 0.9 * swing), height * (0.5 + 0.1 * math.sin(2 * math.pi * f / 70)))
        uv, a = _place_sprite(sprite, px, py, center, 0.3 * math.sin(2 * math.pi * f / 97), sprite_px)
        fg_uv.append(uv)
        fg_alpha.append(a)
    return _assemble(bg, torch.stack(bg_uv), sprite, torch.stack(fg_uv), torch.stack(fg_alpha), seed)


def paint_edit(texture_hw: tuple[int, int], seed: int = 1) -> Tensor:
    """An RGBA edit in texture space (a solid disc and a bar): what a user might paint."""
    h, w = texture_hw
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    cx, cy = 0.35 + 0.3 * torch.rand(2, generator=g)
    disc = torch.sigmoid((0.16 - ((xx - cx) ** 2 + (yy - cy) ** 2).sqrt()) * min(h, w) * 0.5)
    bar = ((yy - 0.5).abs() < 0.06).float() * ((xx - 0.5).abs() < 0.3).float()
    a = torch.maximum(disc, bar)
    rgb = torch.stack([disc * 0.95 + bar * 0.1, disc * 0.1 + bar * 0.2, disc * 0.1 + bar * 0.95]).clamp(0, 1)
    return torch.cat([rgb, a[None]])


def edited_truth(truth: CanonicalVideo, seed: int = 1) -> CanonicalVideo:
    """The truth with `paint_edit` composited onto every layer's true texture."""
    return truth.with_textures(
        [over(tex, paint_edit(tuple(tex.shape[1:]), seed + k)) for k, tex in enumerate(truth.textures())]
    )


def seen_mask(truth: CanonicalVideo, t: int) -> Tensor:
    """T×H×W bool: pixels whose visible texture point was also visible in frame t."""
    w_t = truth.layer_weights(t)
    seen = torch.zeros(truth.T, truth.H, truth.W)
    for k, la in enumerate(truth.layers):
        vis = splat(w_t[k].reshape(-1, 1), la.uv[t].float().reshape(-1, 2), tuple(la.texture.shape[1:]))
        vis = (vis > 0.5).float()
        vis = -F.max_pool2d(-vis[None], 3, stride=1, padding=1)[0]  # erode: skip the edit's seam
        for s in range(truth.T):
            seen[s] += truth.layer_weights(s)[k] * sample_texture(vis, la.uv[s : s + 1])[0, 0]
    return seen > 0.99


def paint_seen(truth: CanonicalVideo, t: int, seed: int = 1) -> CanonicalVideo:
    """The truth with a `paint_edit` over the texels each layer shows in frame t.

    A frame of a long clip sees a small part of its canonical, which a paint spread over the whole
    texture would mostly miss; this is what a user painting on frame t changes.
    """
    textures = []
    weights = truth.layer_weights(t)
    for k, la in enumerate(truth.layers):
        h, w = la.texture.shape[1:]
        seen = splat(weights[k].reshape(-1, 1), la.uv[t].float().reshape(-1, 2), (h, w))[0] > 0.5
        ys, xs = seen.nonzero(as_tuple=True)
        paint = torch.zeros(4, h, w)
        if len(ys):
            y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
            paint[:, y0:y1, x0:x1] = paint_edit((y1 - y0, x1 - x0), seed + k)
        textures.append(over(la.texture, paint))
    return truth.with_textures(textures)
