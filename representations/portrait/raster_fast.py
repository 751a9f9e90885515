"""The fast CPU rasterizer: the reference's image and gradients (raster.py) at a fraction of its cost.

Paths, all tested against the reference (bench/raster_speed.py measures each):

- ``scatter`` (default when numba is installed): Gaussians composited one by one in global depth
  order, which is every pixel's front-to-back order, each over only the pixels of its footprint
  ellipse; a pixel stops once its transmittance is below 1e-4; the backward walks the same order
  back to front with per-pixel transmittance and running sums. Projection and both passes are numba
  kernels with hand-written backwards (raster_kernels.py); no pair list is ever built or sorted.
- ``tiles``: 3DGS's layout, 16×16 tiles with depth-ordered lists and per-pixel loops; measured
  slower than ``scatter`` on one thread (each pixel tests every Gaussian of its tile).
- ``torch`` (the fallback without numba): the reference's pair list over the opacity-aware
  footprints, float64 only for the running sum.

The footprint is what the reference composites anyway: α = o·exp(power) reaches 1/255 only inside
an ellipse of radius √(2 ln(255 o)) σ, so each Gaussian's box is the reference's 3σ box cut to that
ellipse's bounding box, and the kernels still apply the reference's α ≥ 1/255 test. Only early
termination changes the result, by less than 1e-4 times the largest colour.
"""

from __future__ import annotations

import importlib.util
from typing import Literal

import torch
from torch import Tensor

from .camera import Camera
from .raster_reference import _footprint_radius, project, sorted_pairs

TILE = 16
T_MIN = 1e-4  # early termination: transmittance below this ends a pixel
Kernel = Literal["auto", "scatter", "tiles", "torch"]


def numba_available() -> bool:
    return importlib.util.find_spec("numba") is not None


@torch.no_grad()
def pixel_boxes(
    means2d: Tensor,
    conics: Tensor,
    cov2d: Tensor,
    depths: Tensor,
    opacities: Tensor,
    width: int,
    height: int,
    near: float,
    max_radius: int,
    opacity_aware: bool = True,
) -> tuple[Tensor, Tensor]:
    """Pixel boxes N×4 (x0, x1, y0, y1; half-open, int64) and a valid mask (N,): where pairs can count.

    The reference's 3σ box (largest eigenvalue, clamped to `max_radius`), cut to the bounding box of the
    ellipse where α can reach 1/255 when ``opacity_aware``; the ellipse comes from the conic the
    compositing uses, in float64 and widened by 1e-3 px, so no pixel the reference keeps is lost.
    """
    radius = _footprint_radius(cov2d).clamp(max=max_radius)
    mx, my = means2d[:, 0], means2d[:, 1]
    x0 = (mx - radius).floor().clamp(0, width)
    x1 = (mx + radius).ceil().clamp(0, width)
    y0 = (my - radius).floor().clamp(0, height)
    y1 = (my + radius).ceil().clamp(0, height)
    valid = (depths > near) & torch.isfinite(means2d).all(-1)
    if opacity_aware:
        q = conics.double()
        det = (q[:, 0] * q[:, 2] - q[:, 1] ** 2).clamp(min=1e-300)
        r2 = 2 * torch.log(255 * opacities.double().clamp(min=1e-30))
        ex = (r2.clamp(min=0) * q[:, 2] / det).sqrt() + 1e-3
        ey = (r2.clamp(min=0) * q[:, 0] / det).sqrt() + 1e-3
        # pixel px counts only if its centre px + 0.5 lies within [m - e, m + e]
        mxd, myd = mx.double(), my.double()
        x0 = torch.maximum(x0, (mxd - ex - 0.5).ceil().clamp(0, width).to(x0.dtype))
        x1 = torch.minimum(x1, (mxd + ex - 0.5).floor().add(1).clamp(0, width).to(x1.dtype))
        y0 = torch.maximum(y0, (myd - ey - 0.5).ceil().clamp(0, height).to(y0.dtype))
        y1 = torch.minimum(y1, (myd + ey - 0.5).floor().add(1).clamp(0, height).to(y1.dtype))
        valid &= r2 >= 0
    valid &= (x1 > x0) & (y1 > y0)
    boxes = torch.stack([x0, x1, y0, y1], -1).nan_to_num(0).long()
    return boxes, valid


