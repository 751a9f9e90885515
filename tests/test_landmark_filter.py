"""The one-euro landmark filter: a still face's jitter goes, a fast jaw keeps its motion, no lag."""

from __future__ import annotations

import torch

from canon_edit_representations.portrait.landmark_filter import one_euro, one_euro_pass

FPS = 30.0


def _jaw_clip() -> tuple[torch.Tensor, torch.Tensor]:
    """Truth and detections (T×2×2): a still point, and one that drops 12 px in 4 frames and returns."""
    T = 90
    truth = torch.zeros(T, 2, 2)
    drop = torch.zeros(T)
    drop[40:44] = torch.linspace(3, 12, 4)
    drop[44:50] = 12.0
    drop[50:54] = torch.linspace(9, 0, 4)
    truth[:, 1, 1] = drop
    jitter = 0.8 * torch.randn(T, 2, 2, generator=torch.Generator().manual_seed(0))
    return truth, truth + jitter


def test_one_euro_removes_a_still_faces_jitter_and_keeps_a_fast_jaw():
    truth, detected = _jaw_clip()
    filtered = one_euro(detected, FPS, min_cutoff=1.0, beta=0.05)
    still = slice(5, 35)

    def steps(x: torch.Tensor) -> float:  # RMS frame-to-frame change over the still frames
        return float((x[still][1:] - x[still][:-1]).pow(2).mean().sqrt())

    assert steps(filtered) < steps(detected) / 4
    moving = slice(38, 56)
    err = (filtered[moving, 1] - truth[moving, 1]).norm(dim=-1)
    assert float(err.max()) < 3.0  # the jaw reaches 12 px; a lagging filter would miss by more
    fixed = one_euro(detected, FPS, min_cutoff=1.0, beta=0.0)  # the same cutoff, not speed-aware
    assert float((fixed[moving, 1] - truth[moving, 1]).norm(dim=-1).max()) > 2 * float(err.max())
    # both ways: no lag. On the jitter-free drop the filtered one stays centred where the true one
    # is (a forward pass alone trails it by a frame)
    window = torch.arange(30, 65)
    centre = lambda x: float((x[window, 1, 1] * window).sum() / x[window, 1, 1].sum())  # noqa: E731
    assert abs(centre(one_euro(truth, FPS, 1.0, 0.05)) - centre(truth)) < 0.2
    assert centre(one_euro_pass(truth, FPS, 1.0, 0.05, 1.0)) - centre(truth) > 0.5


def test_one_euro_off_leaves_the_landmarks_as_detected():
    _, detected = _jaw_clip()
    assert one_euro(detected, FPS, min_cutoff=0.0, beta=0.05) is detected


def test_jitter_does_not_count_as_speed():
    """The velocity is low-passed before its size is taken (as in the paper): jitter's steps cancel.
    Taking each step's size first read 0.8 px of jitter as about 35 px/s and, at this beta, opened the
    filter so far that it kept 0.65 px of the 1.2 px frame-to-frame steps; now it keeps 0.26."""
    _, detected = _jaw_clip()
    still = detected[5:35]
    filtered = one_euro(detected, FPS, min_cutoff=1.0, beta=0.5)[5:35]

    def steps(x: torch.Tensor) -> float:
        return float((x[1:] - x[:-1]).pow(2).mean().sqrt())

    assert steps(filtered) < steps(still) / 3
