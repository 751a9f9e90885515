"""The shading residual of the 2D forms takes a moving light, and an edit is lit as the scene was.

The procedural clip's light sweeps across the frame (`make_clip(light=...)`): its truth is a shading
residual, so a canonical image alone must either blur the light into the texture or leave it as error.
The detail residual is left out here: a light that sweeps across the frame is also a smooth function
of (x, y, t), which the detail can take as well, and an edit does not carry the detail (see
bench/RESULTS.md); `tests/test_codef.py` checks that it stays sparse where nothing is dynamic.
"""

from __future__ import annotations

import pytest

from canon_edit.canonical import CanonicalVideo, keyframe_textures
from canon_edit.fitting import fit_clip
from canon_edit.metrics import psnr
from canon_edit.procedural import edited_truth, make_clip, seen_mask

KEYFRAME = 5
STEPS = 600


@pytest.fixture(scope="module")
def lit():
    return make_clip(frames=12, height=48, width=80, light=0.3)


def fitted(lit, folder, **residuals) -> CanonicalVideo:
    # a quarter of the demo's batch: the margins below hold (+10 dB, +9 dB edited) at half the time
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
