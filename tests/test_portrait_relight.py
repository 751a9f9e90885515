"""Relighting and stylization of portraits against known answers: a Lambertian procedural portrait (known
albedo, light and normals) is fitted, relit and compared with its true render under another light; the
style losses move the avatar's texture statistics towards a style image; the scripts' errors are one line."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from interrupts import ctrl_c_at
from tiny_diffusion import save_tiny_pipeline

from canon_edit.cli import main
from canon_edit.fitting import finish_run, fit_clip
from canon_edit.metrics import psnr, ssim
from canon_edit.run import RunFolder
from canon_edit.style.vgg import VGGFeatures
from canon_edit.video import write_image
from canon_edit_representations.portrait import relight as relight_module
from canon_edit_representations.portrait.avatar import EditableAvatar
from canon_edit_representations.portrait.demo import EXPOSURE, striped
from canon_edit_representations.portrait.editing import EditablePortrait
from canon_edit_representations.portrait.lighting import preset_light, shading, shading_error
from canon_edit_representations.portrait.procedural import make_portrait_clip, truth_asset
from canon_edit_representations.portrait.relight import CLIPPED, as_bright, estimate_light, observations
from canon_edit_representations.portrait.stylize import gram_distance, person_crops
from canon_edit_representations.portrait.surface import SurfaceProbe

ROOT = Path(__file__).resolve().parent.parent
FRAMES, SIZE, FIT_STEPS = 12, 64, 300


@pytest.fixture(scope="module")
def lit(body, smplx_dir, tmp_path_factory):
    """The Lambertian portrait under key-left (A) and key-right (B), and a fit of A with the true tracking."""
    a, b = preset_light("key-left") * EXPOSURE, preset_light("key-right") * EXPOSURE
    clip_a = make_portrait_clip(body, frames=FRAMES, size=SIZE, light=a)
    clip_b = make_portrait_clip(body, frames=FRAMES, size=SIZE, light=b)
    folder = tmp_path_factory.mktemp("lambertian")
    clip_a.tracking.save(folder / "tracking.json")
    overrides = {
        "body": "smplx",
        "body_model_dir": str(smplx_dir),
        "tracking": str(folder / "tracking.json"),
        "texel_resolution": 96,
        "train": {"steps": FIT_STEPS, "warmup_steps": 10},
    }
    run = fit_clip(clip_a.clip, folder / "run", "portrait", overrides=overrides, show_progress=False)
    return clip_a, clip_b, run


def test_relighting_reaches_the_true_render_under_a_new_light(lit):
    """Measured (bench/RESULTS.md): the unrelit fit is 11.1 dB from the truth under B; relit with the
    refitted albedo 30.8 dB, with the ratio 26.1 dB (the fit's 30 dB error, multiplied by B's gain
    where A left shadow), the footage relit (the default's tracked views) 29.5 dB. The light is 2.3%
    off. The issue asks for 28 dB."""
    clip_a, clip_b, run = lit
    asset = EditablePortrait.load(run.canonical)
    mask, behind = clip_a.clip.masks[:, :1], clip_a.background
    fitted = asset.render(background=behind)
    fit_psnr = psnr(fitted, clip_a.clip.frames, mask)
    assert psnr(fitted, clip_b.clip.frames, mask) < 15
    for albedo, footage, floor in (("refit", False, 29.0), ("ratio", False, 24.5), ("ratio", True, 28.5)):
        options = {"preset": "key-right", "albedo": albedo, "footage": footage}
        relit, meta = asset.relight(options, progress=False)
        assert psnr(relit.render(background=behind), clip_b.clip.frames, mask) >= floor, (albedo, footage)
        # identity: relit under its own fitted light. Ratio is the fit itself; the refitted albedo
        # models the shading the head's turns bring, so it comes closer to the source than the fit.
        lights = relit.relighting
        same = dataclasses.replace(relit, relighting=dataclasses.replace(lights, target=lights.fitted))
        identity = same.render(background=behind)
        assert psnr(identity, clip_a.clip.frames, mask) >= fit_psnr - 0.3, (albedo, footage)
        if albedo == "ratio" and not footage:
            assert psnr(identity, fitted, mask) >= 50
        assert shading_error(lights.fitted, preset_light("key-left")) < 0.05
        assert meta["sightings"] > 10000


def test_the_light_is_fitted_on_the_mesh_surface_without_clipped_pixels(body, smplx_dir, monkeypatch):
    """Lit at full exposure the procedural portrait clips in a third of the person. Those pixels are
    left out, which brings the fitted light closer to the truth (measured 9.3% → 7.5% off; 2.6% at
    the exposure that clips nothing)."""
    a = preset_light("key-left")
    clip = make_portrait_clip(body, frames=FRAMES, size=SIZE, light=a)
    clipped = (clip.clip.frames >= CLIPPED).any(1, keepdim=True) & (clip.clip.masks[:, :1] > 0)
    assert clipped.float().sum() > 0.2 * clip.clip.masks[:, :1].sum()
    avatar = EditableAvatar(truth_asset(clip, body, str(smplx_dir)))
    probe = SurfaceProbe.covering(avatar.body, avatar.tracking, avatar.tri_id)
    _, cover = probe.splat(avatar.body, avatar.tracking, 0, torch.ones(len(probe), 1), avatar.camera(0))
    solid = clip.clip.masks[0, :1] > 0
    assert float(cover[solid].mean()) > 0.97  # the probe covers the person: no holes between texels
    frames = list(range(FRAMES))
    colours, normals, ids, weights = observations(avatar, probe, frames)
    assert colours.amax() < CLIPPED and len(ids) > 10000
    light, _, _ = estimate_light((colours, normals, ids, weights), len(probe))
    monkeypatch.setattr(relight_module, "CLIPPED", 10.0)  # keep every pixel, clipped or not
    with_clipped, _, _ = estimate_light(observations(avatar, probe, frames), len(probe))
    assert shading_error(light, a) < min(0.085, shading_error(with_clipped, a) - 0.01)
    brighter = as_bright(preset_light("top"), normals, weights, 1.5)
    mean = (weights[:, None] * shading(normals, brighter)).sum(0) / weights.sum()
    assert abs(float(mean.mean()) - 1.5) < 1e-4


@pytest.fixture
def portrait_run(tmp_path, body, smplx_dir) -> RunFolder:
    """A finished portrait run whose bake is the procedural truth (no fit)."""
    clip = make_portrait_clip(body, frames=8, size=48)
    run = RunFolder.create(tmp_path / "portrait")
    run.save_clip(clip.clip)
    run.write_info(method="portrait", clip={"source": "procedural"}, status="fitting", fps=clip.clip.fps)
    finish_run(run, truth_asset(clip, body, str(smplx_dir)), clip.clip)
    run.write_info(status="done")
    return run


def test_relight_through_the_cli_writes_only_its_edit(portrait_run, tmp_path, capsys):
    run = portrait_run
    before = {p.relative_to(run.path) for p in run.path.rglob("*")}
    argv = ["relight", str(run.path), "--azimuth", "60", "--elevation", "20", "--color", "1,0.8,0.6"]
    refit = ["--set", "refit_steps=5"]  # the default, albedo refit, is measured above
    capsys.readouterr()
    assert main([*argv, "--rotate-light", "90", *refit, "--name", "warm"]) == 0
    assert "albedo: 100%" in capsys.readouterr().err  # the refit's progress bar
    assert main([*argv, *refit, "--name", "quiet", "--quiet"]) == 0
    assert "%|" not in capsys.readouterr().err
    meta = json.loads((run.edits / "warm" / "edit.json").read_text())
    assert meta["kind"] == "relight" and meta["config"]["rotate"] == 90 and len(meta["light"]) == 9
    assert "albedo_refit_loss" in meta
    after = {p.relative_to(run.path) for p in run.path.rglob("*")}
    assert {p.parts[0] for p in after - before} == {"edits"}
    assert json.loads((run.edits / "warm" / "lighting.json").read_text())["footage"]
    base = EditablePortrait.load(run.canonical)
    relit = base.load_edit(run.edits / "warm")
    first, last = relit.render([0])[0], relit.render([7])[0]
    assert not torch.allclose(first, base.render([0])[0], atol=1e-3)  # relit
    assert relit.render_turned([3], view=(20.0, 0.0)).amax() > 0.1  # novel views are relit too
    assert main([*argv, "--from-avatar", "--set", "refit_steps=0", "--name", "avatar"]) == 0
    assert not base.load_edit(run.edits / "avatar").relighting.footage
    (run.edits / "warm" / "lighting.json").write_text("{")
    capsys.readouterr()
    assert main(["render", str(run.path), "--edit", "warm", "-o", str(tmp_path / "x.mp4")]) == 2
    assert "lighting.json" in capsys.readouterr().err and first.shape == last.shape


def test_relight_errors_are_one_line(portrait_run, truth_run, tmp_path, capsys):
    (tmp_path / "notes.png").write_text("not an image")
    square = tmp_path / "square.png"
    write_image(square, torch.rand(3, 16, 16))
    for argv, words in [
        (["relight", str(truth_run.path), "--preset", "top"], "for portrait runs"),
        (["relight", str(tmp_path / "nope"), "--preset", "top"], "nope"),
        (["relight", str(portrait_run.path), "--preset", "disco"], "unknown light preset 'disco'"),
        (["relight", str(portrait_run.path), "--envmap", str(tmp_path / "notes.png")], "notes.png"),
        (["relight", str(portrait_run.path), "--envmap", str(square)], "2:1"),
        (["relight", str(portrait_run.path), "--preset", "top", "--elevation", "3"], "add --azimuth"),
        (["relight", str(portrait_run.path), "--azimuth", "3", "--color", "red"], "R,G,B"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], (argv, err)
    with pytest.raises(SystemExit) as stop:  # argparse's own one line: no light given
        main(["relight", str(portrait_run.path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "one of the arguments" in err[0]
    assert not (portrait_run.edits).exists()


def test_the_scripts_have_help():
    for script, flag in [("relight_portrait.py", "--envmap"), ("stylize_portrait.py", "--vgg")]:
        out = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / script), "--help"], capture_output=True, text=True
        )
        assert out.returncode == 0 and flag in out.stdout, out.stderr


def crops(asset: EditablePortrait, frames: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    avatar = EditableAvatar(asset)
    with torch.no_grad():
        pairs = [person_crops(avatar, t, 64) for t in frames]
    return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])


def test_texture_stylization_beats_colour_only_at_kept_content(portrait_run):
    asset = EditablePortrait.load(portrait_run.canonical)
    style, frames = striped(96), [0, 3, 6]
    colour, _ = asset.stylize(style, {"mode": "colour"}, None, progress=False)
    options = {"mode": "texture", "steps": 100, "crop": 64}
    texture, meta = asset.stylize(style, options, None, progress=False)
    assert meta["style_features"] == "random"
    original, mask = crops(asset, frames)
    figures = {}
    for name, result in [("original", asset), ("colour", colour), ("texture", texture)]:
        images, _ = crops(result, frames)
        grey = lambda x: x.mean(1, keepdim=True).expand(-1, 3, -1, -1)  # noqa: E731
        figures[name] = (gram_distance(images, mask, style), ssim(grey(images), grey(original), mask))
    # measured: Gram distance 0.63 → 0.079 (colour only, SSIM 0.96) → 0.062 (texture, SSIM 0.93)
    assert figures["colour"][0] < figures["original"][0] / 5, figures
    assert figures["texture"][0] < figures["colour"][0] / 1.15, figures
    assert figures["texture"][1] >= 0.7, figures


def test_the_content_kept_is_the_unstylized_render_of_every_frame(portrait_run, monkeypatch):
    """A frame first drawn late keeps the render from before the loop, not one already stylized."""
    from canon_edit_representations.portrait import stylize as stylize_module
    from canon_edit_representations.portrait.edit_config import StylizeConfig

    asset = EditablePortrait.load(portrait_run.canonical)
    avatar, reference = EditableAvatar(asset), EditableAvatar(asset)
    crops_of, seen = stylize_module.person_crops, []

    def spy(who, t, size):
        if not torch.is_grad_enabled():  # the content targets are taken without gradients
            seen.append(who)
        return crops_of(who, t, size)

    monkeypatch.setattr(stylize_module, "person_crops", spy)
    cfg = StylizeConfig(mode="texture", steps=12, crop=48)
    stylize_module.stylize_texture(avatar, reference, striped(48), cfg, None, progress=False)
    assert len(seen) >= 3 and all(who is reference for who in seen)
    assert not torch.equal(avatar.features, reference.features)  # the avatar did move meanwhile


def _stopped_then_resumed(argv: list[str], module, name: str, kind: str, capsys) -> tuple[str, str]:
    """`argv` run through as one edit, and stopped by Ctrl-C in the 5th of its steps (`name` of `module`
    is called once a step) as another, then resumed: the two edits' names."""
    through, stopped = f"{kind}_through", f"{kind}_stopped"
    assert main([*argv, "--name", through]) == 0, capsys.readouterr().err
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, name, ctrl_c_at(getattr(module, name), 5))
        assert main([*argv, "--name", stopped]) == 2
    assert f"edit '{stopped}' stopped at step 5 of 9" in capsys.readouterr().err
    assert main([*argv, "--name", stopped, "--resume"]) == 0, capsys.readouterr().err
    return through, stopped


