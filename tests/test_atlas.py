"""Layered atlas on the procedural clip: reconstruction, alpha against the true matte, edits."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from canon_edit.canonical import CanonicalVideo, composite_weights, over
from canon_edit.cli import main
from canon_edit.config import load_config
from canon_edit.errors import UserError
from canon_edit.fitting import ClipOptions, fit_clip
from canon_edit.flow import compute_flow, load_or_compute_flow
from canon_edit.metrics import psnr
from canon_edit.procedural import ProceduralClip
from canon_edit.train import make_optimizer
from canon_edit.video import read_clip, read_image, write_image, write_pngs
from canon_edit_representations import fields
from canon_edit_representations.atlas import HIDDEN, Atlas, AtlasConfig, mask_iou
from canon_edit_representations.motion import pixel_grid_ndc


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, procedural: ProceduralClip):
    """One fit shared by the tests, from a clip folder on disk so that edits can re-read the clip."""
    folder = tmp_path_factory.mktemp("atlas")
    write_pngs(folder / "clip" / "frames", procedural.clip.frames)
    write_pngs(folder / "clip" / "masks", procedural.clip.masks.expand(-1, 3, -1, -1))
    options = ClipOptions(source=str(folder / "clip"))
    run = fit_clip(
        options.read(),
        folder / "run",
        "atlas",
        preset="atlas_demo",
        clip_options=options,
        show_progress=False,
    )
    return procedural, run, CanonicalVideo.load(run.canonical)


def _morph(mask: torch.Tensor, radius: int, dilate: bool) -> torch.Tensor:
    m = mask.float()[:, None] if dilate else 1 - mask.float()[:, None]
    grown = F.max_pool2d(m, 2 * radius + 1, stride=1, padding=radius)[:, 0] > 0
    return grown if dilate else ~grown


def test_reconstruction_reaches_28db(fitted):
    proc, run, cv = fitted
    assert psnr(cv.render().clamp(0, 1), proc.clip.frames) >= 28.0
    assert json.loads(run.metrics.read_text())["psnr"] >= 28.0
    assert run.info()["status"] == "done"


def test_alpha_matches_the_true_matte(fitted):
    proc, run, cv = fitted
    pred, true = cv.layers[1].alpha.float() > 0.5, proc.truth.layers[1].alpha.float() > 0.5
    assert float((pred & true).sum() / (pred | true).sum()) >= 0.9
    assert json.loads(run.metrics.read_text())["extra"]["alpha_iou"] >= 0.9


def test_bake_has_background_and_foreground_with_shading_and_transparent_unused_area(fitted):
    _, run, cv = fitted
    assert [la.alpha is None for la in cv.layers] == [True, False]
    for k, la in enumerate(cv.layers):
        assert la.shading.shape == (cv.T, cv.H, cv.W, 3)
        assert 0.2 < float(la.coverage.mean()) < 1.0  # the texture is used, and the unused area is marked
        png = read_image(run.canonical / f"layer_{k}.png")
        assert png.shape[0] == 4 and float(png[3].min()) == 0.0 and float(png[3].max()) == 1.0


def test_overlay_on_the_foreground_atlas_lands_on_the_sprite_in_every_frame(fitted):
    proc, _, cv = fitted
    fg = cv.layers[1]
    magenta = torch.tensor([1.0, 0.0, 1.0])[:, None, None].expand(3, *fg.coverage.shape)
    textures = cv.textures()
    textures[1] = over(textures[1], torch.cat([magenta, fg.coverage[None]]))
    changed = (cv.render(textures=textures) - cv.render()).abs().amax(1) > 10 / 255
    true = proc.truth.layers[1].alpha.float() > 0.5
    assert float((changed & _morph(true, 2, dilate=True)).sum() / changed.sum()) >= 0.95
    interior = _morph(true, 2, dilate=False)
    for t in range(cv.T):
        assert float((changed[t] & interior[t]).sum() / interior[t].sum()) >= 0.95, f"frame {t}"


def fitted_model(run) -> Atlas:
    clip = read_clip(run.info()["clip"]["source"])
    model = Atlas(
        clip,
        load_or_compute_flow(run.flow, clip.frames),
        load_config(AtlasConfig, "atlas_demo", package="canon_edit_representations.presets"),
    )
    run.load_checkpoint(model, make_optimizer(model))
    return model


def initial_alpha_iou(model: Atlas, matte: torch.Tensor) -> float:
    """IoU of the foreground's alpha > 0.5 through its initial (affine) mapping against a T×H×W matte."""
    la, grid = model.layers[1], pixel_grid_ndc(model.H, model.W).reshape(-1, 2)
    ious = []
    with torch.no_grad():
        for t in range(model.T):
            frame = torch.full((len(grid),), t)
            uv = la.mapping.to_unit(la.mapping.affine_part(grid, frame))
            alpha = torch.sigmoid(la.alpha(uv, frame)[:, 0]).reshape(model.H, model.W)
            ious.append(mask_iou(alpha > 0.5, matte[t] > 0.5))
    return sum(ious) / len(ious)


