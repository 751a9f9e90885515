"""CanonicalVideo: rendering, save/load, canonical-image edits and keyframe lifting on the truth."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from canon_edit.canonical import (
    CanonicalVideo,
    apply_canonical_edit,
    composite_weights,
    lift_keyframe,
    sample_texture,
    splat,
)
from canon_edit.errors import UserError
from canon_edit.metrics import psnr
from canon_edit.procedural import edited_truth, seen_mask


def test_render_is_the_over_composite_of_sampled_layers(procedural):
    cv = procedural.truth
    bg, fg = cv.layers
    t = 3
    c0 = F.grid_sample(
        bg.texture[None], bg.uv[t : t + 1].float(), align_corners=False, padding_mode="border"
    )[0]
    c1 = F.grid_sample(
        fg.texture[None], fg.uv[t : t + 1].float(), align_corners=False, padding_mode="border"
    )[0]
    a = fg.alpha[t].float()
    assert torch.allclose(cv.render([t])[0], c0 * (1 - a) + c1 * a, atol=1e-5)


def test_composite_weights_sum_to_one_with_an_opaque_back_layer():
    alphas = [torch.ones(4, 4), torch.rand(4, 4), torch.rand(4, 4)]
    w = composite_weights(alphas)
    assert torch.allclose(w.sum(0), torch.ones(4, 4))
    assert torch.allclose(w[2], alphas[2])


def test_splat_is_the_adjoint_of_sampling():
    g = torch.Generator().manual_seed(0)
    tex = torch.rand(2, 9, 13, generator=g)
    uv = torch.rand(1, 5, 7, 2, generator=g) * 1.8 - 0.9
    vals = torch.rand(35, 2, generator=g)
    lhs = (sample_texture(tex, uv)[0].reshape(2, -1).T * vals).sum()
    rhs = (splat(vals, uv.reshape(-1, 2), (9, 13)) * tex).sum()
    assert torch.allclose(lhs, rhs, atol=1e-5)


def test_save_load_round_trip(tmp_path, procedural):
    cv = procedural.truth
    cv.save(tmp_path / "c")
    back = CanonicalVideo.load(tmp_path / "c")
    assert torch.equal(back.render(), cv.render())
    assert (tmp_path / "c" / "layer_1.png").is_file()


def test_load_of_a_missing_bake_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no baked canonical video.*resume the fit"):
        CanonicalVideo.load(tmp_path)


def test_canonical_edit_rgb_replaces_and_rgba_composites():
    tex = torch.full((3, 8, 8), 0.2)
    assert torch.equal(apply_canonical_edit(tex, torch.full((3, 8, 8), 0.7)), torch.full((3, 8, 8), 0.7))
    rgba = torch.zeros(4, 8, 8)
    rgba[:3, :4] = 1.0
    rgba[3, :4] = 1.0
    out = apply_canonical_edit(tex, rgba)
    assert torch.equal(out[:, :4], torch.ones(3, 4, 8)) and torch.equal(out[:, 4:], tex[:, 4:])
    with pytest.raises(UserError, match="aspect|canonical texture"):
        apply_canonical_edit(tex, torch.zeros(3, 8, 16))


def test_lifting_through_the_true_mapping_reproduces_the_true_edit(procedural):
    truth, t = procedural.truth, 4
    gt = edited_truth(truth).render().clamp(0, 1)
    textures = lift_keyframe(truth, t, gt[t], procedural.clip.frames[t])
    out = truth.render(textures=textures).clamp(0, 1)
    seen = seen_mask(truth, t)
    assert psnr(out[t], gt[t]) > 35.0
    assert psnr(out, gt, seen) > 32.0
    unchanged = (gt - procedural.clip.frames).abs().amax(1) < 1e-6
    assert psnr(out, procedural.clip.frames, unchanged & seen) > 40.0  # nothing leaks outside the edit


def test_lift_rejects_a_frame_of_the_wrong_size_or_index(procedural):
    truth = procedural.truth
    with pytest.raises(UserError, match="edited frame is"):
        lift_keyframe(truth, 0, torch.zeros(3, 10, 10), torch.zeros(3, 10, 10))
    with pytest.raises(UserError, match="out of range"):
        lift_keyframe(truth, 99, procedural.clip.frames[0], procedural.clip.frames[0])


def test_detail_is_added_after_shading_and_kept_only_where_an_edit_left_the_texture(tmp_path, procedural):
    truth = procedural.truth
    bg = truth.layers[0]
    g = torch.Generator().manual_seed(0)
    detail = (0.05 * torch.randn(*bg.uv.shape[:3], 3, generator=g)).half()
    shading = (1 + 0.2 * torch.rand(*bg.uv.shape[:3], 3, generator=g)).half()
    cv = CanonicalVideo([replace(bg, shading=shading, detail=detail)], truth.fps)
    plain = CanonicalVideo([replace(bg, shading=shading)], truth.fps)
    t = 2
    expected = plain.render([t])[0] + detail[t].float().permute(2, 0, 1)
    assert torch.allclose(cv.render([t])[0], expected, atol=1e-5)

    edited = bg.texture.clone()
    half = edited.shape[1] // 2
    edited[:, :half] += 0.5  # the top half of the texture repainted, the bottom half as fitted
    v = bg.uv[t, ..., 1].float()  # texture row of each pixel, -1 (top) .. 1 (bottom)
    top, bottom = v < -0.1, v > 0.1
    assert top.sum() > 50 and bottom.sum() > 50
    out = cv.with_textures([edited]).render([t])[0]
    base = plain.render([t], textures=[edited])[0]
    assert torch.allclose(out[:, top], base[:, top], atol=1e-5)  # no old ripples on the new paint
    assert torch.allclose(out[:, bottom], (base + detail[t].float().permute(2, 0, 1))[:, bottom], atol=1e-5)
    assert torch.equal(cv.render([t], textures=[edited]), out[None])  # either way of passing the edit

    cv.save(tmp_path / "c")
    back = CanonicalVideo.load(tmp_path / "c")
    assert torch.equal(back.layers[0].detail, detail) and torch.equal(back.render(), cv.render())
