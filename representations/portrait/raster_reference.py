"""The reference Gaussian rasterizer: plain differentiable tensor ops that the fast paths are tested against.

It follows 3DGS exactly where it matters for agreement with gsplat: EWA projection
(the Jacobian of the perspective map at each centre), a 0.3 px² low-pass added to every 2D
covariance, a 3σ footprint, alpha capped at 0.99 and dropped below 1/255, front-to-back
compositing in depth order. It is tile-free: it lists every (Gaussian, pixel) pair inside each
footprint, sorts the pairs by pixel then depth and composites them with a segmented running sum of
log(1 - α) per pixel, all in differentiable tensor ops. That is fast enough for test-sized images (64²-256²)
on a CPU and it is what the fast path is tested against; gsplat is imported only when the tensors
live on CUDA, so CPU-only torch never loads it.

Camera: OpenCV convention (x right, y down, z forward); ``viewmat`` maps world to camera, ``K`` is
the 3×3 intrinsic matrix in pixels with pixel centres at integer + 0.5.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .camera import Camera
from .gaussians import quat_to_matrix

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99


def project(
    means: Tensor, quats: Tensor, scales: Tensor, viewmat: Tensor, K: Tensor, eps2d: float = 0.3
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EWA-project N Gaussians: 2D centres N×2, conics N×3 (a, b, c of Σ⁻¹), depths (N,), 2D covs N×2×2."""
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    cam = means @ R.T + t
    z = cam[:, 2].clamp(min=1e-6)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    # clamp the tangent as 3DGS does, so Gaussians far outside the view do not blow up the Jacobian
    lim_x, lim_y = 1.3 * cx / fx, 1.3 * cy / fy
    tx = (cam[:, 0] / z).clamp(-lim_x, lim_x) * z
    ty = (cam[:, 1] / z).clamp(-lim_y, lim_y) * z
    zero = torch.zeros_like(z)
    J = torch.stack([fx / z, zero, -fx * tx / z**2, zero, fy / z, -fy * ty / z**2], -1).reshape(-1, 2, 3)
    M = quat_to_matrix(quats) * scales[:, None, :]
    cov_cam = R @ (M @ M.transpose(1, 2)) @ R.T
    cov2d = J @ cov_cam @ J.transpose(1, 2) + eps2d * torch.eye(2, dtype=means.dtype, device=means.device)
    det = (cov2d[:, 0, 0] * cov2d[:, 1, 1] - cov2d[:, 0, 1] ** 2).clamp(min=1e-12)
    conics = torch.stack([cov2d[:, 1, 1] / det, -cov2d[:, 0, 1] / det, cov2d[:, 0, 0] / det], -1)
    means2d = torch.stack([fx * cam[:, 0] / z + cx, fy * cam[:, 1] / z + cy], -1)
    return means2d, conics, cam[:, 2], cov2d


def _footprint_radius(cov2d: Tensor) -> Tensor:
    """3σ radius in pixels of each 2D covariance (largest eigenvalue)."""
    a, b, c = cov2d[:, 0, 0], cov2d[:, 0, 1], cov2d[:, 1, 1]
    mid = 0.5 * (a + c)
    lam = mid + ((mid * mid - (a * c - b * b)).clamp(min=0.1)).sqrt()
    return (3 * lam.sqrt()).ceil()


def sorted_pairs(
    means2d: Tensor, conics: Tensor, depths: Tensor, opacities: Tensor, owner: Tensor, px: Tensor,
    py: Tensor, width: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """The candidate pairs (Gaussian `owner`, pixel `px`, `py`) that pass 3DGS's α ≥ 1/255 test, sorted
    by pixel and then depth: their α (differentiable), owners, flat pixel indices, and each pair's
    index of the first pair of its pixel."""
    dev, dtype = means2d.device, means2d.dtype
    d = torch.stack([px.to(dtype) + 0.5, py.to(dtype) + 0.5], -1) - means2d[owner]
    a, b, c = conics[owner].unbind(-1)
    power = -0.5 * (a * d[:, 0] ** 2 + c * d[:, 1] ** 2) - b * d[:, 0] * d[:, 1]
    alpha = (opacities[owner] * torch.exp(power)).clamp(max=ALPHA_MAX)
    with torch.no_grad():
        keep = (alpha >= ALPHA_MIN) & (power <= 0)
        pix = (py * width + px)[keep]
        depth_rank = torch.empty_like(depths, dtype=torch.long)
        depth_rank[torch.argsort(depths)] = torch.arange(len(depths), device=dev)
        order = torch.argsort(pix * len(depths) + depth_rank[owner[keep]])
        pix = pix[order]
        counts = torch.bincount(pix)
        start = torch.cumsum(counts, 0) - counts
    alpha = alpha[keep][order]
    owner = owner[keep][order]
    return alpha, owner, pix, start[pix]


def rasterize_torch(
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
) -> tuple[Tensor, Tensor]:
    """The PyTorch reference: H×W×C colours and H×W×1 alpha (see `rasterize`)."""
    viewmat, K, width, height = camera.viewmat, camera.K, camera.width, camera.height
    C = colors.shape[-1]
    dev, dtype = means.device, means.dtype
    means2d, conics, depths, cov2d = project(means, quats, scales, viewmat, K, eps2d)
    with torch.no_grad():
        radius = _footprint_radius(cov2d).clamp(max=max_radius)
        x0 = (means2d[:, 0] - radius).floor().clamp(0, width)
        x1 = (means2d[:, 0] + radius).ceil().clamp(0, width)
        y0 = (means2d[:, 1] - radius).floor().clamp(0, height)
        y1 = (means2d[:, 1] + radius).ceil().clamp(0, height)
        valid = (depths > near) & (x1 > x0) & (y1 > y0) & torch.isfinite(means2d).all(-1)
        gid = valid.nonzero().squeeze(1)
        w = (x1 - x0)[gid].long()
        count = w * (y1 - y0)[gid].long()
        owner = torch.repeat_interleave(gid, count)
        local = torch.arange(int(count.sum()), device=dev) - torch.repeat_interleave(
            torch.cumsum(count, 0) - count, count
        )
        ww = torch.repeat_interleave(w, count)
        px = x0[owner].long() + local % ww
        py = y0[owner].long() + local // ww
    alpha, owner, pix, start = sorted_pairs(means2d, conics, depths, opacities, owner, px, py, width)
    # transmittance before each pair: exp of the running sum of log(1 - α) within its pixel's run.
    # One pass over the pairs (a dense pixels × max-depth table costs what the busiest pixel costs);
    # float64, because the running sum spans every pixel and the per-pixel parts are differences.
    log_keep = torch.log1p(-alpha.double())
    running = torch.cumsum(log_keep, 0) - log_keep  # exclusive prefix sum over all pairs
    before = running - running[start]
    weight = torch.exp(before).to(dtype) * alpha
    image = torch.zeros(width * height, C, dtype=dtype, device=dev).index_add(
        0, pix, weight[:, None] * colors[owner]
    )
    total = torch.zeros(width * height, dtype=torch.float64, device=dev).index_add(0, pix, log_keep)
    transmittance = torch.exp(total).to(dtype)[:, None]
    alpha_img = 1 - transmittance
    if background is not None:
        image = image + (1 - alpha_img) * background
    return image.reshape(height, width, C), alpha_img.reshape(height, width, 1)
