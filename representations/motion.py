"""Global motion from optical flow: per-frame affine maps into a reference frame.

Chaining robust per-pair affine fits gives every layer a good first guess of where each frame
lands in its canonical space, so the deformation field only learns a small residual; a field
that had to discover a 30% camera pan from zero would smear the canonical image instead.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def pixel_grid_ndc(height: int, width: int) -> Tensor:
    """H×W×2 pixel centres in normalised device coordinates (x, y in [-1, 1])."""
    ys = (torch.arange(height) + 0.5) / height * 2 - 1
    xs = (torch.arange(width) + 0.5) / width * 2 - 1
    py, px = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([px, py], -1)


def fit_affine(src: Tensor, dst: Tensor, scale: Tensor, iterations: int = 4) -> Tensor:
    """Robust 2×3 affine with dst ≈ A·[src, 1]: IRLS with Cauchy weights on residuals in pixels."""
    X = torch.cat([src, torch.ones_like(src[:, :1])], 1)
    w = torch.ones(len(src))
    A = torch.eye(2, 3)
    for _ in range(iterations):
        # normal equations in float64: deterministic, unlike LAPACK's threaded least squares
        Xw = (X * w[:, None]).double()
        sol = torch.linalg.solve(Xw.T @ X.double(), Xw.T @ dst.double()).float()
        A = sol.T
        r = ((X @ sol - dst) * scale).norm(dim=1)
        c = 1.0 + float(r.median())
        w = 1.0 / (1.0 + (r / c) ** 2)
    return A


def _pair_affine(
    grid: Tensor,
    flow: Tensor,
    ok: Tensor,
    weight: Tensor,
    scale: Tensor,
    min_points: int,
    max_points: int,
    generator: torch.Generator,
) -> Tensor:
    sel = (ok & (weight > 0.5)).reshape(-1)
    idx = sel.nonzero().squeeze(1)
    if len(idx) < min_points:
        return torch.eye(2, 3)
    if len(idx) > max_points:
        idx = idx[torch.randperm(len(idx), generator=generator)[:max_points]]
    src = grid.reshape(-1, 2)[idx]
    dst = src + flow.permute(1, 2, 0).reshape(-1, 2)[idx] / scale
    return fit_affine(src, dst, scale)


def _gray(frames: Tensor) -> Tensor:
    """T×3×H×W → T×H×W luma."""
    return (frames.float() * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1)


def _to3(A: Tensor) -> Tensor:
    return torch.cat([A, torch.tensor([[0.0, 0.0, 1.0]])])


def refine_pair_photometric(
    src: Tensor, dst: Tensor, mask: Tensor, init: Tensor, iterations: int = 40, max_side: int = 256
) -> Tensor:
    """Affine A (NDC) with dst(A·p) ≈ src(p) on src's masked pixels, refined from `init`.

    Dense flow is smoothed across edges and suffers the aperture problem on weakly textured
    objects (it under-estimates rotation); one affine fitted photometrically to all the layer's
    pixels does not. Coarse-to-fine (blurred, then sharp) Lucas-Kanade by Adam on the six
    parameters; deterministic, unlike OpenCV's ECC. src/dst: 1×H×W luma, mask: H×W.
    """
    h, w = src.shape[1:]
    f = min(1.0, max_side / max(h, w))
    size = (max(8, round(h * f)), max(8, round(w * f)))
    src_s = F.interpolate(src[None], size=size, mode="area")
    dst_s = F.interpolate(dst[None], size=size, mode="area")
    m = F.interpolate(mask[None, None].float(), size=size, mode="area")[0, 0] > 0.99
    grid = pixel_grid_ndc(*size)[m]
    if len(grid) < 16:
        return init
    A = init.clone().requires_grad_(True)
    opt = torch.optim.Adam([A], lr=2e-3)
    for sigma in (2.0, 1.0, 0.0):
        s_img, d_img = (src_s, dst_s) if sigma == 0 else (_blur(src_s, sigma), _blur(dst_s, sigma))
        target = s_img[0, 0][m]
        for _ in range(iterations):
            q = apply_affine(A, grid)
            warped = F.grid_sample(
                d_img, q[None, None], mode="bilinear", padding_mode="border", align_corners=False
            )
            loss = (warped[0, 0, 0] - target).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return A.detach()


def _blur(image: Tensor, sigma: float) -> Tensor:
    import kornia

    k = int(2 * round(2 * sigma) + 1)
    return kornia.filters.gaussian_blur2d(image, (k, k), (sigma, sigma))


def chain_affines(
    forward: Tensor,
    backward: Tensor,
    forward_ok: Tensor,
    backward_ok: Tensor,
    weights: Tensor,
    reference: int,
    frames: Tensor | None = None,
    min_points: int = 30,
    max_points: int = 20000,
    erode: int = 2,
    seed: int = 0,
) -> Tensor:
    """T×2×3 maps from each frame's NDC into the reference frame's NDC for one layer.

    forward/backward: (T-1)×2×H×W flow in pixels; *_ok: (T-1)×H×W; weights: T×H×W (how much each
    pixel belongs to the layer). Pairs with too few layer pixels fall back to identity. With
    `frames` (T×3×H×W), each pair's flow estimate is refined photometrically before chaining.
    """
    T = weights.shape[0]
    H, W = weights.shape[1:]
    # flow is smoothed across object boundaries: trust only the layer's interior
    weights = -F.max_pool2d(-weights[:, None].float(), 2 * erode + 1, stride=1, padding=erode)[:, 0]
    grid = pixel_grid_ndc(H, W)
    scale = torch.tensor([W / 2, H / 2])
    g = torch.Generator().manual_seed(seed)
    gray = None if frames is None else _gray(frames)
    maps = [torch.eye(3) for _ in range(T)]

    def pair(src: int, dst: int, flow: Tensor, ok: Tensor) -> Tensor:
        M = _pair_affine(grid, flow, ok, weights[src], scale, min_points, max_points, g)
        mask = weights[src] > 0.5
        if gray is None or int(mask.sum()) < min_points:
            return M
        return refine_pair_photometric(gray[src : src + 1], gray[dst : dst + 1], mask, M)

    area = (weights > 0.5).flatten(1).sum(1)
    seen = (area >= min_points).tolist()

    def forward_link(t: int) -> None:  # frame t → t+1 (forward flow of frame t)
        maps[t] = maps[t + 1] @ _to3(pair(t, t + 1, forward[t], forward_ok[t]))

    def backward_link(t: int) -> None:  # frame t → t-1 (backward flow stored at t-1)
        maps[t] = maps[t - 1] @ _to3(pair(t, t - 1, backward[t - 1], backward_ok[t - 1]))

    def rejoin(visit: range, best: int) -> int:
        """Map the frame of `visit` (a return into view) that shows most of the layer by finding it
        in `best`; chain the rest of the visit from it. Returns that frame."""
        assert gray is not None
        peak = visit.start + int(area[visit.start : visit.stop].argmax())
        found = reidentify(gray[peak], gray[best], weights[peak] > 0.5, weights[best] > 0.5)
        maps[peak] = maps[best] @ _to3(found)
        return peak

    # the frame chained so far that shows most of the layer (over both directions: a reference
    # frame without the layer leaves the first return to be chained, the other to be found in it)
    best, t = reference, reference + 1
    while t < T:
        if gray is not None and seen[t] and not seen[t - 1] and seen[best]:
            end = next((u for u in range(t, T) if not seen[u]), T)
            peak = rejoin(range(t, end), best)
            for u in range(peak - 1, t - 1, -1):
                forward_link(u)
            t = peak
        else:
            backward_link(t)
        best = t if area[t] > area[best] else best
        t += 1
    t = reference - 1
    while t >= 0:
        if gray is not None and seen[t] and not seen[t + 1] and seen[best]:
            start = next((u for u in range(t, -1, -1) if not seen[u]), -1) + 1
            peak = rejoin(range(start, t + 1), best)
            for u in range(peak + 1, t + 1):
                backward_link(u)
            t = peak
        else:
            forward_link(t)
        best = t if area[t] > area[best] else best
        t -= 1
    return torch.stack([m[:2] for m in maps])


def reidentify(src: Tensor, dst: Tensor, src_mask: Tensor, dst_mask: Tensor, side: int = 64) -> Tensor:
    """Affine (NDC) from frame `src` to frame `dst` where a layer comes back into view.

    No flow links a layer that left the frame to its return, so the chain would carry it on from
    wherever it was last seen and the canonical would hold it twice. Instead the returning pixels
    are found in the frame that showed most of the layer: the rotation and shift with the least
    masked squared difference (searched exhaustively at a small scale, every shift at once as
    correlations), refined photometrically.
    """
    h, w = src.shape
    f = min(1.0, side / max(h, w))
    size = (max(4, round(h * f)), max(4, round(w * f)))
    image, target = (F.interpolate(x[None, None].float(), size=size, mode="area") for x in (src, dst))
    mask, valid = (
        (F.interpolate(m[None, None].float(), size=size, mode="area") > 0.99).float()
        for m in (src_mask, dst_mask)
    )
    if mask.sum() < 4:
        return torch.eye(2, 3)
    to_ndc = torch.tensor([[2 / size[1], 0, 1 / size[1] - 1], [0, 2 / size[0], 1 / size[0] - 1], [0, 0, 1.0]])
    ys, xs = mask[0, 0].nonzero(as_tuple=True)
    centre = torch.tensor([float(xs.float().mean()), float(ys.float().mean())])
    best, found = float("inf"), torch.eye(3)
    for degrees in range(-30, 31, 5):
        turn = torch.eye(3)
        c, s_ = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
        turn[:2, :2] = torch.tensor([[c, -s_], [s_, c]])
        turn[:2, 2] = centre - turn[:2, :2] @ centre  # about the layer's centre, in pixels
        sample = to_ndc @ torch.linalg.inv(turn) @ torch.linalg.inv(to_ndc)  # turned NDC → src NDC
        grid = F.affine_grid(sample[None, :2], [1, 1, *size], align_corners=False)
        v, m = (F.grid_sample(x, grid, align_corners=False) for x in (image, mask))
        m = (m > 0.99).float()
        pad = (size[0] - 1, size[1] - 1)
        overlap = F.conv2d(valid, m, padding=pad)
        cost = F.conv2d(valid, m * v * v, padding=pad) - 2 * F.conv2d(valid * target, m * v, padding=pad)
        cost = (cost + F.conv2d(valid * target * target, m, padding=pad)) / overlap.clamp_min(1)
        cost[overlap < 0.5 * m.sum()] = float("inf")
        k = int(cost.argmin())
        if float(cost.flatten()[k]) < best:
            dy, dx = divmod(k, cost.shape[-1])
            shift = torch.eye(3)
            shift[:2, 2] = torch.tensor([dx - pad[1], dy - pad[0]], dtype=torch.float32)
            best, found = float(cost.flatten()[k]), shift @ turn
    init = (to_ndc @ found @ torch.linalg.inv(to_ndc))[:2]
    return refine_pair_photometric(src[None].float(), dst[None].float(), src_mask, init)


def apply_affine(A: Tensor, points: Tensor) -> Tensor:
    """A: ...×2×3, points: ...×N×2 → ...×N×2."""
    return points @ A[..., :2].transpose(-1, -2) + A[..., None, :, 2]
