"""A procedural portrait (known body, poses, Gaussians) fitted through the spine's fit pipeline."""

from __future__ import annotations

import pytest
import torch

from canon_edit.errors import UserError
from canon_edit.fitting import fit_clip
from canon_edit.metrics import psnr
from canon_edit_representations.portrait import asset as asset_module
from canon_edit_representations.portrait.asset import PortraitAsset
from canon_edit_representations.portrait.body import SMPLXBody
from canon_edit_representations.portrait.config import PortraitConfig
from canon_edit_representations.portrait.gaussians import read_ply
from canon_edit_representations.portrait.model import Portrait
from canon_edit_representations.portrait.tracking import load_tracking

FIT_STEPS = 150


def test_fit_reconstructs_the_procedural_portrait(tmp_path, smplx_dir, portrait):
    portrait.tracking.save(tmp_path / "tracking.json")
    overrides = {
        "body": "smplx",
        "body_model_dir": str(smplx_dir),
        "tracking": str(tmp_path / "tracking.json"),
        "texel_resolution": 96,
        "train": {"steps": FIT_STEPS, "warmup_steps": 10},
    }
    run = fit_clip(portrait.clip, tmp_path / "run", "portrait", overrides=overrides, show_progress=False)
    assert run.info()["status"] == "done"
    asset = PortraitAsset.load(run.canonical)
    mask = portrait.clip.masks[:, 0]
    person = asset.render(background=torch.zeros(3, portrait.clip.H, portrait.clip.W))
    assert psnr(person, portrait.clip.frames, mask) >= 28.0  # over black: uncovered person pixels count
    # the bake is self-contained: the PLY carries the binding, the tracking the clip's frames
    ply = read_ply(run.canonical / "gaussians.ply")
    assert ply["tri_id"].max() < len(asset.get_body().faces) and ply["features"].shape[1] == 16
    assert load_tracking(run.canonical / "tracking.json", portrait.clip.T).T == portrait.clip.T


def test_bake_renders_what_the_model_renders(smplx_dir, portrait):
    body = SMPLXBody(smplx_dir)
    cfg = PortraitConfig(body="smplx", body_model_dir=str(smplx_dir), texel_resolution=64)
    model = Portrait(portrait.clip, None, cfg, body=body, tracking=portrait.tracking)
    with torch.no_grad():
        model.features.add_(torch.randn_like(model.features))
        model.offset.add_(1e-3 * torch.randn_like(model.offset))
    expected, _ = model.render_all()
    asset = model.bake()
    torch.testing.assert_close(asset.render(), expected, atol=1e-5, rtol=0)


def test_the_finish_renders_each_frame_once(smplx_dir, portrait, monkeypatch):
    """Person-only metrics (over black) and the reconstruction (over the source) share one pass."""
    body = SMPLXBody(smplx_dir)
    cfg = PortraitConfig(body="smplx", body_model_dir=str(smplx_dir), texel_resolution=64)
    model = Portrait(portrait.clip, None, cfg, body=body, tracking=portrait.tracking)
    asset = model.bake()
    calls = []
    real = asset_module.render_frame
    monkeypatch.setattr(asset_module, "render_frame", lambda *a: calls.append(1) or real(*a))
    black = torch.zeros(3, portrait.clip.H, portrait.clip.W)
    over_black = asset.render(background=black)
    over_source = asset.render()
    assert len(calls) == portrait.clip.T
    person, alpha = asset.render_person(list(range(portrait.clip.T)))
    torch.testing.assert_close(over_black, person, atol=1e-6, rtol=0)
    expected = person + portrait.clip.frames * (1 - alpha)
    torch.testing.assert_close(over_source, expected, atol=2e-3, rtol=0)  # the kept pass is float16


def test_portrait_needs_masks_and_tracking(smplx_dir, portrait):
    body = SMPLXBody(smplx_dir)
    cfg = PortraitConfig(body="smplx", body_model_dir=str(smplx_dir))
    with pytest.raises(UserError, match="tracking"):
        Portrait(portrait.clip, None, cfg, body=body)
    unmasked = type(portrait.clip)(frames=portrait.clip.frames, fps=25.0)
    with pytest.raises(UserError, match="mask"):
        Portrait(unmasked, None, cfg, body=body, tracking=portrait.tracking)


def test_render_frames_stacks_as_the_frames_come():
    """The clip's renders written into their tensors frame by frame: what stacking a list gave."""
    from canon_edit_representations.portrait.render import render_frames

    g = torch.Generator().manual_seed(0)
    outputs = {t: (torch.rand(3, 5, 7, generator=g), torch.rand(1, 5, 7, generator=g)) for t in (4, 1, 2)}
    rgb, alpha = render_frames(outputs.__getitem__, [4, 1, 2])
    assert torch.equal(rgb, torch.stack([outputs[t][0] for t in (4, 1, 2)]))
    assert torch.equal(alpha, torch.stack([outputs[t][1] for t in (4, 1, 2)]))
    with pytest.raises(ValueError, match="no frames"):
        render_frames(outputs.__getitem__, [])


def test_each_frame_renders_once_however_the_renders_are_chunked(smplx_dir, portrait, monkeypatch):
    """The finish's masked metrics go a chunk at a time: frames rendered in one chunk are kept for the
    next render, which returns what was rendered now at full precision and what was kept as kept."""
    body = SMPLXBody(smplx_dir)
    cfg = PortraitConfig(body="smplx", body_model_dir=str(smplx_dir), texel_resolution=64)
    asset = Portrait(portrait.clip, None, cfg, body=body, tracking=portrait.tracking).bake()
    calls = []
    real = asset_module.render_frame
    monkeypatch.setattr(asset_module, "render_frame", lambda *a: calls.append(1) or real(*a))
    black = torch.zeros(3, portrait.clip.H, portrait.clip.W)
    first = asset.render([0, 1, 2], background=black)
    mixed = asset.render([3, 1, 4], background=black)  # 3 and 4 now, 1 kept
    rest = asset.render(background=black)
    assert len(calls) == portrait.clip.T
    person, _ = asset.render_person(list(range(portrait.clip.T)))
    torch.testing.assert_close(first, person[:3], atol=1e-6, rtol=0)
    torch.testing.assert_close(mixed[[0, 2]], person[[3, 4]], atol=1e-6, rtol=0)
    torch.testing.assert_close(mixed[1], person[1].half().float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(rest, person, atol=2e-3, rtol=0)  # the kept pass is float16
