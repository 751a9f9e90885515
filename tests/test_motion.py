"""Motion initialisation: a layer that leaves the frame and comes back lands where it was."""

from __future__ import annotations

import torch

from canon_edit.flow import compute_flow
from canon_edit.procedural import make_long_clip
from canon_edit_representations.motion import apply_affine, chain_affines, pixel_grid_ndc


def _spread(maps: torch.Tensor, masks: torch.Tensor, true_uv: torch.Tensor) -> float:
    """Mean distance between the sprite's true texture coordinates and the best single affine of
    where the maps put its pixels: small when every frame lands in one consistent canonical."""
    grid = pixel_grid_ndc(*masks.shape[1:])
    mapped, truth = [], []
    for t in range(len(masks)):
        m = masks[t] > 0.5
        if m.sum() >= 30:
            mapped.append(apply_affine(maps[t], grid[m]))
            truth.append(true_uv[t][m])
    x = torch.cat(mapped)
    x = torch.cat([x, torch.ones(len(x), 1)], 1)
    y = torch.cat(truth)
    return float((x @ torch.linalg.lstsq(x, y).solution - y).norm(dim=1).mean())


def test_a_layer_that_returns_is_found_where_it_was_seen():
    proc = make_long_clip(frames=80, height=36, width=48, span=1.5, period=140)
    frames, masks = proc.clip.frames, proc.clip.masks[:, 0]
    seen = ((masks > 0.5).flatten(1).sum(1) >= 30).tolist()
    assert seen[0] and not all(seen) and seen[-1]  # the sprite leaves and comes back, turned
    flow = compute_flow(frames)
    links = (flow.forward, flow.backward, flow.forward_ok, flow.backward_ok, masks)
    true_uv = proc.truth.layers[1].uv.float()
    assert _spread(chain_affines(*links, 10, frames=frames), masks, true_uv) < 0.05
    assert not seen[35]  # a reference frame without the layer: one return is found in the other
    assert _spread(chain_affines(*links, 35, frames=frames), masks, true_uv) < 0.05
    # chained by flow alone, the return is placed wherever the layer was last carried
    assert _spread(chain_affines(*links, 10), masks, true_uv) > 0.1