def test_alpha_starts_as_the_mask_when_initialised_from_it(fitted):
    """`alpha_init_steps` fits the alpha to the masks before the fit: the true matte at step 0."""
    proc, run, _ = fitted
    clip = read_clip(run.info()["clip"]["source"])
    flow = load_or_compute_flow(run.flow, clip.frames)
    cfg = load_config(AtlasConfig, "atlas_demo", package="canon_edit_representations.presets")
    matte = proc.truth.layers[1].alpha.float()
    torch.manual_seed(0)
    cold = initial_alpha_iou(Atlas(clip, flow, replace(cfg, alpha_init_steps=0)), matte)
    warm = initial_alpha_iou(Atlas(clip, flow, replace(cfg, alpha_init_steps=200)), matte)
    assert cold < 0.5 < 0.9 <= warm, (cold, warm)


def composite_frame(model: Atlas, t: int, detail_on: bool = True) -> torch.Tensor:
    """The prediction training makes of frame t (3×H×W), at every pixel and mapping level."""
    _, map_w, grid = model.bake_grid()
    with torch.no_grad():
        pred, _, _ = model.composite(grid, torch.full((len(grid),), t), map_w, None, detail_on)
    return pred.T.reshape(3, model.H, model.W)


def test_bake_renders_what_training_optimised(fitted):
    proc, run, cv = fitted
    t = 5
    field = composite_frame(fitted_model(run), t)
    assert psnr(cv.render([t])[0].clamp(0, 1), field.clamp(0, 1)) >= 35.0


@pytest.mark.parametrize("canonical", [False, True])
def test_bake_renders_the_detail_training_saw(fitted, canonical):
    """A detail over frame or canonical points is baked where the composite evaluated it."""
    proc, run, cv = fitted
    model = fitted_model(run)
    cfg = replace(model.cfg, detail_residual=True, detail_canonical=canonical)
    torch.manual_seed(0)
    for la in model.layers:
        _, la.detail = fields.residual_fields(cfg, model.T)
        with torch.no_grad():
            for p in la.detail.parameters():
                p.normal_(std=0.3)
    t = 5
    field, plain = composite_frame(model, t), composite_frame(model, t, detail_on=False)
    assert float((field - plain).abs().mean()) > 0.05  # the detail shows
    baked = model.bake()
    # 54 dB here; a bake reading the frame point for a canonical detail gave 36
    assert psnr(baked.render([t])[0].clamp(0, 1), field.clamp(0, 1)) >= 45.0


def test_colour_skipped_where_a_layer_is_hidden_leaves_prediction_and_gradients(fitted):
    """The composite evaluates a layer's colour only where it shows; against every colour everywhere."""
    proc, run, cv = fitted
    model = fitted_model(run)
    xy = pixel_grid_ndc(cv.H, cv.W).reshape(-1, 2).repeat(2, 1)
    t = torch.tensor([2, 9]).repeat_interleave(cv.H * cv.W)
    target = proc.clip.frames[[2, 9]].permute(0, 2, 3, 1).reshape(-1, 3)
    map_w = torch.ones(model.layers[0].mapping.enc.n_levels)
    params = [p for p in model.parameters() if p.requires_grad]

    pred, out, alphas = model.composite(xy, t, map_w, None)
    comp = composite_weights(alphas)
    plain = [
        fields.appearance(la.texture(o.uv, None), la.shading, la.detail, o.uv, xy, t).color
        for la, o in zip(model.layers, out, strict=True)
    ]
    reference = (comp[..., None] * torch.stack(plain)).sum(0)
    skipped = float((comp.detach() <= HIDDEN).float().mean())
    assert skipped > 0.3, skipped  # the foreground is absent from most of the frame
    assert float((pred - reference).detach().abs().max()) < 2 * HIDDEN

    fast = torch.autograd.grad(((pred - target) ** 2).mean(), params, retain_graph=True, allow_unused=True)
    slow = torch.autograd.grad(((reference - target) ** 2).mean(), params, allow_unused=True)
    pairs = [(a, b) for a, b in zip(fast, slow, strict=True) if b is not None]
    fast_all = torch.cat([(a if a is not None else torch.zeros_like(b)).flatten() for a, b in pairs])
    slow_all = torch.cat([b.flatten() for _, b in pairs])
    assert float(F.cosine_similarity(fast_all, slow_all, dim=0)) > 0.999
    assert float((fast_all - slow_all).norm() / slow_all.norm()) < 0.02


