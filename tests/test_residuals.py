"""The shading residual of the 2D forms takes a moving light, and an edit is lit as the scene was.

The procedural clip's light sweeps across the frame (`make_clip(light=...)`): its truth is a shading
residual, so a canonical image alone must either blur the light into the texture or leave it as error.
The detail residual is left out here: a light that sweeps across the frame is also a smooth function
of (x, y, t), which the detail can take as well, and an edit does not carry the detail (see
bench/RESULTS.md); `tests/test_codef.py` checks that it stays sparse where nothing is dynamic.
"""

from __future__ import annotations

import pytest
import torch

from canon_edit.canonical import CanonicalVideo, keyframe_textures, splat
from canon_edit.fitting import fit_clip
from canon_edit.metrics import psnr
from canon_edit.procedural import edited_truth, make_clip, seen_mask
from canon_edit_representations.fields import LayerBake, LayeredFitConfig, residual_fields, texture_coverage

KEYFRAME = 5
STEPS = 350


@pytest.fixture(scope="module")
def lit():
    return make_clip(frames=12, height=48, width=80, light=0.3)


def fitted(lit, folder, **residuals) -> CanonicalVideo:
    # a quarter of the demo's batch for 350 steps: the margins below hold (+8.3 dB, +8.3 dB edited; at 600
    # steps +10.6 and +9.4, 2026-12-03)
    overrides = {"train": {"steps": STEPS}, "patches": 32, "detail_residual": False, **residuals}
    run = fit_clip(lit.clip, folder, "codef", preset="codef_demo", overrides=overrides, show_progress=False)
    return CanonicalVideo.load(run.canonical)


@pytest.fixture(scope="module")
def codef_pair(lit, tmp_path_factory):
    root = tmp_path_factory.mktemp("residuals")
    plain = fitted(lit, root / "plain", shading_residual=False)
    shaded = fitted(lit, root / "shaded", shading_residual=True)
    return plain, shaded


def test_shading_residual_takes_the_moving_light(lit, codef_pair):
    plain, both = codef_pair
    assert both.layers[0].shading is not None and plain.layers[0].shading is None
    without, with_ = (psnr(cv.render().clamp(0, 1), lit.clip.frames) for cv in (plain, both))
    assert with_ >= without + 2.0, (without, with_)
    # the light the fit found moves the way the true one does: brighter left at the start, right at the end
    s = both.layers[0].shading.float().mean(-1)
    assert s[0, :, :20].mean() > s[0, :, -20:].mean() + 0.02, s[0].mean(0)
    assert s[-1, :, -20:].mean() > s[-1, :, :20].mean() + 0.02, s[-1].mean(0)


def test_a_keyframe_edit_is_lit_closer_to_the_truth_with_the_shading_residual(lit, codef_pair):
    gt = edited_truth(lit.truth).render().clamp(0, 1)  # the true edit under the true, moving light
    seen = seen_mask(lit.truth, KEYFRAME)
    far = [t for t in range(lit.clip.T) if abs(t - KEYFRAME) >= 4]
    scores = []
    for cv in codef_pair:
        textures = keyframe_textures(cv, lit.clip.frames[KEYFRAME], KEYFRAME, gt[KEYFRAME])
        edited = cv.render(textures=textures).clamp(0, 1)
        scores.append(psnr(edited[far], gt[far], seen[far]))
    assert scores[1] >= scores[0] + 1.0, scores


@pytest.mark.parametrize("canonical", [False, True])
def test_detail_reads_the_canonical_point_only_when_asked(canonical):
    """`detail_canonical` moves the detail from the frame's point (x, y, t) to the layer's (u, v, t)."""
    cfg = LayeredFitConfig(detail_residual=True, detail_canonical=canonical)
    _, detail = residual_fields(cfg, frames=6)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in detail.parameters():  # the last layer starts at zero: give every weight a value
            p.normal_()
    uv, other_uv = torch.rand(2, 64, 2)
    xy, other_xy = torch.rand(2, 64, 2) * 2 - 1
    t = torch.randint(0, 6, (64,))
    with torch.no_grad():
        base = detail.at(uv, xy, t)
        moved_uv, moved_xy = detail.at(other_uv, xy, t), detail.at(uv, other_xy, t)
    same, changed = (moved_xy, moved_uv) if canonical else (moved_uv, moved_xy)
    assert torch.equal(base, same)
    assert float((base - changed).abs().mean()) > 0.1
    assert torch.equal(base, detail(uv if canonical else (xy + 1) / 2, t))


def test_a_layer_bake_written_frame_by_frame_equals_the_whole_clip_stacked():
    """LayerBake keeps float16 outputs only: its fields are the float32 frames stacked and rounded,
    its coverage the splat of every frame at once, and a detail that never exceeds 1/512 is dropped."""
    g = torch.Generator().manual_seed(0)
    T, H, W, field_hw = 5, 6, 7, (9, 11)
    unit = torch.rand(T, H * W, 2, generator=g) * 0.5  # the frames see a quarter of the texture
    weight = torch.rand(T, H, W, generator=g).round()
    alpha = torch.rand(T, H, W, generator=g)
    shading = torch.rand(T, H, W, 3, generator=g) + 0.5
    for detail, kept in (
        (torch.randn(T, H, W, 3, generator=g) * 0.1, True),
        (torch.full((T, H, W, 3), 1e-3), False),
    ):
        bake = LayerBake(T, H, W, field_hw)
        for t in range(T):
            bake.add(t, unit[t], weight[t], alpha[t], (shading[t], detail[t]))
        layer = bake.layer(torch.rand(3, 4, 4), (18, 22), "foreground_1")
        uv = (unit * 2 - 1).reshape(T, H, W, 2)
        assert torch.equal(layer.uv, uv.half()) and torch.equal(layer.alpha, alpha.half())
        assert torch.equal(layer.shading, shading.half())
        assert (layer.detail is not None) == kept and (not kept or torch.equal(layer.detail, detail.half()))
        seen = splat(weight.reshape(-1, 1), uv.reshape(-1, 2), field_hw)[0]
        assert torch.equal(layer.coverage, texture_coverage(seen, (18, 22))) and 0 < layer.coverage.mean() < 1
