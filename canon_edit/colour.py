"""Colour-statistics transfer: the linear map that gives one set of pixels another's mean and covariance.

The Monge–Kantorovich linear map (Pitié and Kokaram 2007), as ARF and Ref-NPR use to pre-colour a
radiance field before a style loss: of all affine maps taking the source's Gaussian colour statistics
to the reference's, it moves colours the least, so shading and texture structure survive. It is
weight-free and exact in mean and covariance (up to clipping to [0, 1]).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import UserError


def colour_stats(pixels: Tensor, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Mean (3) and covariance (3×3) of N×3 colours, optionally weighted (N,)."""
    pixels = pixels.double()
    w = torch.ones(len(pixels), dtype=pixels.dtype) if weights is None else weights.double().flatten()
    total = w.sum()
    if total <= 0:
        raise UserError("no pixel to take colour statistics from (the mask is empty)")
    mean = (pixels * w[:, None]).sum(0) / total
    centred = pixels - mean
    cov = (centred * w[:, None]).T @ centred / total
    return mean, cov


def _sqrtm(m: Tensor) -> Tensor:
    vals, vecs = torch.linalg.eigh(m)
    return vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T


def transfer_map(
    source: tuple[Tensor, Tensor], reference: tuple[Tensor, Tensor], eps: float = 1e-6
) -> tuple[Tensor, Tensor]:
    """(A 3×3, b 3) with A·x + b taking colours of statistics `source` to those of `reference`.

    A = Σs^-½ (Σs^½ Σr Σs^½)^½ Σs^-½, the unique symmetric positive map with A Σs Aᵀ = Σr; a small
    ridge keeps it finite for flat (rank-deficient) source colours.
    """
    (ms, cs), (mr, cr) = source, reference
    eye = torch.eye(3, dtype=cs.dtype)
    cs, cr = cs + eps * eye, cr + eps * eye
    s_half = _sqrtm(cs)
    s_inv_half = torch.linalg.inv(s_half)
    a = s_inv_half @ _sqrtm(s_half @ cr @ s_half) @ s_inv_half
    return a.float(), (mr - a @ ms).float()


def apply_map(images: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """A·x + b on the colour axis of ...×3×H×W images, clipped to [0, 1]."""
    out = torch.einsum("ij,...jhw->...ihw", a.to(images), images) + b.to(images)[:, None, None]
    return out.clamp(0, 1)
