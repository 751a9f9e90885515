"""Image and video metrics: PSNR and SSIM (optionally masked), and the flow warping error.

Reconstruction quality is PSNR/SSIM against the source frames; temporal consistency of an edit is
the warping error measured with the SOURCE video's flow, as in the video-editing literature.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import kornia
from torch import Tensor

from .flow import Flow, warp

SSIM_WINDOW = 11
SSIM_BATCH = 8


def squared_error(pred: Tensor, target: Tensor, mask: Tensor | None) -> tuple[float, float]:
    """Sum of squared errors weighted by `mask` and sum of the weights (float64: exact over long videos)."""
    error = (pred.double() - target.double()).square()
    if mask is None:
        return float(error.sum()), float(error.numel())
    weight = mask.double()
    if weight.ndim == error.ndim - 1:
        weight = weight.unsqueeze(-3)
    weight = weight.expand_as(error)
    return float((error * weight).sum()), float(weight.sum())


def psnr_of(total: float, weight: float) -> float:
    """PSNR from a region's summed squared error and summed weight (`squared_error`'s pair)."""
    if weight <= 0:
        raise ValueError("the mask selects no pixels; PSNR over an empty region is undefined")
    mse = total / weight
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def psnr(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> float:
    """PSNR in dB of images in [0,1]; `mask` (shape without channels, or broadcastable) weights pixels."""
    return psnr_of(*squared_error(pred, target, mask))


def _ssim_sums(pred: Tensor, target: Tensor, mask: Tensor | None) -> tuple[float, float]:
    """Sum of the SSIM map (weighted by `mask`) and of the weights, a few frames at a time."""
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
    return total, float(pred.numel()) if mask is None else weight


def ssim(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> float:
    """Mean SSIM (window 11) over `T×3×H×W` frames in [0,1], computed a few frames at a time.

    `mask` (T×1×H×W, or T×H×W) averages the SSIM map over the pixels it selects, as `psnr` does.
    """
    total, weight = _ssim_sums(pred, target, mask)
    return total / weight


def psnr_ssim(chunks: Iterable[tuple[Tensor, Tensor, Tensor | None]]) -> tuple[float, float]:
    """PSNR and SSIM of a video fed as (pred, target, mask) chunks of frames: the sums `psnr` and `ssim`
    take over the whole, split at chunk borders, so a long video is never held whole."""
    squared, structural = [0.0, 0.0], [0.0, 0.0]
    for pred, target, mask in chunks:
        for sums, (total, weight) in (
            (squared, squared_error(pred, target, mask)),
            (structural, _ssim_sums(pred, target, mask)),
        ):
            sums[0] += total
            sums[1] += weight
    return psnr_of(*squared), structural[0] / structural[1]


def _check_flow(flow: Flow, frames: int, shape: tuple[int, ...]) -> None:
    if frames < 2:
        raise ValueError("warping error needs at least two frames")
    if flow.forward.shape[0] != frames - 1 or tuple(flow.forward.shape[-2:]) != tuple(shape[-2:]):
        raise ValueError(
            f"flow of shape {tuple(flow.forward.shape)} does not match {frames} frames of "
            f"{tuple(shape[-2:])}; compute the flow at the frames' resolution"
        )


def _pair_error(frame: Tensor, following: Tensor, flow: Flow, t: int) -> float | None:
    """MSE between frame t and frame t+1 warped back by the forward flow, over its consistent pixels.

    None when no pixel is consistent. The flow may be the cache's mapping (float16 flows, uint8 masks).
    """
    ok = flow.forward_ok[t].bool()
    if not ok.any():
        return None
    warped = warp(following[None].float(), flow.forward[t : t + 1].float())[0]
    total, weight = squared_error(warped, frame.float(), ok)
    return total / weight


def warping_error(frames: Tensor, flow: Flow) -> float:
    """Mean over t of the MSE between frame t and frame t+1 warped back by the forward flow.

    Only forward-consistent pixels count; pass the source video's flow when scoring an edit, so the
    edit is judged against the motion it should follow. Pairs with no consistent pixel are skipped.
    """
    _check_flow(flow, frames.shape[0], tuple(frames.shape))
    errors = [_pair_error(frames[t], frames[t + 1], flow, t) for t in range(frames.shape[0] - 1)]
    return _mean([e for e in errors if e is not None])


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


class VideoMetrics:
    """PSNR, SSIM and the warping errors of a video and of its source, fed a chunk of frames at a time.

    The sums are those `psnr`, `ssim` and `warping_error` take over the whole clip, split at chunk
    borders (the pair across a border uses the previous chunk's last frame), so the figures equal
    theirs to float rounding while only one chunk is held, however long the clip.
    """

    def __init__(self, flow: Flow, frames: int) -> None:
        self.flow, self.frames, self.seen = flow, frames, 0
        self._squared, self._ssim = [0.0, 0.0], [0.0, 0.0]
        # squared error inside and outside the clip's masks, where it has masks
        self._regions: dict[str, list[float]] = {"foreground": [0.0, 0.0], "background": [0.0, 0.0]}
        self._errors: dict[str, list[float]] = {"warp_error": [], "source_warp_error": []}
        self._last: dict[str, Tensor] = {}

    def add(self, video: Tensor, source: Tensor, foreground: Tensor | None = None) -> None:
        """The next frames of the video and the source frames they render.

        `foreground` (B×H×W in [0, 1], the union of the clip's masks) splits the squared error into
        the masked objects and the rest, so a figure says where a reconstruction falls short.
        """
        if video.shape != source.shape:
            raise ValueError(f"video {tuple(video.shape)} and source {tuple(source.shape)} differ")
        _check_flow(self.flow, self.frames, tuple(video.shape))
        if not len(video):
            return
        if self.seen + len(video) > self.frames:
            raise ValueError(f"more than the {self.frames} frames the flow covers")
        for sums, (total, weight) in (
            (self._squared, squared_error(video, source, None)),
            (self._ssim, _ssim_sums(video, source, None)),
        ):
            sums[0] += total
            sums[1] += weight
        if foreground is not None:
            for key, weight in (("foreground", foreground), ("background", 1 - foreground)):
                total, count = squared_error(video, source, weight)
                self._regions[key][0] += total
                self._regions[key][1] += count
        for key, frames in (("warp_error", video), ("source_warp_error", source)):
            sequence = [self._last[key], *frames] if self.seen else list(frames)
            first = self.seen - (len(sequence) - len(frames))
            for i in range(len(sequence) - 1):
                error = _pair_error(sequence[i], sequence[i + 1], self.flow, first + i)
                if error is not None:
                    self._errors[key].append(error)
            self._last[key] = frames[-1]
        self.seen += len(video)

    def figures(self) -> dict[str, float]:
        """psnr, ssim, warp_error and source_warp_error of every frame added, and psnr_foreground and
        psnr_background where foreground masks came with the frames and each region has pixels."""
        if self.seen != self.frames:
            raise ValueError(f"{self.seen} of {self.frames} frames were added")
        regions = {f"psnr_{key}": psnr_of(*sums) for key, sums in self._regions.items() if sums[1] > 0}
        return {
            "psnr": psnr_of(*self._squared),
            "ssim": self._ssim[0] / self._ssim[1],
            **{key: _mean(errors) for key, errors in self._errors.items()},
            **regions,
        }