class _NumbaProject(torch.autograd.Function):
    """`project` for a fixed camera in one numba pass, with a hand-written backward (raster_kernels.py)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, means: Tensor, quats: Tensor, scales: Tensor, viewmat: Tensor, K: Tensor, eps2d: float
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        from . import raster_kernels as kern

        arrays = [x.detach().double().contiguous().numpy() for x in (means, quats, scales, viewmat, K)]
        ctx.state, ctx.eps2d, ctx.dtypes = arrays, eps2d, (means.dtype, quats.dtype, scales.dtype)
        outputs = [torch.from_numpy(x).to(means.dtype) for x in kern.project_forward(*arrays, eps2d)]
        ctx.mark_non_differentiable(outputs[2], outputs[3])
        return tuple(outputs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_means2d: Tensor, g_conics: Tensor, _g_depths: Tensor, _g_cov2d: Tensor):  # type: ignore[override]
        from . import raster_kernels as kern

        grads = kern.project_backward(
            *ctx.state,
            ctx.eps2d,
            g_means2d.double().contiguous().numpy(),
            g_conics.double().contiguous().numpy(),
        )
        out = [torch.from_numpy(g).to(dt) for g, dt in zip(grads, ctx.dtypes, strict=True)]
        return (*out, None, None, None)


class _NumbaRaster(torch.autograd.Function):
    """Compositing of projected Gaussians by a numba kernel, forward and hand-written backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        means2d: Tensor,
        conics: Tensor,
        opacities: Tensor,
        colors: Tensor,
        boxes: Tensor,
        order: Tensor,
        width: int,
        height: int,
        t_min: float,
        tiles: bool,
    ) -> tuple[Tensor, Tensor]:
        from . import raster_kernels as kern

        box, order_np = boxes.numpy(), order.numpy()
        arrays = [x.detach().double().contiguous().numpy() for x in (means2d, conics, opacities)]
        cols = colors.detach().contiguous().numpy()  # float32 stays float32: half the image traffic
        if tiles:
            tiles_x, tiles_y = -(-width // TILE), -(-height // TILE)
            lists = kern.bin_tiles(
                order_np, box[:, 0], box[:, 1], box[:, 2], box[:, 3], TILE, tiles_x, tiles_x * tiles_y
            )
            geometry = (*lists, box, *arrays, cols, width, height, TILE, tiles_x)
            image, trans, end = kern.forward(*geometry, t_min)
        else:
            geometry = (order_np, box, *arrays, cols, width, height)
            image, trans, end = kern.forward_scatter(*geometry, t_min)
        ctx.state = (geometry, trans, end, tiles)
        ctx.dtypes = (means2d.dtype, conics.dtype, opacities.dtype, colors.dtype)
        image_t = torch.from_numpy(image).to(colors.dtype).reshape(height, width, -1)
        alpha_t = torch.from_numpy(1 - trans).to(colors.dtype).reshape(height, width, 1)
        return image_t, alpha_t

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_image: Tensor, grad_alpha: Tensor):  # type: ignore[override]
        from . import raster_kernels as kern

        geometry, trans, end, tiles = ctx.state
        g_img = grad_image.detach().to(ctx.dtypes[3]).reshape(len(trans), -1).contiguous().numpy()
        g_alpha = grad_alpha.detach().double().reshape(-1).contiguous().numpy()
        run = kern.backward if tiles else kern.backward_scatter
        grads = run(*geometry, trans, end, g_img, g_alpha)
        out = [torch.from_numpy(g).to(dt) for g, dt in zip(grads, ctx.dtypes, strict=True)]
        return (*out, None, None, None, None, None, None)