def test_a_stopped_stylization_and_albedo_refit_resume_bit_for_bit(portrait_run, tmp_path, capsys):
    """The weight-free stylization and the relight's albedo refit keep their one stream of draws with
    their parameters: stopped by Ctrl-C and resumed, each edit is the one that ran through."""
    from canon_edit_representations.portrait import stylize as stylize_module

    style = tmp_path / "style.png"
    write_image(style, striped(48))
    run = str(portrait_run.path)
    stylize = ["stylize", run, "--style", str(style), "--set", "steps=9", "--set", "crop=48"]
    relight = ["relight", run, "--preset", "top", "--set", "refit_steps=9"]
    base = EditablePortrait.load(portrait_run.canonical)
    for kind, argv, module, name in [
        ("stylize", stylize, stylize_module.StyleFeatures, "style_loss"),
        ("relight", relight, relight_module, "ssim_loss"),
    ]:
        names = _stopped_then_resumed(argv, module, name, kind, capsys)
        through, resumed = (base.load_edit(portrait_run.edits / n) for n in names)
        assert torch.equal(through.gaussians["features"], resumed.gaussians["features"]), kind
        assert not torch.equal(through.gaussians["features"], base.gaussians["features"]), kind
        assert not (portrait_run.edits / f".{names[1]}.partial.safetensors").exists(), kind  # went, saved


