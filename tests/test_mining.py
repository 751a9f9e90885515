"""Patches mined where the fit is worst: drawn by the error map, weighted back towards the uniform loss."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from canon_edit_representations.codef import CoDeFConfig
from canon_edit_representations.fields import (
    LayeredRepresentation,
    cell_extents,
    error_map_shape,
    mined_batch,
    patch_batch,
)

T, H, W = 3, 40, 56


def _cfg(**options) -> CoDeFConfig:
    return CoDeFConfig(patches=4000, patch_size=8, mining_cell=16, **options)


def _pixels() -> dict[str, torch.Tensor]:
    """A clip whose every pixel holds its own (t, y, x), so a batch says where it was drawn."""
    t, y, x = torch.meshgrid(torch.arange(T), torch.arange(H), torch.arange(W), indexing="ij")
    return {"where": torch.stack([t, y, x], -1)}


def test_cells_cover_every_patch_corner_once():
    extents = cell_extents(H - 8 + 1, 16)  # corners 0..32 along y: cells of 16, 16 and 1
    assert extents.tolist() == [16, 16, 1]
    assert error_map_shape(_cfg(), T, H, W) == (T, 3, 4)


def test_a_hot_cell_draws_the_mined_share_and_patches_stay_in_the_frame():
    error = torch.full(error_map_shape(_cfg(), T, H, W), 1e-6)
    error[1, 1, 2] = 1.0  # frame 1, corners y 16..31, x 32..47
    g = torch.Generator().manual_seed(0)
    batch = mined_batch(_cfg(mined_share=0.5), _pixels(), error, g)
    corner = batch["where"][:, 0, 0]
    hot = (corner[:, 0] == 1) & (corner[:, 1] // 16 == 1) & (corner[:, 2] // 16 == 2)
    # half the batch is mined, all of it from the hot cell; the uniform half lands there 1 time in 19
    assert 0.51 <= hot.float().mean() <= 0.545
    assert (batch["cell"][hot] == (1 * 3 + 1) * 4 + 2).all()
    assert batch["y"].max() < H and batch["x"].max() < W  # every patch whole inside its frame
    assert (batch["where"][..., 1] == batch["y"]).all() and (batch["where"][..., 0] == batch["t"]).all()
    # the hot cell's patches count for less: drawn about ten times as often as uniformly
    assert batch["weight"][hot].max() < batch["weight"][~hot].min()
    assert batch["weight"].mean() == pytest.approx(1.0)


def test_with_full_correction_the_weighted_loss_estimates_the_uniform_one():
    """(u / q) weights make the drawn patches' mean loss the uniform loss's (self-normalised)."""
    torch.manual_seed(0)
    error = torch.rand(error_map_shape(_cfg(), T, H, W)) + 0.2
    loss = error  # the loss is highest where the error map says so: hard mining overstates it
    extents = cell_extents(H - 7, 16)[:, None] * cell_extents(W - 7, 16)[None]
    uniform = (loss * extents).sum() / (extents.sum() * T)
    g = torch.Generator().manual_seed(1)
    batch = mined_batch(_cfg(mined_share=1.0, mining_correction=1.0), _pixels(), error, g)
    estimate = (loss.flatten()[batch["cell"]] * batch["weight"]).mean()
    plain = loss.flatten()[batch["cell"]].mean()
    assert float(estimate) == pytest.approx(float(uniform), rel=0.02)
    assert float(plain) > float(uniform) * 1.1


def test_without_mining_the_batch_is_the_uniform_one():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    cfg = _cfg()
    plain = patch_batch(cfg, _pixels(), g1)
    assert "cell" not in plain and "weight" not in plain
    t = torch.randint(T, (cfg.patches,), generator=g2)  # the draws of the uniform sampler, as before
    assert torch.equal(plain["t"][:, 0, 0], t)


def test_each_patch_error_goes_into_the_map_and_the_loss_is_weighted():
    holder = SimpleNamespace(error_map=torch.ones(2, 2, 2))
    pred, rgb = torch.zeros(3, 4, 4, 3), torch.zeros(3, 4, 4, 3)
    rgb[0] += 0.1  # patch 0 off by 0.1 everywhere, patch 2 by 0.2, patch 1 exact
    rgb[2] += 0.2
    batch = {"cell": torch.tensor([5, 0, 3]), "weight": torch.tensor([2.0, 0.5, 0.5])}
    mse = LayeredRepresentation.reconstruction_mse(holder, pred, rgb, batch)
    assert holder.error_map.flatten()[[5, 0, 3]].tolist() == pytest.approx([0.01, 0.0, 0.04])
    assert holder.error_map.flatten()[1] == 1.0  # cells not drawn keep what they had
    assert float(mse) == pytest.approx((2.0 * 0.01 + 0.5 * 0.04) / 3)
    plain = LayeredRepresentation.reconstruction_mse(holder, pred, rgb, {})
    assert float(plain) == pytest.approx(0.05 / 3)