def _composite_torch(
    means2d: Tensor,
    conics: Tensor,
    depths: Tensor,
    opacities: Tensor,
    colors: Tensor,
    boxes: Tensor,
    valid: Tensor,
    width: int,
    height: int,
    few_float64: bool,
) -> tuple[Tensor, Tensor]:
    """The reference's pair list and segmented log-transmittance sum, over the given boxes."""
    C, dev, dtype = colors.shape[-1], means2d.device, means2d.dtype
    with torch.no_grad():
        gid = valid.nonzero().squeeze(1)
        x0, x1, y0, y1 = boxes[gid].unbind(-1)
        w = x1 - x0
        count = w * (y1 - y0)
        owner = torch.repeat_interleave(gid, count)
        local = torch.arange(int(count.sum()), device=dev) - torch.repeat_interleave(
            torch.cumsum(count, 0) - count, count
        )
        ww = torch.repeat_interleave(w, count)
        px = torch.repeat_interleave(x0, count) + local % ww
        py = torch.repeat_interleave(y0, count) + local // ww
    alpha, owner, pix, start = sorted_pairs(means2d, conics, depths, opacities, owner, px, py, width)
    if few_float64:
        # only the running sum spans all pixels and needs float64; logs and exps stay in float32
        log_keep = torch.log1p(-alpha)
        running = torch.cumsum(log_keep.double(), 0)
        before = (running - running[start]).to(dtype) - log_keep + log_keep[start]
        weight = torch.exp(before) * alpha
        total = torch.zeros(width * height, dtype=dtype, device=dev).index_add(0, pix, log_keep)
        transmittance = torch.exp(total)[:, None]
    else:
        log_keep = torch.log1p(-alpha.double())
        running = torch.cumsum(log_keep, 0) - log_keep
        before = running - running[start]
        weight = torch.exp(before).to(dtype) * alpha
        total = torch.zeros(width * height, dtype=torch.float64, device=dev).index_add(0, pix, log_keep)
        transmittance = torch.exp(total).to(dtype)[:, None]
    image = torch.zeros(width * height, C, dtype=dtype, device=dev).index_add(
        0, pix, weight[:, None] * colors[owner]
    )
    return image.reshape(height, width, C), (1 - transmittance).reshape(height, width, 1)


def rasterize_fast(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    camera: Camera,
    background: Tensor | None = None,
    near: float = 0.01,
    eps2d: float = 0.3,
    max_radius: int = 64,
    kernel: Kernel = "auto",
    opacity_footprint: bool = True,
    few_float64: bool = True,
    t_min: float = T_MIN,
) -> tuple[Tensor, Tensor]:
    """`rasterize_torch`'s result, fast: ``kernel="auto"`` takes tiles when numba is installed.

    The switches exist to measure each lever (bench/raster_speed.py): ``opacity_footprint`` (both
    kernels), ``few_float64`` (torch), ``t_min`` (tiles; 0 turns early termination off and makes the
    result the reference's up to rounding).
    """
    viewmat, K, width, height = camera.viewmat, camera.K, camera.width, camera.height
    if kernel == "auto":
        kernel = "scatter" if numba_available() else "torch"
    if kernel != "torch" and not (viewmat.requires_grad or K.requires_grad):
        means2d, conics, depths, cov2d = _NumbaProject.apply(means, quats, scales, viewmat, K, eps2d)
    else:
        means2d, conics, depths, cov2d = project(means, quats, scales, viewmat, K, eps2d)
    boxes, valid = pixel_boxes(
        means2d, conics, cov2d, depths, opacities, width, height, near, max_radius, opacity_footprint
    )
    if kernel != "torch":
        order = torch.argsort(depths.detach())  # the reference's call, so equal depths tie-break alike
        order = order[valid[order]]
        image, alpha = _NumbaRaster.apply(
            means2d, conics, opacities, colors, boxes, order, width, height, t_min, kernel == "tiles"
        )
    else:
        image, alpha = _composite_torch(
            means2d, conics, depths, opacities, colors, boxes, valid, width, height, few_float64
        )
    if background is not None:
        image = image + (1 - alpha) * background
    return image, alpha
