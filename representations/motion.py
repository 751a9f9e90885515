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


def _photometric_levels(
    src: Tensor, dst: Tensor, mask: Tensor, max_side: int
) -> tuple[Tensor, list[tuple[Tensor, Tensor]]] | None:
    """The masked points of src (N×2 NDC) at a working scale of at most `max_side`, and coarse to fine
    (blurred, then sharp) the image they are looked up in and src's values at them; None under 16."""
    h, w = src.shape[1:]
    f = min(1.0, max_side / max(h, w))
    size = (max(8, round(h * f)), max(8, round(w * f)))
    src_s = F.interpolate(src[None], size=size, mode="area")
    dst_s = F.interpolate(dst[None], size=size, mode="area")
    m = F.interpolate(mask[None, None].float(), size=size, mode="area")[0, 0] > 0.99
    grid = pixel_grid_ndc(*size)[m]
    if len(grid) < 16:
        return None
    levels = []
    for sigma in (2.0, 1.0, 0.0):
        s_img, d_img = (src_s, dst_s) if sigma == 0 else (_blur(src_s, sigma), _blur(dst_s, sigma))
        levels.append((d_img, s_img[0, 0][m]))
    return grid, levels


def refine_pair_photometric(
    src: Tensor, dst: Tensor, mask: Tensor, init: Tensor, iterations: int = 40, max_side: int = 256
) -> Tensor:
    """Affine A (NDC) with dst(A·p) ≈ src(p) on src's masked pixels, refined from `init`.

    Dense flow is smoothed across edges and suffers the aperture problem on weakly textured
    objects (it under-estimates rotation); one affine fitted photometrically to all the layer's
    pixels does not. Coarse-to-fine (blurred, then sharp) Lucas-Kanade by Adam on the six
    parameters, minimising the mean absolute difference; deterministic, unlike OpenCV's ECC.
    src/dst: 1×H×W luma, mask: H×W.

    The six gradients and Adam's update are written out (`_affine_l1_gradient`, `AdamState`) as
    autograd and torch.optim.Adam compute them, and the points are split over the threads: the same
    affines as `refine_pair_photometric_reference` (bit for bit where measured, tested), a 240p clip's
    chain 2.2-2.4x sooner (bench/init_speed.py): the per-step machinery of six parameters was most of it.
    """
    prepared = _photometric_levels(src, dst, mask, max_side)
    if prepared is None:
        return init
    grid, levels = prepared
    A = init.clone()
    adam = AdamState(A)
    # the sampler runs on one thread per batch entry: the points split into one entry per thread
    # (the last repeated to fill it) compute the same values on all of them
    parts = max(1, min(torch.get_num_threads(), len(grid) // 1024))
    fill = -len(grid) % parts
    grid_t = torch.cat([grid, grid[-1:].expand(fill, 2)]).T.contiguous()  # 2×N': one fast product
    for d_img, target in levels:
        image = d_img.expand(parts, -1, -1, -1)
        target = torch.cat([target, target[-1:].expand(fill)]).view(parts, 1, 1, -1)
        for _ in range(iterations):
            adam.step(A, _affine_l1_gradient(A, grid, grid_t, image, target), lr=2e-3)
    return A


def refine_pair_photometric_reference(
    src: Tensor, dst: Tensor, mask: Tensor, init: Tensor, iterations: int = 40, max_side: int = 256
) -> Tensor:
    """`refine_pair_photometric` through autograd and torch.optim.Adam: the plain twin it is tested
    and timed against (bench/init_speed.py)."""
    prepared = _photometric_levels(src, dst, mask, max_side)
    if prepared is None:
        return init
    grid, levels = prepared
    A = init.clone().requires_grad_(True)
    opt = torch.optim.Adam([A], lr=2e-3)
    for d_img, target in levels:
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


def _affine_l1_gradient(A: Tensor, grid: Tensor, grid_t: Tensor, image: Tensor, target: Tensor) -> Tensor:
    """d/dA of mean|image(A·p) − target| over the N points p of `grid` (N×2): 2×3.

    `grid_t` is the points' 2×N' transpose, filled up to B entries of `image` (B×1×H×W, one image
    expanded) and `target` (B×1×1×N'/B); the filling's gradients are dropped. As autograd has it: the
    mean's and the absolute value's backward give sign(r)/N, the bilinear sampler's own backward the
    points' gradients, the affine's backward their products with p.
    """
    n = len(grid)
    q = ((A[:, :2] @ grid_t).T + A[:, 2]).reshape(len(image), 1, -1, 2)  # equal to `apply_affine`'s
    warped = torch.grid_sampler_2d(image, q, 0, 1, False)  # bilinear, border, align_corners=False
    grad_out = torch.sign(warped - target).div_(n)
    _, grad_q = torch.ops.aten.grid_sampler_2d_backward(grad_out, image, q, 0, 1, False, [False, True])
    grad_q = grad_q.view(-1, 2)[:n]
    grad = A.new_empty(2, 3)
    grad[:, :2] = (grid.T @ grad_q).T
    grad[:, 2] = grad_q.sum(0)
    return grad


class AdamState:
    """torch.optim.Adam's update (defaults, single-tensor path) for one small tensor, without the
    optimizer's per-step machinery; tested equal to it bit for bit."""

    def __init__(self, param: Tensor, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.avg, self.avg_sq = torch.zeros_like(param), torch.zeros_like(param)
        self.betas, self.eps, self.steps = betas, eps, 0

    def step(self, param: Tensor, grad: Tensor, lr: float) -> None:
        """Update `param` in place with `grad`."""
        beta1, beta2 = self.betas
        self.steps += 1
        self.avg.lerp_(grad, 1 - beta1)
        self.avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (self.avg_sq.sqrt() / (1 - beta2**self.steps) ** 0.5).add_(self.eps)
        param.addcdiv_(self.avg, denom, value=-lr / (1 - beta1**self.steps))


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


def correlate(image: Tensor, kernel: Tensor) -> Tensor:
    """Every shift's cross-correlation of two 1×1×h×w images, as `F.conv2d(image, kernel, padding=(h - 1,
    w - 1))` gives it (1×1×(2h − 1)×(2w − 1)), by FFT in float64.

    ATen's CPU convolution with a kernel as large as the image made finding a return into view at 240p
    (52 of them) take 2.0-2.9 s, by FFT 0.08-0.12 s (bench/init_speed.py); its sums are within float64
    rounding of the exact ones (the convolution's float32 sums differ by about 1e-6 of the largest).
    """
    h, w = image.shape[-2:]
    shape = (2 * h - 1, 2 * w - 1)
    spectrum = torch.fft.rfft2(image.double(), shape) * torch.fft.rfft2(kernel.double(), shape).conj()
    return torch.fft.irfft2(spectrum, shape).roll((h - 1, w - 1), (-2, -1)).to(image.dtype)


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
        overlap = correlate(valid, m).round()  # a count of pixels
        cost = correlate(valid, m * v * v) - 2 * correlate(valid * target, m * v)
        cost = (cost + correlate(valid * target * target, m)) / overlap.clamp_min(1)
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
