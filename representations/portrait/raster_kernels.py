"""Numba kernels of the fast CPU rasterizer (raster_fast.py): projection, compositing, backwards.

Imported only when numba is installed; `raster_fast` falls back to its PyTorch path otherwise. All
kernels are serial: the backwards accumulate into per-Gaussian arrays, which parallel loops would
race on. Geometry and transmittance are float64 (T is recovered back to front by division, exact to
~1e-12 however many layers a pixel has); colours and the image keep the caller's dtype.

Inclusion is the reference's: a pair counts when the pixel lies in the Gaussian's box (the
reference's 3σ box cut down to where α can reach 1/255), α = min(o·exp(power), 0.99) ≥ 1/255 and
power ≤ 0. A pixel stops after the Gaussian that takes its transmittance below ``t_min`` (3DGS skips
that Gaussian instead; including it keeps the error below ``t_min`` times the largest colour).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99


@njit(cache=True, fastmath=True)
def bin_tiles(
    order: np.ndarray,
    x0: np.ndarray,
    x1: np.ndarray,
    y0: np.ndarray,
    y1: np.ndarray,
    tile: int,
    tiles_x: int,
    n_tiles: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-tile lists of Gaussian ids, each in `order` (front to back): offsets (n_tiles + 1,), ids."""
    offsets = np.zeros(n_tiles + 1, np.int64)
    for g in order:
        for ty in range(y0[g] // tile, (y1[g] - 1) // tile + 1):
            for tx in range(x0[g] // tile, (x1[g] - 1) // tile + 1):
                offsets[ty * tiles_x + tx + 1] += 1
    for t in range(n_tiles):
        offsets[t + 1] += offsets[t]
    ids = np.empty(offsets[n_tiles], np.int64)
    fill = offsets[:-1].copy()
    for g in order:
        for ty in range(y0[g] // tile, (y1[g] - 1) // tile + 1):
            for tx in range(x0[g] // tile, (x1[g] - 1) // tile + 1):
                t = ty * tiles_x + tx
                ids[fill[t]] = g
                fill[t] += 1
    return offsets, ids


@njit(cache=True, fastmath=True)
def forward(
    offsets: np.ndarray, ids: np.ndarray, boxes: np.ndarray, means2d: np.ndarray, conics: np.ndarray,
    opacities: np.ndarray, colors: np.ndarray, width: int, height: int, tile: int, tiles_x: int, t_min: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Composite front to back: image (H·W, C), transmittance (H·W,), end (H·W,): last list index + 1."""
    n_ch = colors.shape[1]
    image = np.zeros((height * width, n_ch))
    trans = np.ones(height * width)
    end = np.zeros(height * width, np.int64)
    for t in range(len(offsets) - 1):
        start, stop = offsets[t], offsets[t + 1]
        if start == stop:
            continue
        tx0, ty0 = (t % tiles_x) * tile, (t // tiles_x) * tile
        for py in range(ty0, min(ty0 + tile, height)):
            for px in range(tx0, min(tx0 + tile, width)):
                p = py * width + px
                T, last = 1.0, start
                for k in range(start, stop):
                    g = ids[k]
                    if px < boxes[g, 0] or px >= boxes[g, 1] or py < boxes[g, 2] or py >= boxes[g, 3]:
                        continue
                    dx, dy = px + 0.5 - means2d[g, 0], py + 0.5 - means2d[g, 1]
                    power = -0.5 * (conics[g, 0] * dx * dx + conics[g, 2] * dy * dy) - conics[g, 1] * dx * dy
                    if power > 0:
                        continue
                    a = min(opacities[g] * math.exp(power), ALPHA_MAX)
                    if a < ALPHA_MIN:
                        continue
                    w = a * T
                    for c in range(n_ch):
                        image[p, c] += w * colors[g, c]
                    T *= 1.0 - a
                    last = k + 1
                    if t_min > T:
                        break
                trans[p], end[p] = T, last
    return image, trans, end


@njit(cache=True, fastmath=True)
def backward(
    offsets: np.ndarray, ids: np.ndarray, boxes: np.ndarray, means2d: np.ndarray, conics: np.ndarray,
    opacities: np.ndarray, colors: np.ndarray, width: int, height: int, tile: int, tiles_x: int,
    trans: np.ndarray, end: np.ndarray, grad_image: np.ndarray, grad_alpha: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Gradients w.r.t. means2d, conics, opacities, colors, walking each pixel's list back to front.

    With T_i the transmittance before pair i, image = Σ T_i α_i c_i and alpha = 1 - T_end, so
    ∂L/∂α_i = T_i (c_i·g) - (Σ_{j>i} T_j α_j c_j·g - g_α T_end) / (1 - α_i); the sum is a running scalar.
    """
    n_ch = colors.shape[1]
    g_means = np.zeros_like(means2d)
    g_conics = np.zeros_like(conics)
    g_opac = np.zeros_like(opacities)
    g_colors = np.zeros_like(colors)
    for t in range(len(offsets) - 1):
        start = offsets[t]
        if start == offsets[t + 1]:
            continue
        tx0, ty0 = (t % tiles_x) * tile, (t // tiles_x) * tile
        for py in range(ty0, min(ty0 + tile, height)):
            for px in range(tx0, min(tx0 + tile, width)):
                p = py * width + px
                t_end = trans[p]
                T, behind = t_end, -grad_alpha[p] * t_end
                for k in range(end[p] - 1, start - 1, -1):
                    g = ids[k]
                    if px < boxes[g, 0] or px >= boxes[g, 1] or py < boxes[g, 2] or py >= boxes[g, 3]:
                        continue
                    dx, dy = px + 0.5 - means2d[g, 0], py + 0.5 - means2d[g, 1]
                    power = -0.5 * (conics[g, 0] * dx * dx + conics[g, 2] * dy * dy) - conics[g, 1] * dx * dy
                    if power > 0:
                        continue
                    gauss = math.exp(power)
                    raw = opacities[g] * gauss
                    a = min(raw, ALPHA_MAX)
                    if a < ALPHA_MIN:
                        continue
                    T /= 1.0 - a
                    w = a * T
                    cg = 0.0
                    for c in range(n_ch):
                        cg += colors[g, c] * grad_image[p, c]
                        g_colors[g, c] += w * grad_image[p, c]
                    g_a = T * cg - behind / (1.0 - a)
                    behind += w * cg
                    if raw > ALPHA_MAX:  # clamped: no gradient reaches opacity or shape
                        continue
                    g_opac[g] += g_a * gauss
                    g_p = g_a * a
                    g_conics[g, 0] -= 0.5 * g_p * dx * dx
                    g_conics[g, 1] -= g_p * dx * dy
                    g_conics[g, 2] -= 0.5 * g_p * dy * dy
                    g_means[g, 0] += g_p * (conics[g, 0] * dx + conics[g, 1] * dy)
                    g_means[g, 1] += g_p * (conics[g, 2] * dy + conics[g, 1] * dx)
    return g_means, g_conics, g_opac, g_colors


@njit(cache=True, fastmath=True)
def _row_span(
    py: int, x0: int, x1: int, mx: float, my: float, ca: float, cb: float, cc: float, r2: float
) -> tuple[float, int, int]:
    """Row `py` of a box cut to the ellipse quad ≤ r2 (widened by 1e-3 px): dy, first and end column."""
    dy = py + 0.5 - my
    if ca <= 0:
        return dy, x0, x1
    disc = cb * cb * dy * dy - ca * (cc * dy * dy - r2)
    if disc < 0:
        return dy, 0, 0
    sq = math.sqrt(disc)
    lo = mx + (-cb * dy - sq) / ca - 0.5 - 1e-3
    hi = mx + (-cb * dy + sq) / ca - 0.5 + 1e-3
    return dy, max(x0, int(math.ceil(lo))), min(x1, int(math.floor(hi)) + 1)


@njit(cache=True, fastmath=True)
def _row_start(
    dx: float, dy: float, ca: float, cb: float, cc: float, decay: float
) -> tuple[float, float, float, float]:
    """power and exp(power) at the first pixel of a row, with what steps both one pixel to the right.

    power is quadratic in dx, so exp(power) moves by a ratio that itself shrinks by exp(-a) per pixel:
    two products per pixel instead of an exp (the relative drift over a row is ~1e-15).
    """
    power = -0.5 * (ca * dx * dx + cc * dy * dy) - cb * dx * dy
    step = -ca * dx - 0.5 * ca - cb * dy
    return power, math.exp(power), step, math.exp(step)


@njit(cache=True, fastmath=True)
def forward_scatter(
    order: np.ndarray, boxes: np.ndarray, means2d: np.ndarray, conics: np.ndarray, opacities: np.ndarray,
    colors: np.ndarray, width: int, height: int, t_min: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Composite Gaussian by Gaussian in depth order, each over its footprint's pixels only.

    Global depth order is every pixel's front-to-back order, so no per-pixel list is built. Returns
    image (H·W, C), transmittance (H·W,) and end (H·W,): rank in `order` of the last Gaussian used + 1.
    """
    n_ch = colors.shape[1]
    image = np.zeros((height * width, n_ch), colors.dtype)
    trans = np.ones(height * width)
    end = np.zeros(height * width, np.int64)
    for rank in range(len(order)):
        g = order[rank]
        mx, my, o = means2d[g, 0], means2d[g, 1], opacities[g]
        ca, cb, cc = conics[g, 0], conics[g, 1], conics[g, 2]
        r2 = 2.0 * math.log(255.0 * o)
        decay = math.exp(-ca)
        for py in range(boxes[g, 2], boxes[g, 3]):
            dy, xa, xb = _row_span(py, boxes[g, 0], boxes[g, 1], mx, my, ca, cb, cc, r2)
            dx = xa + 0.5 - mx
            power, gauss, step, ratio = _row_start(dx, dy, ca, cb, cc, decay)
            for px in range(xa, xb):
                p = py * width + px
                before = trans[p]
                a = min(o * gauss, ALPHA_MAX)
                skip = power > 0 or before < t_min or a < ALPHA_MIN
                power += step
                step -= ca
                gauss *= ratio
                ratio *= decay
                if skip:
                    continue
                w = a * before
                for c in range(n_ch):
                    image[p, c] += w * colors[g, c]
                trans[p] = before * (1.0 - a)
                end[p] = rank + 1
    return image, trans, end


@njit(cache=True, fastmath=True)
def backward_scatter(
    order: np.ndarray, boxes: np.ndarray, means2d: np.ndarray, conics: np.ndarray, opacities: np.ndarray,
    colors: np.ndarray, width: int, height: int, trans: np.ndarray, end: np.ndarray,
    grad_image: np.ndarray, grad_alpha: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """`backward` Gaussian by Gaussian in reverse depth order; per-pixel T and the running sum are arrays."""
    n_ch = colors.shape[1]
    g_means = np.zeros_like(means2d)
    g_conics = np.zeros_like(conics)
    g_opac = np.zeros_like(opacities)
    g_colors = np.zeros_like(colors)
    T_px = trans.copy()
    behind_px = -grad_alpha * trans
    for rank in range(len(order) - 1, -1, -1):
        g = order[rank]
        mx, my, o = means2d[g, 0], means2d[g, 1], opacities[g]
        ca, cb, cc = conics[g, 0], conics[g, 1], conics[g, 2]
        r2 = 2.0 * math.log(255.0 * o)
        decay = math.exp(-ca)
        gmx = gmy = gca = gcb = gcc = go = 0.0
        for py in range(boxes[g, 2], boxes[g, 3]):
            dy, xa, xb = _row_span(py, boxes[g, 0], boxes[g, 1], mx, my, ca, cb, cc, r2)
            dx0 = xa + 0.5 - mx
            power, gauss, step, ratio = _row_start(dx0, dy, ca, cb, cc, decay)
            for px in range(xa, xb):
                p = py * width + px
                dx = dx0 + (px - xa)
                g_here, raw = gauss, o * gauss
                a = min(raw, ALPHA_MAX)
                skip = rank >= end[p] or power > 0 or a < ALPHA_MIN
                power += step
                step -= ca
                gauss *= ratio
                ratio *= decay
                if skip:
                    continue
                T = T_px[p] / (1.0 - a)
                T_px[p] = T
                w = a * T
                cg = 0.0
                for c in range(n_ch):
                    cg += colors[g, c] * grad_image[p, c]
                    g_colors[g, c] += w * grad_image[p, c]
                behind = behind_px[p]
                g_a = T * cg - behind / (1.0 - a)
                behind_px[p] = behind + w * cg
                if raw > ALPHA_MAX:  # clamped: no gradient reaches opacity or shape
                    continue
                go += g_a * g_here
                g_p = g_a * a
                gca -= 0.5 * g_p * dx * dx
                gcb -= g_p * dx * dy
                gcc -= 0.5 * g_p * dy * dy
                gmx += g_p * (ca * dx + cb * dy)
                gmy += g_p * (cc * dy + cb * dx)
        g_means[g, 0], g_means[g, 1] = gmx, gmy
        g_conics[g, 0], g_conics[g, 1], g_conics[g, 2] = gca, gcb, gcc
        g_opac[g] = go
    return g_means, g_conics, g_opac, g_colors


@njit(cache=True, fastmath=True)
def _mm(A: np.ndarray, B: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out = A @ B for tiny matrices (numba's @ calls BLAS, which costs microseconds per call)."""
    for r in range(A.shape[0]):
        for c in range(B.shape[1]):
            acc = 0.0
            for k in range(A.shape[1]):
                acc += A[r, k] * B[k, c]
            out[r, c] = acc
    return out


@njit(cache=True, fastmath=True)
def _mm_tn(A: np.ndarray, B: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out = Aᵀ @ B for tiny matrices."""
    for r in range(A.shape[1]):
        for c in range(B.shape[1]):
            acc = 0.0
            for k in range(A.shape[0]):
                acc += A[k, r] * B[k, c]
            out[r, c] = acc
    return out


@njit(cache=True, fastmath=True)
def _mm_nt(A: np.ndarray, B: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out = A @ Bᵀ for tiny matrices."""
    for r in range(A.shape[0]):
        for c in range(B.shape[0]):
            acc = 0.0
            for k in range(A.shape[1]):
                acc += A[r, k] * B[c, k]
            out[r, c] = acc
    return out


@njit(cache=True, fastmath=True)
def _quat_rotation(quats: np.ndarray, i: int, R: np.ndarray) -> float:
    """R = unit rotation of quaternion i (w, x, y, z; any norm) as gaussians.quat_to_matrix; its norm."""
    q0, q1, q2, q3 = quats[i, 0], quats[i, 1], quats[i, 2], quats[i, 3]
    norm = max(math.sqrt(q0 * q0 + q1 * q1 + q2 * q2 + q3 * q3), 1e-12)
    w, x, y, z = q0 / norm, q1 / norm, q2 / norm, q3 / norm
    R[0, 0], R[0, 1], R[0, 2] = 1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)
    R[1, 0], R[1, 1], R[1, 2] = 2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)
    R[2, 0], R[2, 1], R[2, 2] = 2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)
    return norm


@njit(cache=True, fastmath=True)
def _camera_space(
    means: np.ndarray, i: int, viewmat: np.ndarray, K: np.ndarray, cam: np.ndarray, J: np.ndarray
) -> tuple[float, float, float, bool, bool]:
    """cam = V m + t; z (clamped), tx, ty (tangent clamped as 3DGS does), whether each tangent is inside
    its limit; fills cam and the EWA Jacobian J (2×3)."""
    for r in range(3):
        cam[r] = viewmat[r, 0] * means[i, 0] + viewmat[r, 1] * means[i, 1] + viewmat[r, 2] * means[i, 2]
        cam[r] += viewmat[r, 3]
    z = max(cam[2], 1e-6)
    lim_x, lim_y = 1.3 * K[0, 2] / K[0, 0], 1.3 * K[1, 2] / K[1, 1]
    ux, uy = cam[0] / z, cam[1] / z
    in_x, in_y = -lim_x <= ux <= lim_x, -lim_y <= uy <= lim_y
    tx = min(max(ux, -lim_x), lim_x) * z
    ty = min(max(uy, -lim_y), lim_y) * z
    J[0, 0], J[0, 1], J[0, 2] = K[0, 0] / z, 0.0, -K[0, 0] * tx / (z * z)
    J[1, 0], J[1, 1], J[1, 2] = 0.0, K[1, 1] / z, -K[1, 1] * ty / (z * z)
    return z, tx, ty, in_x, in_y


@njit(cache=True, fastmath=True)
def project_forward(
    means: np.ndarray, quats: np.ndarray, scales: np.ndarray, viewmat: np.ndarray, K: np.ndarray, eps2d: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """raster.project in one pass: means2d N×2, conics N×3, depths (N,), cov2d N×2×2."""
    n = len(means)
    means2d, conics, depths, cov2d = np.empty((n, 2)), np.empty((n, 3)), np.empty(n), np.empty((n, 2, 2))
    V = np.ascontiguousarray(viewmat[:3, :3])
    R, J, T, TM = np.empty((3, 3)), np.empty((2, 3)), np.empty((2, 3)), np.empty((2, 3))
    cam = np.empty(3)
    for i in range(n):
        z, _, _, _, _ = _camera_space(means, i, viewmat, K, cam, J)
        _quat_rotation(quats, i, R)
        for r in range(3):
            for k in range(3):
                R[r, k] *= scales[i, k]
        _mm(_mm(J, V, T), R, TM)  # cov2d = TM TMᵀ + eps
        a = TM[0, 0] ** 2 + TM[0, 1] ** 2 + TM[0, 2] ** 2 + eps2d
        b = TM[0, 0] * TM[1, 0] + TM[0, 1] * TM[1, 1] + TM[0, 2] * TM[1, 2]
        c = TM[1, 0] ** 2 + TM[1, 1] ** 2 + TM[1, 2] ** 2 + eps2d
        det = max(a * c - b * b, 1e-12)
        conics[i, 0], conics[i, 1], conics[i, 2] = c / det, -b / det, a / det
        cov2d[i, 0, 0], cov2d[i, 0, 1], cov2d[i, 1, 0], cov2d[i, 1, 1] = a, b, b, c
        means2d[i, 0] = K[0, 0] * cam[0] / z + K[0, 2]
        means2d[i, 1] = K[1, 1] * cam[1] / z + K[1, 2]
        depths[i] = cam[2]
    return means2d, conics, depths, cov2d


@njit(cache=True, fastmath=True)
def project_backward(
    means: np.ndarray, quats: np.ndarray, scales: np.ndarray, viewmat: np.ndarray, K: np.ndarray,
    eps2d: float, g_means2d: np.ndarray, g_conics: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Gradients of `project_forward`'s means2d and conics w.r.t. means, quats and scales."""
    n = len(means)
    g_means, g_quats, g_scales = np.zeros((n, 3)), np.zeros((n, 4)), np.zeros((n, 3))
    V = np.ascontiguousarray(viewmat[:3, :3])
    VT = np.ascontiguousarray(V.T)
    fx, fy = K[0, 0], K[1, 1]
    R, M, gM, gR = np.empty((3, 3)), np.empty((3, 3)), np.empty((3, 3)), np.empty((3, 3))
    J, T, TM = np.empty((2, 3)), np.empty((2, 3)), np.empty((2, 3))
    gTM, gT, gJ = np.empty((2, 3)), np.empty((2, 3)), np.empty((2, 3))
    cam, g_cam = np.empty(3), np.empty(3)
    for i in range(n):
        z, tx, ty, in_x, in_y = _camera_space(means, i, viewmat, K, cam, J)
        norm = _quat_rotation(quats, i, R)
        for r in range(3):
            for k in range(3):
                M[r, k] = R[r, k] * scales[i, k]
        _mm(_mm(J, V, T), M, TM)
        a = TM[0, 0] ** 2 + TM[0, 1] ** 2 + TM[0, 2] ** 2 + eps2d
        b = TM[0, 0] * TM[1, 0] + TM[0, 1] * TM[1, 1] + TM[0, 2] * TM[1, 2]
        c = TM[1, 0] ** 2 + TM[1, 1] ** 2 + TM[1, 2] ** 2 + eps2d
        raw_det = a * c - b * b
        det = max(raw_det, 1e-12)
        gA, gB, gC = g_conics[i, 0], g_conics[i, 1], g_conics[i, 2]
        g_det = -(gA * c - gB * b + gC * a) / (det * det) if raw_det >= 1e-12 else 0.0
        ga = gC / det + g_det * c
        gb = -gB / det - 2.0 * g_det * b
        gc = gA / det + g_det * a
        for k in range(3):  # cov2d = TM TMᵀ
            gTM[0, k] = 2.0 * ga * TM[0, k] + gb * TM[1, k]
            gTM[1, k] = 2.0 * gc * TM[1, k] + gb * TM[0, k]
        _mm_tn(T, gTM, gM)
        _mm_nt(gTM, M, gT)
        _mm(gT, VT, gJ)
        for k in range(3):  # M = R diag(s)
            for r in range(3):
                gR[r, k] = gM[r, k] * scales[i, k]
            g_scales[i, k] = gM[0, k] * R[0, k] + gM[1, k] * R[1, k] + gM[2, k] * R[2, k]
        w, x, y, zq = quats[i, 0] / norm, quats[i, 1] / norm, quats[i, 2] / norm, quats[i, 3] / norm
        gw = 2 * (-zq * gR[0, 1] + y * gR[0, 2] + zq * gR[1, 0] - x * gR[1, 2] - y * gR[2, 0] + x * gR[2, 1])
        gx = 2 * (
            y * gR[0, 1] + zq * gR[0, 2] + y * gR[1, 0] - 2 * x * gR[1, 1] - w * gR[1, 2]
            + zq * gR[2, 0] + w * gR[2, 1] - 2 * x * gR[2, 2]
        )  # fmt: skip
        gy = 2 * (
            -2 * y * gR[0, 0] + x * gR[0, 1] + w * gR[0, 2] + x * gR[1, 0] + zq * gR[1, 2]
            - w * gR[2, 0] + zq * gR[2, 1] - 2 * y * gR[2, 2]
        )  # fmt: skip
        gz = 2 * (
            -2 * zq * gR[0, 0] - w * gR[0, 1] + x * gR[0, 2] + w * gR[1, 0] - 2 * zq * gR[1, 1]
            + y * gR[1, 2] + x * gR[2, 0] + y * gR[2, 1]
        )  # fmt: skip
        dot = w * gw + x * gx + y * gy + zq * gz
        g_quats[i, 0] = (gw - w * dot) / norm
        g_quats[i, 1] = (gx - x * dot) / norm
        g_quats[i, 2] = (gy - y * dot) / norm
        g_quats[i, 3] = (gz - zq * dot) / norm
        # J entries → z, tx, ty; means2d → cam
        g_z = (
            -(gJ[0, 0] * fx + gJ[1, 1] * fy) / (z * z) + 2 * (gJ[0, 2] * fx * tx + gJ[1, 2] * fy * ty) / z**3
        )
        g_tx, g_ty = -gJ[0, 2] * fx / (z * z), -gJ[1, 2] * fy / (z * z)
        g_cam[0] = g_means2d[i, 0] * fx / z
        g_cam[1] = g_means2d[i, 1] * fy / z
        g_z -= (g_means2d[i, 0] * fx * cam[0] + g_means2d[i, 1] * fy * cam[1]) / (z * z)
        if in_x:
            g_cam[0] += g_tx
        else:
            g_z += g_tx * tx / z
        if in_y:
            g_cam[1] += g_ty
        else:
            g_z += g_ty * ty / z
        g_cam[2] = g_z if cam[2] >= 1e-6 else 0.0
        for r in range(3):
            g_means[i, r] = V[0, r] * g_cam[0] + V[1, r] * g_cam[1] + V[2, r] * g_cam[2]
    return g_means, g_quats, g_scales
