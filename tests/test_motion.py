"""Motion initialisation: a layer that leaves the frame and comes back lands where it was."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from canon_edit.flow import compute_flow
from canon_edit.procedural import make_long_clip
from canon_edit_representations.motion import (
    AdamState,
    apply_affine,
    chain_affines,
    correlate,
    pixel_grid_ndc,
    refine_pair_photometric,
    refine_pair_photometric_reference,
)


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


def _textured_pair(true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth random luma image (1×72×96) and the image that shows it moved by `true` (2×3, NDC):
    dst(true·p) = src(p)."""
    g = torch.Generator().manual_seed(3)
    src = F.interpolate(torch.rand(1, 1, 12, 16, generator=g), size=(72, 96), mode="bicubic")
    inverse = torch.linalg.inv(torch.cat([true, torch.tensor([[0.0, 0.0, 1.0]])]))[:2]
    grid = apply_affine(inverse, pixel_grid_ndc(72, 96).reshape(-1, 2)).reshape(1, 72, 96, 2)
    dst = F.grid_sample(src, grid, padding_mode="border", align_corners=False)
    return src[0], dst[0]


def test_the_photometric_refinement_finds_a_known_affine_as_its_autograd_twin_does():
    true = torch.tensor([[1.04, -0.05, 0.06], [0.05, 0.97, -0.04]])
    src, dst = _textured_pair(true)
    mask = torch.zeros(72, 96, dtype=torch.bool)
    mask[12:61, 15:80] = True  # the moved image's border is padding: the interior only (3185 points)
    found = refine_pair_photometric(src, dst, mask, torch.eye(2, 3))
    assert (found - true).abs().max() < 0.01  # from identity, 6% off, to under 1% of the frame
    assert (torch.eye(2, 3) - true).abs().max() > 0.05
    threads = torch.get_num_threads()
    try:
        for start, where, split in [
            (torch.eye(2, 3), mask, 1),
            (true + 0.02, mask, 3),  # the points in 3 batch entries, the last filled up by one
            (torch.eye(2, 3), torch.ones(72, 96, dtype=torch.bool), 2),
        ]:
            torch.set_num_threads(split)
            fast = refine_pair_photometric(src, dst, where, start)
            # the same arithmetic: bit for bit on the machines measured, 1e-6 for other BLAS kernels
            assert (fast - refine_pair_photometric_reference(src, dst, where, start)).abs().max() <= 1e-6
    finally:
        torch.set_num_threads(threads)
    few = torch.zeros(72, 96, dtype=torch.bool)
    few[:3, :3] = True  # under 16 points at the working scale: the start is returned
    assert torch.equal(refine_pair_photometric(src, dst, few, true), true)


def test_adam_state_updates_as_torch_adam_does():
    g = torch.Generator().manual_seed(0)
    mine = torch.randn(2, 3, generator=g)
    theirs = mine.clone().requires_grad_(True)
    adam, opt = AdamState(mine), torch.optim.Adam([theirs], lr=2e-3)
    for _ in range(50):
        grad = torch.randn(2, 3, generator=g) * 10 ** float(torch.randint(-4, 2, (), generator=g))
        adam.step(mine, grad, lr=2e-3)
        theirs.grad = grad.clone()
        opt.step()
    assert torch.equal(mine, theirs.detach())


def test_correlate_gives_every_shift_as_the_convolution_does():
    g = torch.Generator().manual_seed(1)
    for h, w in [(36, 64), (5, 7), (4, 4)]:
        image = (torch.rand(1, 1, h, w, generator=g) > 0.3).float() * torch.rand(1, 1, h, w, generator=g)
        kernel = torch.rand(1, 1, h, w, generator=g)
        plain = F.conv2d(image, kernel, padding=(h - 1, w - 1))
        fast = correlate(image, kernel)
        assert fast.shape == plain.shape == (1, 1, 2 * h - 1, 2 * w - 1)
        assert (fast - plain).abs().max() <= 1e-5 * plain.abs().max()
    one = torch.zeros(1, 1, 5, 7)
    one[0, 0, 1, 2] = 1.0  # a single pixel found at its own place: the shift (1 - 1, 2 - 2) = (0, 0)
    assert int(correlate(one, one).argmax()) == 4 * 13 + 6
