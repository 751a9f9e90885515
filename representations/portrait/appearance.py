"""`--appearance ref.png` on a portrait: the reference's colour statistics, weight-free (ARF, Ref-NPR).

The avatar's colours inside the person (rendered over a sample of frames) are mapped by the
Monge–Kantorovich linear map (canon_edit.colour) onto the reference's mean and covariance, inside
the reference's own alpha when it has one. The map is stored as the decoder's output colour
transform (composed with any earlier one), so it is exact on every frame and costs no optimisation.
Colours are clipped to [0, 1] after the map, which shrinks the spread of a bright or saturated
result; a few corrections of the map's target (`CLIP_ROUNDS`) make the clipped colours match.

The map matches statistics, not meaning: a flat reference flattens the avatar's contrast with it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from canon_edit.colour import colour_stats, transfer_map
from canon_edit.errors import UserError

from .asset import PortraitAsset, spread

SAMPLE_FRAMES = 16
CLIP_ROUNDS = 4


def _psd(cov: Tensor) -> Tensor:
    vals, vecs = torch.linalg.eigh(cov)
    return vecs @ torch.diag(vals.clamp(min=1e-8)) @ vecs.T


def clipped_transfer(source: Tensor, reference: Tensor) -> tuple[Tensor, Tensor]:
    """(A, b) whose clipped output clamp(A·x + b) of the N×3 `source` colours has the reference's statistics.

    The plain Monge–Kantorovich map is exact before clipping; each round moves its target by what
    clipping lost, measured on the source colours themselves.
    """
    src, (ref_mean, ref_cov) = colour_stats(source), colour_stats(reference)
    target_mean, target_cov = ref_mean, ref_cov
    for _ in range(CLIP_ROUNDS):
        a, b = transfer_map(src, (target_mean, target_cov))
        out_mean, out_cov = colour_stats((source @ a.T + b).clamp(0, 1))
        target_mean = target_mean + ref_mean - out_mean
        target_cov = _psd(target_cov + ref_cov - out_cov)
    return transfer_map(src, (target_mean, target_cov))


def reference_pixels(reference: Tensor) -> Tensor:
    """N×3 colours of a C×H×W reference image: its opaque pixels when it has an alpha channel."""
    rgb = reference[:3].reshape(3, -1).T
    if reference.shape[0] == 4:
        rgb = rgb[reference[3].flatten() > 0.5]
    if len(rgb) < 16:
        raise UserError("the reference image has almost no opaque pixels; give an image with colour in it")
    return rgb


@torch.no_grad()
def person_pixels(asset: PortraitAsset) -> Tensor:
    """N×3 colours of the person (alpha > 0.5) over evenly spread frames."""
    person, alpha = asset.render_person(spread(asset.T, SAMPLE_FRAMES))
    keep = (alpha > 0.5).expand_as(person)
    rgb = (person / alpha.clamp(min=1e-3)).permute(1, 0, 2, 3)[keep.permute(1, 0, 2, 3)].reshape(3, -1).T
    if len(rgb) < 16:
        raise UserError("the avatar covers almost no pixels; check the fit before editing its appearance")
    return rgb


def transfer_appearance(asset: PortraitAsset, reference: Tensor) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The decoder state with the colour map folded in, and what edit.json records."""
    a, b = clipped_transfer(person_pixels(asset), reference_pixels(reference))
    state = dict(asset.decoder_state)
    current = state.get("colour", torch.cat([torch.eye(3), torch.zeros(3, 1)], 1))
    state["colour"] = torch.cat([a @ current[:, :3], (a @ current[:, 3] + b)[:, None]], 1)
    return state, {"colour_matrix": a.tolist(), "colour_offset": b.tolist()}
