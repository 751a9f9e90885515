"""Order-2 spherical-harmonics lighting: weight-free, physically based portrait relighting.

Faces are shaded as DECA and RANA shade them, after Ramamoorthi & Hanrahan 2001 ("An efficient
representation for irradiance environment maps"): a Lambertian surface's irradiance is smooth
enough that nine SH coefficients per colour channel hold it (to within 3/32 of a directional light's
intensity, see `directional_light`). No network weights are involved, so a light can be fitted to a
clip, swapped for a preset or an environment map, and rotated, all in closed form.

Conventions:

- Directions and normals are unit vectors in CAMERA coordinates, OpenCV convention: x right in the
  image, y DOWN, z forward (away from the camera, into the scene). A surface facing the camera has
  normal (0, 0, -1). A light's direction is where the light comes FROM (the unit vector from the
  surface towards the light): a key light from the image's left has negative x.
- A light is a 9×3 tensor of SH radiance coefficients L_lm (one RGB triple per coefficient) in the
  real SH basis of the camera's x, y, z, ordered (l,m) = (0,0), (1,-1), (1,0), (1,1), (2,-2),
  (2,-1), (2,0), (2,1), (2,2) with the standard constants 0.282095, 0.488603, 1.092548, 0.315392
  and 0.546274 (computed exactly, so the basis is exactly orthonormal). Coefficients from DECA or
  other tools use other frames and orders and must be converted first.
- shading(n) = irradiance(n) / π = Σ Â_l L_lm Y_lm(n) / π with Â = (π, 2π/3, π/4): a uniform
  environment of radiance c shades c everywhere, and a Lambertian surface of albedo a shows the
  colour a · shading(n).
- Environment maps are equirectangular and show what the subject sees: the centre column is the
  direction (0, 0, -1) (light arriving at the face from the camera's side), the top row is up (-y),
  and columns right of the centre turn towards the subject's right, which is the image's LEFT (-x).
  Pixel (row i, column j) of an H×W map has polar angle θ = π (i + 0.5) / H from up and azimuth
  φ = 2π ((j + 0.5) / W - 0.5), and direction (-sin θ sin φ, -cos θ, -sin θ cos φ).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from canon_edit.errors import UserError

# OpenCV reads this when it first decodes an EXR; it must be set before that (and before the import
# for builds that read it there). A user's explicit setting wins.
os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
import cv2  # noqa: E402

# Real SH constants (0.282095, 0.488603, 1.092548, 0.315392, 0.546274), exact so the basis is orthonormal.
_C0 = 0.5 / math.sqrt(math.pi)
_C1 = math.sqrt(3.0) * _C0
_C2 = math.sqrt(15.0) * _C0
_C20 = math.sqrt(5.0) * _C0 / 2
_C22 = _C2 / 2
# Â_l / π per coefficient: the Lambertian (clamped-cosine) kernel of each band, divided by π.
_KERNEL = (1.0, 2 / 3, 2 / 3, 2 / 3, 0.25, 0.25, 0.25, 0.25, 0.25)
_ENVMAP_SUFFIXES = (".hdr", ".exr", ".png", ".jpg", ".jpeg")


def sh_basis(dirs: Tensor) -> Tensor:
    """The nine real SH basis functions (order and frame in the module docstring): ...×3 → ...×9."""
    x, y, z = dirs.unbind(-1)
    return torch.stack(
        [
            torch.full_like(x, _C0),
            _C1 * y,
            _C1 * z,
            _C1 * x,
            _C2 * x * y,
            _C2 * y * z,
            _C20 * (3 * z * z - 1),
            _C2 * x * z,
            _C22 * (x * x - y * y),
        ],
        -1,
    )


def _kernel(like: Tensor) -> Tensor:
    return torch.tensor(_KERNEL, dtype=like.dtype, device=like.device)


def shading(normals: Tensor, light: Tensor) -> Tensor:
    """Irradiance / π at unit normals (...×3 → ...×3): the factor a Lambertian albedo is multiplied by.

    Not clamped: order-2 SH dips slightly below zero on the dark side of a strong directional light,
    and whether to clamp is the caller's choice.
    """
    return (sh_basis(normals) * _kernel(light)) @ light


def shading_error(found: Tensor, true: Tensor) -> float:
    """How far light `found` shades from light `true`, up to the albedo–light scale.

    The mean absolute shading difference over 4000 random camera-facing normals, relative to the
    true light's mean shading there, after the best per-channel scale of `found`.
    """
    generator = torch.Generator().manual_seed(0)
    normals = torch.nn.functional.normalize(torch.randn(4000, 3, generator=generator), dim=-1)
    normals = normals[normals[:, 2] < -0.2]
    a, b = shading(normals, true), shading(normals, found)
    scale = (a * b).sum(0) / (b * b).sum(0)
    return float((b * scale - a).abs().mean() / a.mean())


def _uniform(radiance: Tensor) -> Tensor:
    """The light of a uniform environment of RGB `radiance`: L_00 = radiance / Y_00 = 2√π · radiance."""
    light = radiance.new_zeros(9, 3)
    light[0] = radiance / _C0
    return light


def directional_light(
    direction: Sequence[float] | Tensor,
    colour: Sequence[float] | Tensor = (1.0, 1.0, 1.0),
    intensity: float = 1.0,
    ambient: float | Sequence[float] = 0.0,
) -> Tensor:
    """The SH projection of a distant light from `direction`, plus a uniform `ambient` environment.

    The exact shading of the distant light is intensity · colour · max(0, n·d) (its irradiance at
    normal incidence is π · intensity). Order 2 keeps that clamped cosine to within 3/32 ≈ 0.094 of
    the intensity everywhere: the largest errors are +3/32 at the terminator (n·d = 0), +1/16 at the
    normal facing the light (shading 17/16 · intensity there) and at the opposite normal, and a dip to
    -19/480 ≈ -0.04 at n·d = -8/15. Ambient adds its (scalar or RGB) value to the shading everywhere.
    """
    d = direction if isinstance(direction, Tensor) else torch.tensor(direction, dtype=torch.float32)
    d = d / d.norm()
    rgb = torch.as_tensor(colour, dtype=d.dtype, device=d.device)
    light = math.pi * intensity * sh_basis(d)[:, None] * rgb
    return light + _uniform(torch.as_tensor(ambient, dtype=d.dtype, device=d.device).expand(3))


def front_brightness(light: Tensor) -> Tensor:
    """Mean shading (RGB) over the camera-facing hemisphere of normals, n_z < 0, in closed form.

    How bright a relit face looks overall, so a light can be scaled to keep an avatar as bright as
    its albedo. By Funk-Hecke the hemisphere mean keeps band 0 whole, a third of band 1 (the
    clamped-cosine kernel 2/3 times the half-cosine mean 1/2) and nothing of band 2: the mean is
    Y_00 L_00 + (1/3) Y_10(0, 0, -1) L_10.
    """
    return _C0 * light[0] - _C1 / 3 * light[2]


def _preset(
    direction: Sequence[float],
    colour: Sequence[float],
    intensity: float,
    ambient: float | Sequence[float],
) -> Tensor:
    light = directional_light(direction, colour, intensity, ambient)
    return light / front_brightness(light).mean()


# Named lights for `--light`, each scaled so its mean shading over camera-facing normals (averaged
# over RGB) is 1: relit avatars keep their albedo's overall brightness. Each has ambient, so no
# side of a face goes black.
PRESETS: dict[str, Tensor] = {
    # from the image's left, a little above and in front of the face (Rembrandt-like key)
    "key-left": _preset((-1.0, -0.5, -1.0), (1.0, 1.0, 1.0), 1.0, 0.3),
    "key-right": _preset((1.0, -0.5, -1.0), (1.0, 1.0, 1.0), 1.0, 0.3),
    # overhead, tilted a little towards the camera so the face's front still gets some of it
    "top": _preset((0.0, -1.0, -0.3), (1.0, 1.0, 1.0), 1.0, 0.35),
    # from behind and slightly above: bright silhouettes, a front lit only by the ambient fill
    "rim": _preset((0.0, -0.3, 1.0), (1.0, 1.0, 1.0), 2.0, 0.5),
    # a low, warm sun from the image's right over a cool sky fill
    "sunset": _preset((1.0, -0.15, -0.6), (1.0, 0.55, 0.25), 1.2, (0.18, 0.2, 0.28)),
    # a cool, soft sky: mostly ambient, a weak broad light from above
    "overcast": _preset((0.0, -1.0, -0.2), (0.85, 0.92, 1.0), 0.4, (0.75, 0.82, 0.9)),
}


def preset_light(name: str) -> Tensor:
    """A copy of the named preset light (9×3); an unknown name is the user's to fix."""
    if name not in PRESETS:
        raise UserError(f"unknown light preset '{name}'; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name].clone()


def _sphere_directions(n: int, device: torch.device) -> Tensor:
    """`n` near-uniform unit directions (a Fibonacci lattice), float64."""
    i = torch.arange(n, dtype=torch.float64, device=device) + 0.5
    z = 1 - 2 * i / n
    r = (1 - z * z).sqrt()
    phi = math.pi * (3 - math.sqrt(5)) * i
    return torch.stack([r * phi.cos(), r * phi.sin(), z], -1)


def rotate_light(light: Tensor, R: Tensor) -> Tensor:
    """The light turned by rotation `R`: shading(R n, rotate_light(light, R)) == shading(n, light).

    Rotation maps each SH band onto itself, so the rotated radiance f(Rᵀ d) is again order 2 and a
    least-squares fit on 64 sample directions recovers it exactly (up to rounding). Differentiable
    in `R` and `light`.
    """
    dirs = _sphere_directions(64, light.device)
    turned = sh_basis(dirs @ R.to(torch.float64))  # row k is Y(Rᵀ d_k)
    matrix = torch.linalg.lstsq(sh_basis(dirs), turned).solution
    return (matrix @ light.to(torch.float64)).to(light.dtype)


def yaw_rotation(angle: float | Tensor) -> Tensor:
    """Rotation by `angle` radians about the camera's vertical (y) axis, for turning a light round a head.

    Positive angles turn +z towards +x, so a light from the front, (0, 0, -1), moves towards the
    image's left, (-1, 0, 0), at +π/2. float32 for a Python angle, the angle's dtype for a tensor.
    """
    a = angle if isinstance(angle, Tensor) else torch.tensor(float(angle))
    c, s, zero, one = a.cos(), a.sin(), torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([c, zero, s, zero, one, zero, -s, zero, c]).reshape(3, 3)


def _srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def read_envmap(path: str | Path) -> Tensor:
    """An equirectangular environment map as H×W×3 linear RGB radiance (float32).

    Radiance .hdr and OpenEXR .exr files are linear already; 8- and 16-bit .png/.jpg files are
    taken as sRGB and linearised (their exposure is arbitrary: scale the light, e.g. by
    `front_brightness`). Every problem is a one-line UserError naming the file and the fix.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _ENVMAP_SUFFIXES:
        raise UserError(
            f"environment map {path} has the unsupported suffix '{path.suffix}'; "
            "convert it to an equirectangular .hdr, .exr, .png or .jpg"
        )
    if not path.is_file():
        raise UserError(
            f"environment map {path} does not exist; pass an equirectangular .hdr, .exr, .png or .jpg"
        )
    if suffix == ".exr" and not cv2.haveImageWriter(str(path)):  # builds without OpenEXR have no EXR codec
        raise UserError(
            f"cannot read environment map {path}: this OpenCV build has no OpenEXR support; "
            "convert it to Radiance .hdr"
        )
    try:
        image = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR)
    except cv2.error as error:
        detail = str(error).strip().splitlines()[-1]
        raise UserError(
            f"cannot read environment map {path} ({detail}); convert it to Radiance .hdr"
        ) from None
    if image is None:
        raise UserError(
            f"environment map {path} is not a readable {suffix} image (corrupt or another format); "
            "re-export it"
        )
    height, width = image.shape[:2]
    if abs(width / height / 2 - 1) > 0.05:
        raise UserError(
            f"environment map {path} is {width}x{height} (aspect {width / height:.2f}:1), but an "
            "equirectangular (latitude-longitude) map is 2:1; re-export or crop it to 2:1"
        )
    if image.dtype == np.uint8:
        image = _srgb_to_linear(image / 255.0)
    elif image.dtype == np.uint16:
        image = _srgb_to_linear(image / 65535.0)
    bad = int((~np.isfinite(image) | (image < 0)).sum())
    if bad:
        raise UserError(
            f"environment map {path} has {bad} non-finite or negative values; "
            "re-export it with finite, non-negative radiance"
        )
    return torch.from_numpy(np.ascontiguousarray(image[..., ::-1], dtype=np.float32))


def envmap_to_sh(image: Tensor) -> Tensor:
    """Project an H×W×3 equirectangular radiance map (mapping in the module docstring) to a 9×3 light.

    Each pixel is constant radiance over its patch of sphere, and each basis function is integrated
    over that patch exactly (dω = sin θ dθ dφ; the nine functions are products of powers of sin θ,
    cos θ, sin φ and cos φ), so every row gets its true solid angle at any resolution and a constant
    map of radiance c shades c everywhere. Reducing over columns first keeps memory at the map's size.
    """
    height, width = image.shape[:2]
    theta = torch.arange(height + 1, dtype=torch.float64, device=image.device) * (math.pi / height)
    phi = (torch.arange(width + 1, dtype=torch.float64, device=image.device) / width - 0.5) * (2 * math.pi)
    st, ct, sp, cp = theta.sin(), theta.cos(), phi.sin(), phi.cos()

    def over(edges: Tensor) -> Tensor:  # the integral over each pixel from an antiderivative at its edges
        return edges[1:] - edges[:-1]

    # per row: ∫ sin θ · {1, cos θ, sin θ, sin θ cos θ, sin² θ, cos² θ} dθ
    rows = torch.stack(
        [
            -over(ct),
            over(st**2) / 2,
            over(theta) / 2 - over((2 * theta).sin()) / 4,
            over(st**3) / 3,
            over(ct**3) / 3 - over(ct),
            -over(ct**3) / 3,
        ],
        -1,
    )
    # per column: ∫ {1, sin φ, cos φ, sin φ cos φ, sin² φ, cos² φ} dφ
    half, ripple = over(phi) / 2, over((2 * phi).sin()) / 4
    cols = torch.stack([over(phi), -over(cp), over(sp), over(sp**2) / 2, half - ripple, half + ripple], -1)
    m = torch.einsum("hi,hjc->ijc", rows, torch.einsum("hwc,wj->hjc", image.to(torch.float64), cols))
    # x = -sin θ sin φ, y = -cos θ, z = -sin θ cos φ
    light = torch.stack(
        [
            _C0 * m[0, 0],
            -_C1 * m[1, 0],
            -_C1 * m[2, 2],
            -_C1 * m[2, 1],
            _C2 * m[3, 1],
            _C2 * m[3, 2],
            _C20 * (3 * m[4, 5] - m[0, 0]),
            _C2 * m[4, 3],
            _C22 * (m[4, 4] - m[5, 0]),
        ]
    )
    return light.to(image.dtype)


def _albedo(colours: Tensor, shade: Tensor, weights: Tensor, point_ids: Tensor, n_points: int) -> Tensor:
    """Per-point weighted least-squares albedo (n_points×3) for fixed shading; 0 where never observed."""
    num = colours.new_zeros(n_points, 3).index_add_(0, point_ids, weights[:, None] * colours * shade)
    den = colours.new_zeros(n_points, 3).index_add_(0, point_ids, weights[:, None] * shade * shade)
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), 0.0)


def _ratio_matrix(
    colours: Tensor, basis: Tensor, weights: Tensor, point_ids: Tensor, n_points: int
) -> Tensor:
    """M (3×9×9) with Lᵀ M L = Σ over pairs k, k' of observations of one point of w w' (c_k s_k' - c_k' s_k)².

    That residual vanishes under the true light whatever the albedo and is linear in the light, so
    on noise-free data the light is M's null vector: one solve. Without forming the pairs,
    M = Σ_p (Σ w c²)(Σ w b bᵀ) - (Σ w c b)(Σ w c b)ᵀ per channel, sums over the point's observations.
    """
    wc = weights[:, None] * colours
    cross = colours.new_zeros(n_points, 3, 9).index_add_(0, point_ids, wc[:, :, None] * basis[:, None])
    squares = colours.new_zeros(n_points, 3).index_add_(0, point_ids, wc * colours)
    own = torch.einsum("nc,nk,nj->ckj", weights[:, None] * squares[point_ids], basis, basis)
    return own - torch.einsum("pck,pcj->ckj", cross, cross)


def fit_light(
    colours: Tensor,
    normals: Tensor,
    point_ids: Tensor,
    n_points: int,
    weights: Tensor | None = None,
    iters: int = 20,
    ridge: float = 1e-6,
) -> tuple[Tensor, Tensor]:
    """Fit one light (9×3) and per-point albedos (n_points×3) to N colour observations (N×3).

    The model is colour_k = albedo[point_ids[k]] · shading(normals[k], light), weighted by
    `weights` (N, default 1); each channel is its own problem. What identifies the light is the same
    surface point seen under different normals (a head turning under a fixed light).

    The cost is the weighted squared residual with each point's albedo at its closed-form optimum
    for the light (variable projection), plus `ridge` (relative to the data's scale) times the
    squared band-1 and band-2 coefficients, which pulls a barely determined light towards flat. It
    starts from the flat light or the pairwise-ratio solution (`_ratio_matrix`), whichever costs
    less: the first is right when nothing is identifiable, the second is exact on noise-free data
    and starts noisy data near the optimum, away from the spurious minima where some point's
    shading goes to zero. Then `iters` Gauss-Newton steps on the light with the albedos eliminated
    exactly (a Schur complement), damped Levenberg-Marquardt style and kept only where they lower
    the cost. (Plain alternating least squares converges linearly: after 20 iterations on a
    well-posed problem it left 4% error in the shading and 12% in the albedo; this reaches rounding
    level in about 5.) `ridge` must be positive: with the gauge term it keeps every solve regular.

    Albedo × light is unchanged by scaling a channel of the light by s and its albedos by 1/s. The
    fit fixes s so that the weighted mean shading over the observed normals is 1 in every channel:
    the light carries only relative shading, the albedo the average colour.

    When every point is only ever seen under one normal the light is not identifiable: every light
    fits equally well (albedo = colour / shading), so the ridge decides and the fit returns the flat
    light (shading 1) with each point's mean colour as its albedo; nothing is relit rather than
    something made up. Points with no observations get albedo 0.
    """
    dtype = colours.dtype
    colours = colours.to(torch.float64)
    basis = sh_basis(normals.to(torch.float64)) * _kernel(colours)  # shading = basis @ light
    w = colours.new_ones(len(colours)) if weights is None else weights.to(torch.float64)
    mean_basis = (w[:, None] * basis).sum(0) / w.sum()  # mean_basis @ light = mean shading
    # the Gram matrix's mean diagonal at the flat light: the data's scale, per channel
    scale = ((w * (basis * basis).sum(1))[:, None] * colours * colours).sum(0).clamp_min(1e-30) / 9
    penalty = ridge * scale[:, None, None] * torch.diag(basis.new_tensor([0.0] + [1.0] * 8))
    # the ridge plus a gauge term that fixes the scale direction, which the normalisation removes
    regulariser = penalty + scale[:, None, None] * torch.outer(mean_basis, mean_basis)

    def evaluate(light: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        light = light / ((w[:, None] * (basis @ light)).sum(0) / w.sum())
        shade = basis @ light
        albedo = _albedo(colours, shade, w, point_ids, n_points)
        resid = colours - albedo[point_ids] * shade
        ridge_cost = torch.einsum("kc,ckj,jc->c", light, penalty, light)
        return light, shade, albedo, resid, (w[:, None] * resid * resid).sum(0) + ridge_cost

    def better_of(trial: tuple[Tensor, ...], current: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        better = trial[-1] < current[-1]  # per channel
        return better, *(torch.where(better, t, c) for t, c in zip(trial, current, strict=True))

    ratio = _ratio_matrix(colours, basis, w, point_ids, n_points) + regulariser
    ratio_light = torch.linalg.solve(ratio, mean_basis.expand(3, 9)).T
    _, light, shade, albedo, resid, cost = better_of(
        evaluate(ratio_light), evaluate(_uniform(mean_basis.new_ones(3)))
    )
    damping = torch.full_like(cost, 1e-3)
    for _ in range(iters):
        design = (basis[:, None, :] * albedo[point_ids][:, :, None]) * w[:, None, None]  # w · ∂(a s)/∂L
        gram = torch.einsum("nck,nj->ckj", design * albedo[point_ids][:, :, None], basis)
        # Schur complement of the albedos: E_p = Σ w s a b, D_p = Σ w s² for each point p
        coupling = colours.new_zeros(n_points, 3, 9).index_add_(0, point_ids, shade[:, :, None] * design)
        curvature = colours.new_zeros(n_points, 3).index_add_(0, point_ids, w[:, None] * shade * shade)
        inverse = torch.where(curvature > 0, 1 / curvature.clamp_min(torch.finfo(curvature.dtype).tiny), 0.0)
        hess = gram - torch.einsum("pck,pcj->ckj", coupling * inverse[:, :, None], coupling) + regulariser
        hess = hess + torch.diag_embed(damping[:, None] * hess.diagonal(dim1=1, dim2=2))
        grad = torch.einsum("nck,nc->ck", design, resid) - torch.einsum("ckj,jc->ck", penalty, light)
        trial = evaluate(light + torch.linalg.solve(hess, grad).T)
        better, light, shade, albedo, resid, cost = better_of(trial, (light, shade, albedo, resid, cost))
        damping = torch.where(better, damping / 3, damping * 4)
    return light.to(dtype), albedo.to(dtype)