def test_vgg_and_instruction_paths_run(portrait_run, tmp_path, capsys):
    torch.manual_seed(0)
    weights = tmp_path / "vgg16.pth"
    torch.save({f"features.{k}": v for k, v in VGGFeatures(16).features.state_dict().items()}, weights)
    style = tmp_path / "style.png"
    write_image(style, striped(48))
    argv = ["stylize", str(portrait_run.path), "--style", str(style), "--vgg", str(weights)]
    assert main([*argv, "--set", "steps=2", "--set", "crop=64", "--name", "arf"]) == 0, (
        capsys.readouterr().err
    )
    meta = json.loads((portrait_run.edits / "arf" / "edit.json").read_text())
    assert meta["style_features"] == "vgg" and meta["loss"] == "nnfm" and meta["config"]["mode"] == "vgg"
    model = save_tiny_pipeline(tmp_path / "ip2p", "ip2p")
    argv = ["stylize", str(portrait_run.path), "--instruction", "as a watercolour", "--model", str(model)]
    argv += [
        "--set",
        "steps=4",
        "--set",
        "keyframe_every=4",
        "--set",
        "face_resolution=64",
        "--device",
        "cpu",
    ]
    assert main([*argv, "--name", "watercolour"]) == 0, capsys.readouterr().err
    assert json.loads((portrait_run.edits / "watercolour" / "edit.json").read_text())["mode"] == "ip2p"
    capsys.readouterr()
    bad = ["stylize", str(portrait_run.path), "--style", str(style), "--vgg", str(tmp_path / "none.pth")]
    assert main(bad) == 2 and "none.pth" in capsys.readouterr().err


