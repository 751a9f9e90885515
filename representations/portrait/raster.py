"""Rasterize 3D Gaussians: one API over gsplat on CUDA, the fast CPU path (raster_fast.py) and the
plain reference (raster_reference.py), which the others are tested against.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .camera import Camera
from .raster_fast import rasterize_fast
from .raster_reference import rasterize_torch


def _rasterize_gsplat(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    camera: Camera,
    background: Tensor | None,
    near: float,
    eps2d: float,
) -> tuple[Tensor, Tensor]:
    from gsplat import rasterization

    image, alpha, _ = rasterization(
        means, quats, scales, opacities, colors, camera.viewmat[None], camera.K[None], camera.width,
        camera.height,
        near_plane=near, eps2d=eps2d, backgrounds=None if background is None else background[None],
    )  # fmt: skip
    return image[0], alpha[0]


def gsplat_available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    camera: Camera,
    background: Tensor | None = None,
    near: float = 0.01,
    eps2d: float = 0.3,
    backend: Literal["auto", "torch", "fast", "gsplat"] = "auto",
) -> tuple[Tensor, Tensor]:
    """Render N Gaussians into an H×W×C image and H×W×1 alpha (gsplat's layout and semantics).

    means N×3 world, quats N×4 (w, x, y, z; any norm), scales N×3 (linear), opacities (N,) in [0, 1],
    colors N×C (any C: RGB or neural features), `camera` (camera.py), background (C,).
    ``backend="auto"`` uses gsplat for CUDA tensors when it is installed, the fast path (raster_fast.py)
    on the CPU and the reference elsewhere; ``"torch"`` is the reference, ``"fast"`` the fast path.
    """
    use_gsplat = backend == "gsplat" or (backend == "auto" and means.is_cuda and gsplat_available())
    if use_gsplat:
        if not means.is_cuda:
            raise ValueError("the gsplat backend needs CUDA tensors; use backend='torch' on the CPU")
        return _rasterize_gsplat(means, quats, scales, opacities, colors, camera, background, near, eps2d)
    if backend == "fast" or (backend == "auto" and means.device.type == "cpu"):
        return rasterize_fast(means, quats, scales, opacities, colors, camera, background, near, eps2d)
    return rasterize_torch(means, quats, scales, opacities, colors, camera, background, near, eps2d)


def splat_sums(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, camera: Camera, images: Tensor
) -> Tensor:
    """N×C: per Gaussian, Σ_pixels w_i(p)·images_c(p) (`images` C×H×W), the transpose of a render.

    w_i(p) is its blending weight (opacity × transmittance), so a Gaussian hidden behind others sums
    to ~0. One backward pass of a C-channel render of constant colours gives all N×C sums: with ones,
    how much of the frame a Gaussian makes; with a source frame, the colour it was seen with.
    """
    probe = torch.ones(len(means), images.shape[0], requires_grad=True)
    with torch.enable_grad():
        detached = (x.detach() for x in (means, quats, scales, opacities))
        image, _ = rasterize(*detached, probe, camera)
        (image * images.permute(1, 2, 0)).sum().backward()
    return probe.grad.detach()
