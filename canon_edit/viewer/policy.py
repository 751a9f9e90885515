"""Adaptive resolution: render small while the camera moves, full resolution once it stops.

A server-side render (the portrait's Gaussians on a CPU) can take longer than the gap between
camera updates; rendering every update at full size would queue stale frames. Cost is about
proportional to pixels, so the side is scaled by sqrt(budget / full cost) while moving.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ResolutionPolicy:
    budget_ms: float = 60.0  # time a frame may take while the camera moves
    min_scale: float = 0.25  # never coarser than this fraction of the side
    settle_s: float = 0.25  # camera still this long: render at full resolution
    smoothing: float = 0.5  # weight of the newest measurement in the cost estimate


def moving_scale(policy: ResolutionPolicy, full_ms: float | None) -> float:
    """Side scale for a frame rendered while moving, given the estimated full-resolution cost."""
    if full_ms is None or full_ms <= policy.budget_ms:
        return 1.0
    return max(policy.min_scale, math.sqrt(policy.budget_ms / full_ms))


def scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """(width, height) scaled, at least 8 pixels a side."""
    return max(8, round(width * scale)), max(8, round(height * scale))


def update_cost(full_ms: float | None, ms: float, scale: float, policy: ResolutionPolicy) -> float:
    """New estimate of the full-resolution cost after a render took `ms` at side scale `scale`."""
    measured = ms / (scale * scale)
    if full_ms is None:
        return measured
    return (1 - policy.smoothing) * full_ms + policy.smoothing * measured


def settled(now: float, last_change: float, policy: ResolutionPolicy) -> bool:
    """Whether the camera has been still long enough for a full-resolution frame."""
    return now - last_change >= policy.settle_s