@pytest.fixture(scope="module")
def iclight(tmp_path_factory) -> tuple[str, Path, dict[str, torch.Tensor]]:
    """A tiny SD base, and a tiny IC-Light offsets file made for it (random offsets for every weight)."""
    from safetensors.torch import save_file

    from canon_edit.guidance.iclight import widen_conv_in
    from canon_edit.guidance.models import load_model

    root = tmp_path_factory.mktemp("iclight")
    base = str(save_tiny_pipeline(root / "sd", "sd"))
    unet = load_model(base, device="cpu").unet
    widen_conv_in(unet)
    g = torch.Generator().manual_seed(0)
    offsets = {k: 0.01 * torch.randn(v.shape, generator=g) for k, v in unet.state_dict().items()}
    save_file(offsets, str(root / "iclight_fc.safetensors"))
    widened = {k: v.clone() for k, v in unet.state_dict().items()}
    return base, root / "iclight_fc.safetensors", {k: widened[k] + offsets[k] for k in offsets}


def test_iclight_is_the_base_unet_widened_plus_the_offsets(iclight, tmp_path):
    from safetensors.torch import save_file

    from canon_edit.errors import UserError
    from canon_edit.guidance.iclight import ICLightConfig, gradient, load_iclight, relight_image

    base, offsets, expected = iclight
    model = load_iclight(base, offsets, device="cpu")
    state = model.unet.state_dict()
    assert model.unet.config.in_channels == 8 and state["conv_in.weight"].shape[1] == 8
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=1e-6)
    fg = torch.full((3, 40, 56), 127 / 255)
    out = relight_image(model, fg, "sunlight", ICLightConfig(steps=3), torch.Generator().manual_seed(0))
    assert out.shape == fg.shape and out.min() >= 0 and out.max() <= 1
    left = gradient(8, 10, "left")
    assert left[0, 0, 0] == 1 and left[0, 0, -1] == 0 and torch.equal(gradient(8, 10, "right"), left.flip(-1))
    bad = {"conv_in.weight": torch.zeros(4, 4, 3, 3)}
    save_file(bad, str(tmp_path / "bad.safetensors"))
    save_file({"not.a.weight": torch.zeros(1)}, str(tmp_path / "alien.safetensors"))
    (tmp_path / "pickled.pth").write_bytes(b"x")
    for path, words in [
        (tmp_path / "bad.safetensors", "the base model must be"),
        (tmp_path / "alien.safetensors", "not.a.weight"),
        (tmp_path / "pickled.pth", ".safetensors only"),
        (tmp_path / "missing.safetensors", "not found"),
    ]:
        with pytest.raises(UserError, match=words):
            load_iclight(base, path, device="cpu")


