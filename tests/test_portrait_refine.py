"""Per-frame tracking corrections learned with the Gaussians: known camera errors are undone."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from canon_edit_representations.portrait.config import PortraitConfig
from canon_edit_representations.portrait.model import Portrait
from canon_edit_representations.portrait.procedural import truth_asset
from canon_edit_representations.portrait.refine import corrected_viewmat, trajectory_roughness
from canon_edit_representations.portrait.tracking import TrackerConfig, Tracking, project_points

# the procedural portrait turns by a large fraction of a radian a frame, which the trajectory filter (tested
# in test_trajectory_filter.py) would flatten; the tests of the corrections alone turn it off
UNFILTERED = TrackerConfig(trajectory_min_cutoff=0.0)


def test_a_correction_turns_the_camera_about_the_body():
    viewmat = torch.eye(4)
    viewmat[:3, 3] = torch.tensor([0.1, -0.2, 0.8])
    torch.testing.assert_close(corrected_viewmat(viewmat, torch.zeros(6), 0.8), viewmat)
    turned = corrected_viewmat(viewmat, torch.tensor([0.0, 0.3, 0.0, 0.0, 0.0, 0.0]), 0.8)
    torch.testing.assert_close(turned[:3, 3], viewmat[:3, 3])  # the body's origin stays where it was
    assert not torch.allclose(turned[:3, :3], viewmat[:3, :3])
    moved = corrected_viewmat(viewmat, torch.tensor([0.0, 0.0, 0.0, 0.01, 0.0, 0.0]), 0.8)
    torch.testing.assert_close(moved[:3, 3] - viewmat[:3, 3], torch.tensor([0.008, 0.0, 0.0]))
    assert float(trajectory_roughness(torch.ones(5, 3))) == 0.0


def _landmark_error(body, tracking: Tracking, truth: Tracking) -> float:
    """Mean pixel distance between the body's landmarks projected by `tracking` and by `truth`."""
    errors = []
    for t in range(truth.T):
        out = body(truth.pose[t : t + 1], truth.expression[t : t + 1], truth.shape)
        points = body.landmarks(out.vertices)[0]
        true_px = project_points(points, truth.viewmat[t], truth.K)
        out = body(tracking.pose[t : t + 1], tracking.expression[t : t + 1], tracking.shape)
        px = project_points(body.landmarks(out.vertices)[0], tracking.viewmat[t], tracking.K)
        errors.append((px - true_px).norm(dim=-1).mean())
    return float(torch.stack(errors).mean())


def test_the_fit_undoes_camera_errors_of_the_tracking(smplx_dir, body, portrait):
    """The true Gaussians seen through cameras shifted by about 1.5 px: the corrections find the shift."""
    truth = portrait.tracking
    shift = 0.01 * torch.randn(truth.T, 3, generator=torch.Generator().manual_seed(3))
    shift[:, 2] = 0
    viewmat = truth.viewmat.clone()
    viewmat[:, :3, 3] += shift
    noisy = Tracking(truth.pose, truth.expression, truth.shape, viewmat, truth.K, truth.width, truth.height)
    cfg = PortraitConfig(
        body="smplx", body_model_dir=str(smplx_dir), texel_resolution=64, feature_dim=8, decoder_hidden=8,
        refine_tracking=True, tracker=UNFILTERED,
    )  # fmt: skip
    model = Portrait(portrait.clip, None, cfg, body=body, tracking=noisy)
    asset = truth_asset(portrait, body)
    for key, value in asset.gaussians.items():
        if key in ("tri_id", "bary"):
            setattr(model, key, value)
        else:
            setattr(model, key, nn.Parameter(value.clone(), requires_grad=False))
    model.texel_size = torch.ones(len(asset.gaussians["tri_id"]))
    model.decoder.load_state_dict(asset.decoder_state)
    model.decoder.requires_grad_(False)
    before = _landmark_error(body, model.tracking(), truth)
    refine = [g for g in model.param_groups() if any(p is model.camera_delta for p in g["params"])]
    optimizer = torch.optim.Adam(refine)
    for step in range(150):
        terms, _ = model.losses({"t": torch.tensor([step % truth.T])}, step)
        optimizer.zero_grad()
        sum(terms.values()).backward()
        optimizer.step()
    after = _landmark_error(body, model.tracking(), truth)
    assert before > 1.0 and after < 0.15 * before, (before, after)  # 1.77 → 0.11 px when written


def test_the_bake_renders_with_the_corrections_steadied(smplx_dir, body, portrait):
    """Edits re-render the bake, so the corrections must be folded into the tracking it saves; by
    default that trajectory is one-euro filtered, so corrections that jitter from frame to frame do not."""
    cfg = PortraitConfig(
        body="smplx", body_model_dir=str(smplx_dir), texel_resolution=64, refine_tracking=True,
        tracker=UNFILTERED,
    )  # fmt: skip
    model = Portrait(portrait.clip, None, cfg, body=body, tracking=portrait.tracking)
    with torch.no_grad():
        model.features.add_(torch.randn_like(model.features))
    plain, _ = model.render_all()
    with torch.no_grad():
        model.camera_delta.add_(0.02 * torch.randn_like(model.camera_delta))
        model.pose_delta.add_(0.05 * torch.randn_like(model.pose_delta))
    expected, _ = model.render_all()
    assert (expected - plain).abs().amax() > 0.05  # the corrections move the person
    torch.testing.assert_close(model.bake().render(), expected, atol=1e-5, rtol=0)


def test_the_bake_steadies_corrections_that_jitter(smplx_dir, body, portrait):
    """A still head whose corrections jitter from frame to frame: by default the bake's trajectory is
    one-euro filtered (the tracker's `trajectory_*`), so it jitters far less; the expressions are kept."""
    truth = portrait.tracking
    still = Tracking(
        truth.pose[:1].expand(truth.T, -1, -1), truth.expression, truth.shape,
        truth.viewmat[:1].expand(truth.T, -1, -1), truth.K, truth.width, truth.height,
    )  # fmt: skip
    cfg = PortraitConfig(
        body="smplx", body_model_dir=str(smplx_dir), texel_resolution=32, refine_tracking=True,
        tracker=UNFILTERED,
    )  # fmt: skip
    model = Portrait(portrait.clip, None, cfg, body=body, tracking=still)
    with torch.no_grad():
        model.camera_delta.add_(
            0.01 * torch.randn(model.camera_delta.shape, generator=torch.Generator().manual_seed(4))
        )
        model.pose_delta.add_(
            0.02 * torch.randn(model.pose_delta.shape, generator=torch.Generator().manual_seed(5))
        )
    raw = model.tracking()
    model.cfg = dataclasses.replace(cfg, tracker=TrackerConfig())
    steadied = model.tracking()
    head = body.joint_index("head")
    for a, b in ((steadied.viewmat, raw.viewmat), (steadied.pose[:, head], raw.pose[:, head])):
        assert 0 < _jitter(a) < 0.5 * _jitter(b), (_jitter(a), _jitter(b))
    torch.testing.assert_close(steadied.expression, raw.expression)


def _jitter(x: torch.Tensor) -> float:
    """RMS of a trajectory's second differences: high for noise, low for smooth motion."""
    return float((x[2:] - 2 * x[1:-1] + x[:-2]).pow(2).mean().sqrt())
