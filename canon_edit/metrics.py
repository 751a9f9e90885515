"""Image and video metrics: PSNR and SSIM (optionally masked), and the flow warping error.

Reconstruction quality is PSNR/SSIM against the source frames; temporal consistency of an edit is
the warping error measured with the SOURCE video's flow, as in the video-editing literature.
"""

from __future__ import annotations

import math

import kornia
from torch import Tensor

from .flow import Flow, warp

SSIM_WINDOW = 11
SSIM_BATCH = 8


def _weighted_mse(pred: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
    """Mean squared error over pixels weighted by `mask` (float64 to keep sums exact over long videos)."""
    error = (pred.double() - target.double()).square()
    if mask is None:
        return error.mean()
    weight = mask.double()
    if weight.ndim == error.ndim - 1:
        weight = weight.unsqueeze(-3)
    weight = weight.expand_as(error)
    total = weight.sum()
    if total <= 0:
        raise ValueError("the mask selects no pixels; PSNR over an empty region is undefined")
    return (error * weight).sum() / total


def psnr(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> float:
    """PSNR in dB of images in [0,1]; `mask` (shape without channels, or broadcastable) weights pixels."""
    mse = float(_weighted_mse(pred, target, mask))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def ssim(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> float:
    """Mean SSIM (window 11) over `T×3×H×W` frames in [0,1], computed a few frames at a time.

    `mask` (T×1×H×W, or T×H×W) averages the SSIM map over the pixels it selects, as `psnr` does.
    """
    if pred.ndim == 3:
        pred, target = pred[None], target[None]
    if mask is not None and mask.ndim == pred.ndim - 1:
        mask = mask.unsqueeze(-3)
    total, weight = 0.0, 0.0
    for start in range(0, pred.shape[0], SSIM_BATCH):
        part = slice(start, start + SSIM_BATCH)
        ssim_map = kornia.metrics.ssim(pred[part].float(), target[part].float(), SSIM_WINDOW, max_val=1.0)
        if mask is None:
            total += float(ssim_map.double().sum())
        else:
            total += float((ssim_map.double() * mask[part]).sum())
            weight += float(mask[part].expand_as(ssim_map).sum())
    return total / (pred.numel() if mask is None else weight)


def warping_error(frames: Tensor, flow: Flow) -> float:
    """Mean over t of the MSE between frame t and frame t+1 warped back by the forward flow.

    Only forward-consistent pixels count; pass the source video's flow when scoring an edit, so the
    edit is judged against the motion it should follow. Pairs with no consistent pixel are skipped.
    """
    if frames.shape[0] < 2:
        raise ValueError("warping error needs at least two frames")
    if flow.forward.shape[0] != frames.shape[0] - 1 or flow.forward.shape[-2:] != frames.shape[-2:]:
        raise ValueError(
            f"flow of shape {tuple(flow.forward.shape)} does not match frames {tuple(frames.shape)}; "
            "compute the flow at the frames' resolution"
        )
    errors = []
    for t in range(frames.shape[0] - 1):
        ok = flow.forward_ok[t]
        if not ok.any():
            continue
        warped = warp(frames[t + 1 : t + 2].float(), flow.forward[t : t + 1])[0]
        errors.append(float(_weighted_mse(warped, frames[t].float(), ok)))
    return sum(errors) / len(errors) if errors else math.nan