def test_iclight_relights_a_portrait_through_the_cli(portrait_run, iclight, capsys):
    base, offsets, _ = iclight
    argv = ["relight", str(portrait_run.path), "--iclight", str(offsets), "--prompt", "warm sunset light"]
    argv += ["--model", base, "--device", "cpu", "--direction", "right", "--name", "ic"]
    argv += ["--set", "idu.steps=12", "--set", "idu.keyframe_every=4", "--set", "ic.steps=2"]
    assert main(argv) == 0, capsys.readouterr().err
    meta = json.loads((portrait_run.edits / "ic" / "edit.json").read_text())
    assert meta["light"] == "iclight" and meta["config"]["ic"]["direction"] == "right"
    assert meta["keyframes"] == [0, 4] and meta["editor_calls"] == 3  # 12 steps / 4, at most twice a keyframe
    capsys.readouterr()
    assert main(["relight", str(portrait_run.path), "--iclight", str(offsets)]) == 2
    assert "--prompt" in capsys.readouterr().err
    assert main(["relight", str(portrait_run.path), "--preset", "top", "--prompt", "x"]) == 2
    assert "are for --iclight" in capsys.readouterr().err

    from canon_edit_representations.portrait import idu  # stopped in step 7 of 12, then resumed

    stopped = [a if a != "ic" else "ic_stopped" for a in argv]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(idu, "ssim_loss", ctrl_c_at(idu.ssim_loss, 7))  # once a step
        assert main(stopped) == 2
    assert "edit 'ic_stopped' stopped at step 7 of 12" in capsys.readouterr().err
    assert main([*stopped, "--resume"]) == 0
    base_asset = EditablePortrait.load(portrait_run.canonical)
    through, resumed = (base_asset.load_edit(portrait_run.edits / n) for n in ("ic", "ic_stopped"))
    assert torch.equal(through.gaussians["features"], resumed.gaussians["features"])
    assert main(["relight", str(portrait_run.path), "--preset", "top", "--resume"]) == 2
    assert "has no checkpoint to resume" in capsys.readouterr().err
