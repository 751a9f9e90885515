"""Metrics: PSNR on constructed errors and masks, SSIM sanity, warping error of steady vs flickering video."""

from __future__ import annotations

import math

import pytest
import torch

from canon_edit.flow import compute_flow
from canon_edit.metrics import SSIM_BATCH, psnr, psnr_ssim, ssim, warping_error

T, H, W = 6, 48, 64


def translating_video(step: float = 1.0) -> torch.Tensor:
    """A smooth texture translated by `step` px per frame to the right (exact, evaluated analytically)."""
    ys, xs = torch.meshgrid(
        torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij"
    )
    frames = []
    for t in range(T):
        x = xs - step * t
        frames.append(
            torch.stack(
                [
                    0.5 + 0.3 * torch.sin(0.3 * x + 0.2 * ys),
                    0.5 + 0.3 * torch.cos(0.25 * x - 0.3 * ys),
                    0.5 + 0.2 * torch.sin(0.2 * x + 0.1 * ys + 1),
                ]
            )
        )
    return torch.stack(frames).float()


def test_psnr_known_value() -> None:
    target = torch.zeros(2, 3, 8, 8)
    assert psnr(target + 0.1, target) == pytest.approx(20.0, abs=1e-6)
    assert psnr(target + 0.01, target) == pytest.approx(40.0, abs=1e-6)
    assert psnr(target, target) == math.inf


def test_psnr_mask_excludes_pixels() -> None:
    target = torch.zeros(2, 3, 8, 8)
    pred = target.clone()
    pred[..., :4] = 0.1
    pred[..., 4:] = 0.5
    left = torch.zeros(2, 8, 8)
    left[..., :4] = 1
    assert psnr(pred, target, left) == pytest.approx(20.0, abs=1e-6)
    assert psnr(pred, target, left[:, None]) == pytest.approx(20.0, abs=1e-6)
    assert psnr(pred, target) < 10
    with pytest.raises(ValueError, match="no pixels"):
        psnr(pred, target, torch.zeros(2, 8, 8))


def test_ssim_identity_and_noise() -> None:
    frames = translating_video()
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(frames.shape, generator=g)
    assert ssim(frames, frames) == pytest.approx(1.0, abs=1e-5)
    slight = ssim((frames + 0.02 * noise).clamp(0, 1), frames)
    strong = ssim((frames + 0.2 * noise).clamp(0, 1), frames)
    assert 1.0 > slight > strong
    assert strong < 0.5
    assert ssim(frames[0], frames[0]) == pytest.approx(1.0, abs=1e-5)


def test_ssim_mask_averages_over_the_selected_pixels() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.rand(3, 3, 48, 48, generator=g)
    pred = target.clone()
    pred[..., :, 24:] = torch.rand(3, 3, 48, 24, generator=g)  # the right half is noise
    left = torch.zeros(3, 1, 48, 48)
    left[..., :12] = 1.0  # far enough from the noise for the 11-px window not to see it
    assert ssim(pred, target, left) == pytest.approx(1.0, abs=1e-6)
    assert ssim(pred, target, torch.ones(3, 48, 48)) == pytest.approx(ssim(pred, target), abs=1e-9)
    assert ssim(pred, target) < 0.7


def test_psnr_ssim_of_chunks_are_the_whole_videos() -> None:
    """Fed a chunk at a time (masked), the figures of the whole video: SSIM's sums in its own batches
    exactly, PSNR's to float64 rounding."""
    g = torch.Generator().manual_seed(3)
    target = torch.rand(2 * SSIM_BATCH + 3, 3, 24, 32, generator=g)
    pred = (target + 0.05 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    mask = (torch.rand(len(target), 1, 24, 32, generator=g) > 0.3).float()
    chunks = (
        (pred[i : i + SSIM_BATCH], target[i : i + SSIM_BATCH], mask[i : i + SSIM_BATCH])
        for i in range(0, len(pred), SSIM_BATCH)
    )
    chunked_psnr, chunked_ssim = psnr_ssim(chunks)
    assert chunked_ssim == ssim(pred, target, mask)
    assert chunked_psnr == pytest.approx(psnr(pred, target, mask), abs=1e-9)
    assert psnr(pred, target, mask) != pytest.approx(psnr(pred, target), abs=1e-3)  # the mask counts


def test_warping_error_static_moving_flickering() -> None:
    static = translating_video(step=0.0)
    assert warping_error(static, compute_flow(static)) < 1e-5
    moving = translating_video(step=1.0)
    flow = compute_flow(moving)
    moving_error = warping_error(moving, flow)
    assert moving_error < 1e-3
    flicker = moving * torch.tensor([1.0, 0.6] * (T // 2)).view(T, 1, 1, 1)
    assert warping_error(flicker, flow) > 20 * moving_error
    assert warping_error(flicker, flow) > 0.01


def test_warping_error_rejects_mismatched_flow() -> None:
    frames = translating_video()
    flow = compute_flow(frames[:3])
    with pytest.raises(ValueError, match="does not match"):
        warping_error(frames, flow)
