"""The one-euro filter (Casiez, Roussel and Vogel, CHI 2012) on detected landmarks, run both ways.

A detector's landmarks jitter by about a pixel from frame to frame where the face is still. Tracked
as they are, that jitter moves the avatar where the source does not move: a shimmer over a still
face. A fixed low-pass would also lag and flatten a jaw that opens within a few frames. The one-euro
filter's cutoff rises with the landmark's speed, `min_cutoff + beta × speed`: heavy smoothing while
still, little while moving. Offline, the clip is filtered forward and then backward, which cancels
the lag a one-sided filter leaves.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def smoothing_factor(cutoff: Tensor | float, fps: float) -> Tensor:
    """The exponential smoothing weight of a first-order low-pass at `cutoff` Hz sampled at `fps`."""
    tau = 1.0 / (2 * math.pi * torch.as_tensor(cutoff))
    return 1.0 / (1.0 + tau * fps)


def one_euro_pass(x: Tensor, fps: float, min_cutoff: float, beta: float, d_cutoff: float) -> Tensor:
    """T×N×D points filtered forward in time; each point's cutoff follows its speed.

    As in the paper, the velocity (a D-vector, x's units per second) is low-passed at `d_cutoff`
    before its size is taken: jitter's steps point every way and cancel, a motion's add up. (Taking
    each step's size first, as this did before, counted jitter as speed and smoothed a still face
    less.) The velocity starts at the first step's, not at 0 as online filters must: a clip that
    opens in motion would otherwise be smoothed as if still until the velocity's low-pass caught up.
    """
    out = torch.empty_like(x)
    out[0] = x[0]
    velocity = (x[1] - x[0]) * fps
    a_d = smoothing_factor(d_cutoff, fps)
    for t in range(1, len(x)):
        velocity = velocity + a_d * ((x[t] - out[t - 1]) * fps - velocity)
        a = smoothing_factor(min_cutoff + beta * velocity.norm(dim=-1, keepdim=True), fps)
        out[t] = out[t - 1] + a * (x[t] - out[t - 1])
    return out


def one_euro(x: Tensor, fps: float, min_cutoff: float, beta: float, d_cutoff: float = 1.0) -> Tensor:
    """T×N×D points filtered forward, then backward (zero lag); `min_cutoff` ≤ 0 returns `x` as it is."""
    if min_cutoff <= 0 or len(x) < 2:
        return x
    forward = one_euro_pass(x, fps, min_cutoff, beta, d_cutoff)
    return one_euro_pass(forward.flip(0), fps, min_cutoff, beta, d_cutoff).flip(0)