def test_background_grids_at_their_own_rate_only_when_asked(fitted):
    """`lr_grid_background` gives the background's grids a group at that rate; unset, the groups
    (and so a checkpoint's optimiser state) are the ones runs from before the option have."""
    model = fitted_model(fitted[1])
    la = model.layers[0]
    background_fields = [f for f in (la.mapping, la.texture, la.shading, la.detail) if f is not None]
    background = {id(p) for f in background_fields for p in f.enc.parameters()}
    plain = model.param_groups()
    assert [g["lr"] for g in plain] == [model.cfg.lr_grid, model.cfg.lr_mlp, model.cfg.lr_affine]
    model.cfg = replace(model.cfg, lr_grid_background=0.03)
    split = model.param_groups()
    assert [g["lr"] for g in split] == [0.03, model.cfg.lr_grid, model.cfg.lr_mlp, model.cfg.lr_affine]
    assert {id(p) for p in split[0]["params"]} == background
    assert not background & {id(p) for p in split[1]["params"]}
    assert [len(g["params"]) for g in plain] == [len(split[0]["params"]) + len(split[1]["params"])] + [
        len(g["params"]) for g in split[2:]
    ]


def test_every_edit_mode_works_on_an_atlas_run(fitted, tmp_path):
    proc, run, cv = fitted
    overlay = torch.zeros(4, *cv.layers[1].texture.shape[1:])
    overlay[0], overlay[3] = 1.0, cv.layers[1].coverage
    write_image(tmp_path / "overlay.png", overlay)
    assert main(["edit", str(run.path), "--canonical", str(tmp_path / "overlay.png"), "--layer", "1"]) == 0
    frame = cv.render([4])[0].clamp(0, 1)
    frame[:, 10:20, 30:50] = torch.tensor([0.0, 0.0, 1.0])[:, None, None]
    write_image(tmp_path / "frame.png", frame)
    assert main(["edit", str(run.path), "--keyframe", "4", "--image", str(tmp_path / "frame.png")]) == 0
    assert main(["render", str(run.path), "--edit", "keyframe", "-o", str(tmp_path / "k.mp4")]) == 0
    assert main(["eval", str(run.path), "--edit", "canonical"]) == 0
    assert (tmp_path / "k.mp4").stat().st_size > 0


def _short_fit(clip, tmp_path):
    """20 steps: enough to check the layer structure a clip's masks give."""
    run = fit_clip(
        clip,
        tmp_path / "run",
        "atlas",
        preset="atlas_demo",
        overrides={"train": {"steps": 20}},
        show_progress=False,
    )
    return run, CanonicalVideo.load(run.canonical)


def test_without_masks_a_single_background_layer_and_a_note(tmp_path, procedural):
    run, cv = _short_fit(replace(procedural.clip, masks=None), tmp_path)
    assert len(cv.layers) == 1 and cv.layers[0].alpha is None
    extra = json.loads(run.metrics.read_text())["extra"]
    assert extra["layers"] == 1 and "no masks" in extra["note"]


def test_two_mask_labels_give_two_foreground_layers(tmp_path, procedural):
    left = procedural.clip.masks * (torch.arange(procedural.clip.W) < procedural.clip.W // 2)
    run, cv = _short_fit(
        replace(procedural.clip, masks=torch.cat([left, procedural.clip.masks - left], 1)), tmp_path
    )
    assert [la.name for la in cv.layers] == ["background", "foreground_1", "foreground_2"]
    assert torch.isfinite(cv.render()).all()
    assert len(json.loads(run.metrics.read_text())["extra"]["alpha_iou_per_layer"]) == 2


def test_bad_masks_are_one_line_user_errors(procedural):
    flow = compute_flow(procedural.clip.frames[:3])
    clip = replace(procedural.clip, frames=procedural.clip.frames[:3], masks=procedural.clip.masks[:3])
    three = replace(clip, masks=clip.masks.expand(-1, 3, -1, -1))
    with pytest.raises(UserError, match="3 labels.*max_foreground=3"):
        Atlas(three, flow, AtlasConfig(max_foreground=2))
    with pytest.raises(UserError, match="needs masks.*--masks DIR"):
        Atlas(replace(clip, masks=None), flow, AtlasConfig(require_masks=True))
