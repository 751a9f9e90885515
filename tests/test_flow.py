"""Optical flow: DIS accuracy on a known sub-pixel shift, consistency masks, warping, the flow cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from canon_edit import flow as flow_module
from canon_edit.errors import UserError
from canon_edit.flow import (
    Flow,
    compute_flow,
    consistency_mask,
    frames_key,
    load_flow,
    load_or_compute_flow,
    save_flow,
    warp,
    write_flow,
)
from canon_edit.video import CHUNK

H, W = 48, 64
SHIFT = (1.3, -0.7)
MARGIN = 8


def texture(h: int = H, w: int = W, dx: float = 0.0, dy: float = 0.0) -> torch.Tensor:
    """A smooth random texture evaluated at (x - dx, y - dy): an exact sub-pixel translation by (dx, dy)."""
    g = torch.Generator().manual_seed(0)
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64) - dy, torch.arange(w, dtype=torch.float64) - dx, indexing="ij"
    )
    image = torch.zeros(3, h, w, dtype=torch.float64)
    for _ in range(24):
        fx, fy = ((torch.rand(2, generator=g, dtype=torch.float64) - 0.5) * 0.8).tolist()
        phase = float(torch.rand(1, generator=g)) * 6.28
        colour = torch.rand(3, 1, 1, generator=g, dtype=torch.float64)
        image += colour * torch.sin(fx * xs + fy * ys + phase)
    return (image / 16 + 0.5).clamp(0, 1).float()


def interior(x: torch.Tensor) -> torch.Tensor:
    return x[..., MARGIN:-MARGIN, MARGIN:-MARGIN]


def constant_flow(n: int, dx: float, dy: float, h: int = H, w: int = W) -> torch.Tensor:
    return torch.tensor([dx, dy]).view(1, 2, 1, 1).expand(n, 2, h, w).clone()


def test_dis_recovers_subpixel_shift() -> None:
    frames = torch.stack([texture(), texture(dx=SHIFT[0], dy=SHIFT[1])])
    flow = compute_flow(frames)
    assert flow.forward.shape == flow.backward.shape == (1, 2, H, W)
    assert flow.forward_ok.shape == flow.backward_ok.shape == (1, H, W)
    assert flow.forward_ok.dtype == torch.bool
    forward_epe = (flow.forward[0] - constant_flow(1, *SHIFT)[0]).norm(dim=0)
    backward_epe = (flow.backward[0] + constant_flow(1, *SHIFT)[0]).norm(dim=0)
    assert interior(forward_epe).median() < 0.3
    assert interior(backward_epe).median() < 0.3
    assert bool(interior(flow.forward_ok).all())


def test_compute_flow_single_frame_and_bad_preset() -> None:
    flow = compute_flow(texture()[None])
    assert flow.forward.shape == (0, 2, H, W) and flow.forward_ok.shape == (0, H, W)
    with pytest.raises(UserError, match="preset 'slow'"):
        compute_flow(texture()[None], preset="slow")


def square_scene() -> tuple[torch.Tensor, torch.Tensor]:
    """Exact flows of a 16-px square at columns 20..35 moving 6 px right over a static background."""
    rows, cols = slice(16, 32), slice(20, 36)
    fwd = torch.zeros(1, 2, H, W)
    fwd[0, 0, rows, cols] = 6
    bwd = torch.zeros(1, 2, H, W)
    bwd[0, 0, rows, 26:42] = -6
    return fwd, bwd


def test_consistency_false_only_where_occluded_or_disoccluded() -> None:
    fwd, bwd = square_scene()
    forward_ok, backward_ok = consistency_mask(fwd, bwd)[0], consistency_mask(bwd, fwd)[0]
    expected_forward = torch.ones(H, W, dtype=torch.bool)
    expected_forward[16:32, 36:42] = False  # background in frame 0 that the square covers in frame 1
    expected_backward = torch.ones(H, W, dtype=torch.bool)
    expected_backward[16:32, 20:26] = False  # background in frame 1 that the square uncovered
    assert torch.equal(forward_ok, expected_forward)
    assert torch.equal(backward_ok, expected_backward)


def test_consistency_false_where_flow_leaves_frame() -> None:
    fwd, bwd = constant_flow(1, 5, 0), constant_flow(1, -5, 0)
    ok = consistency_mask(fwd, bwd)[0]
    assert not ok[:, W - 5 :].any()
    assert ok[:, : W - 5].all()


def test_dis_consistency_marks_occlusion() -> None:
    g = torch.Generator().manual_seed(0)
    background = F.avg_pool2d(torch.rand(1, 3, H, W, generator=g), 3, 1, 1)[0]
    square = F.avg_pool2d(torch.rand(1, 3, 16, 16, generator=g), 3, 1, 1)[0] * 0.5 + 0.5
    frames = background.repeat(2, 1, 1, 1)
    frames[0, :, 16:32, 20:36] = square
    frames[1, :, 16:32, 26:42] = square
    ok = compute_flow(frames).forward_ok[0]
    assert ok[18:30, 37:41].float().mean() < 0.5
    assert ok[:, :12].float().mean() > 0.95
    assert ok[20:28, 24:32].all()


def test_warp_undoes_translation() -> None:
    original = texture()
    shifted = texture(dx=SHIFT[0], dy=SHIFT[1])
    warped = warp(shifted[None], constant_flow(1, *SHIFT))[0]
    assert interior(warped - original).abs().max() < 0.01
    assert interior(shifted - original).abs().max() > 0.05


def test_warp_integer_shift_exact_and_border() -> None:
    image = torch.rand(2, 3, H, W)
    warped = warp(image, constant_flow(2, 2, -1))
    assert torch.allclose(warped[:, :, 1:, : W - 2], image[:, :, :-1, 2:], atol=1e-5)
    assert torch.allclose(warped[:, :, 0, : W - 2], image[:, :, 0, 2:], atol=1e-5)
    assert torch.allclose(warped[:, :, 1:, W - 1], image[:, :, :-1, W - 1], atol=1e-5)


def test_save_load_round_trip(tmp_path: Path) -> None:
    fwd, bwd = square_scene()
    flow = Flow(fwd + 0.25, bwd, consistency_mask(fwd, bwd), consistency_mask(bwd, fwd))
    save_flow(tmp_path / "flow.safetensors", flow, "abc")
    loaded, key = load_flow(tmp_path / "flow.safetensors")
    assert key == "abc"
    assert loaded.forward.dtype == torch.float32 and loaded.forward_ok.dtype == torch.bool
    assert torch.equal(loaded.forward, flow.forward) and torch.equal(loaded.backward, flow.backward)
    assert torch.equal(loaded.forward_ok, flow.forward_ok)
    assert torch.equal(loaded.backward_ok, flow.backward_ok)
    assert [p.name for p in tmp_path.iterdir()] == ["flow.safetensors"]


def test_load_flow_rejects_garbage(tmp_path: Path) -> None:
    (tmp_path / "flow.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match="flow.safetensors"):
        load_flow(tmp_path / "flow.safetensors")


def test_frames_key_sensitive_to_content_and_shape() -> None:
    frames = torch.stack([texture(), texture(dx=1)])
    assert frames_key(frames) == frames_key(frames.clone())
    changed = frames.clone()
    changed[1, :, 20:30, 20:30] = 0
    assert frames_key(changed) != frames_key(frames)
    assert frames_key(frames[:1]) != frames_key(frames)


def test_flow_cache_reused_and_invalidated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_pairs = flow_module.flow_pairs

    def counting_pairs(read, frames: int, *args: object):  # the flow computed, pair by pair
        calls.append(frames)
        return real_pairs(read, frames, *args)

    monkeypatch.setattr(flow_module, "flow_pairs", counting_pairs)
    cache = tmp_path / "run" / "flow.safetensors"
    frames = torch.stack([texture(), texture(dx=SHIFT[0], dy=SHIFT[1])])
    first = load_or_compute_flow(cache, frames)
    assert len(calls) == 1 and cache.is_file()
    second = load_or_compute_flow(cache, frames)
    assert len(calls) == 1, "flow was recomputed although the cache matched"
    assert torch.allclose(second.forward, first.forward, atol=1e-2)
    assert torch.equal(second.forward_ok, first.forward_ok)
    load_or_compute_flow(cache, frames.flip(0))
    assert len(calls) == 2, "a cache for other frames was reused"
    load_or_compute_flow(cache, frames.flip(0))
    assert len(calls) == 2
    cache.write_bytes(b"garbage")
    load_or_compute_flow(cache, frames.flip(0))
    assert len(calls) == 3, "an unreadable cache must be recomputed"


def test_a_flow_written_pair_by_pair_is_the_saved_flow_and_reads_a_chunk_at_a_time(tmp_path: Path) -> None:
    frames = torch.stack([texture(dx=k * SHIFT[0], dy=k * SHIFT[1]) for k in range(7)])
    save_flow(tmp_path / "whole.safetensors", compute_flow(frames), "key")
    reads = []

    def read(start: int, stop: int) -> torch.Tensor:
        reads.append(stop - start)
        return frames[start:stop]

    write_flow(tmp_path / "pairs.safetensors", read, (7, H, W), "key")
    assert sum(reads) == 7 and max(reads) <= CHUNK  # never the whole clip at once
    whole, pairs = (
        load_file(str(tmp_path / "whole.safetensors")),
        load_file(str(tmp_path / "pairs.safetensors")),
    )
    assert whole.keys() == pairs.keys() and all(torch.equal(whole[k], pairs[k]) for k in whole)
    flow, key = load_flow(tmp_path / "pairs.safetensors")  # the cache's own reader takes it
    assert key == "key" and flow.forward.shape == (6, 2, H, W)
