"""Portrait edits against known answers: the procedural portrait's true Gaussians, as a baked asset, are
edited by a known editor (IDU), by paint on one frame (keyframe lift), by score distillation with a tiny
model, by a reference's colours, and seen from new viewpoints."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from interrupts import ctrl_c_at
from safetensors.torch import save_file
from tiny_diffusion import save_tiny_pipeline

from canon_edit.cli import main
from canon_edit.colour import colour_stats
from canon_edit.errors import UserError
from canon_edit.files import CorruptFile
from canon_edit.fitting import finish_run
from canon_edit.guidance.edit import DiffusionRequest
from canon_edit.metrics import psnr, ssim
from canon_edit.run import RunFolder
from canon_edit.video import read_image, write_image, write_pngs
from canon_edit_representations.portrait.avatar import EditableAvatar
from canon_edit_representations.portrait.edit_config import IDUConfig, LiftConfig
from canon_edit_representations.portrait.editing import EditablePortrait
from canon_edit_representations.portrait.idu import crop, head_weight, iterative_dataset_update, paste
from canon_edit_representations.portrait.lift import coverage, lift_keyframe
from canon_edit_representations.portrait.orbit import head_centre, turned_camera
from canon_edit_representations.portrait.procedural import make_portrait_clip, truth_asset
from canon_edit_representations.portrait.tracking import project_points

FRAMES, SIZE = 16, 64


@pytest.fixture(scope="module")
def clip16(body):
    return make_portrait_clip(body, frames=FRAMES, size=SIZE)


@pytest.fixture(scope="module")
def asset(clip16, body, smplx_dir) -> EditablePortrait:
    return truth_asset(clip16, body, str(smplx_dir))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("models")
    return {kind: str(save_tiny_pipeline(root / kind, kind)) for kind in ("sd", "ip2p")}


@pytest.fixture
def portrait_run(tmp_path, clip16, asset) -> RunFolder:
    """A finished portrait run whose bake is the procedural truth."""
    write_pngs(tmp_path / "clip" / "frames", clip16.clip.frames)
    run = RunFolder.create(tmp_path / "run")
    run.save_clip(clip16.clip)
    run.write_info(method="portrait", clip={"source": "procedural"}, status="fitting", fps=clip16.clip.fps)
    finish_run(run, asset, clip16.clip)
    run.write_info(status="done")
    return run


def rotate_hue(image: torch.Tensor) -> torch.Tensor:
    """The known editor: a colour-channel rotation (red → green → blue → red)."""
    return image[[2, 0, 1]]


def test_idu_with_a_known_editor_reaches_the_held_out_frames(clip16, asset):
    avatar = EditableAvatar(asset)
    cfg = IDUConfig(steps=240, keyframe_every=4)
    stats = iterative_dataset_update(avatar, lambda t, render, original, alpha, _: rotate_hue(original), cfg)
    held = [t for t in range(FRAMES) if t not in stats["keyframes"]]
    assert stats["keyframes"] == [0, 4, 8, 12] and stats["held_out"] == len(held) == 12
    masks = clip16.clip.masks[held, :1]
    truth = torch.stack([rotate_hue(clip16.clip.frames[t]) for t in held])
    before = psnr(asset.render(held), truth, masks)
    after = psnr(avatar.to_asset().render(held), truth, masks)
    assert before < 20 and after >= 28, (before, after)
    assert stats["gaussian_shift_max_mm"] == 0  # offsets frozen by default: the geometry is the fit's


def test_idu_with_tiny_instruct_pix2pix_and_face_crop_through_the_cli(portrait_run, models, capsys):
    run = portrait_run
    argv = [
        "edit",
        str(run.path),
        "--instruction",
        "make it blue",
        "--model",
        models["ip2p"],
        "--name",
        "blue",
    ]
    argv += ["--set", "steps=8", "--set", "keyframe_every=8", "--set", "face_resolution=64"]
    argv += ["--device", "cpu"]
    assert main(argv) == 0, capsys.readouterr().err
    meta = json.loads((run.edits / "blue" / "edit.json").read_text())
    assert meta["mode"] == "ip2p" and meta["keyframes"] == [0, 8] and meta["editor_calls"] == 2
    assert meta["config"]["face_crop"] and meta["held_out"] == FRAMES - 2
    base = EditablePortrait.load(run.canonical)
    edited = base.load_edit(run.edits / "blue")
    for key in ("tri_id", "bary", "offset", "log_scales", "opacity_logits"):
        assert torch.equal(edited.gaussians[key], base.gaussians[key]), key
    assert not torch.equal(edited.gaussians["features"], base.gaussians["features"])
    before, after = base.render(), edited.render()
    outside = (base.render_person(list(range(FRAMES)))[1] == 0).expand_as(before)
    assert torch.equal(before[outside], after[outside])  # the background is the source, untouched
    assert (after - before).abs().amax() > 1e-3


def test_face_crop_is_pasted_back_where_it_came_from():
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 40), torch.linspace(0, 1, 60), indexing="ij")
    image = torch.stack([ys, xs, 0.5 + 0.5 * torch.sin(3 * xs + 2 * ys)])  # smooth: resampling keeps it
    alpha = torch.zeros(1, 40, 60)
    alpha[:, 5:35, 20:45] = 1
    box = (-4, 15, 36)  # reaches above the frame: padded, then cut off again when pasted
    patch = crop(image, box, 72)
    assert patch.shape == (3, 72, 72)
    weight = head_weight(alpha, box)
    assert weight[:, :, :12].abs().max() == 0 and weight[:, 20, 32] == 1
    assert torch.allclose(paste(image, patch, box, weight), image, atol=0.01)
    assert torch.equal(paste(image, torch.zeros(3, 72, 72), box, torch.zeros_like(weight)), image)


def soft_mark(landmarks: torch.Tensor, size: int) -> torch.Tensor:
    """H×W: a soft-edged round mark on the right cheek (image left), 1 inside, 0 far away."""
    centre = landmarks.mean(0) + torch.tensor([-6.0, 3.0])
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    r = ((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2).sqrt()
    return ((6.0 - r) / 2).clamp(0, 1)


def test_keyframe_lift_matches_the_true_paint_on_every_frame(clip16, asset):
    K, paint = 5, torch.tensor([0.9, 0.1, 0.8])
    mark = soft_mark(clip16.landmarks[K], SIZE)
    edited = clip16.clip.frames[K] * (1 - mark) + paint[:, None, None] * mark
    # the truth: each Gaussian the keyframe sees takes the paint in the share of it the mark covers
    probe = EditableAvatar(asset)
    made = probe.visibility(K, torch.ones(SIZE, SIZE))
    seen = made > LiftConfig.seen_threshold
    share = torch.where(seen, probe.visibility(K, mark) / made.clamp(min=1e-8), torch.zeros_like(made))
    rgb = torch.sigmoid(asset.gaussians["features"][:, :3])
    features = asset.gaussians["features"].clone()
    features[:, :3] = torch.logit((rgb + share.clamp(0, 1)[:, None] * (paint - rgb)).clamp(1e-3, 1 - 1e-3))
    truth = dataclasses.replace(asset, gaussians={**asset.gaussians, "features": features})

    avatar = EditableAvatar(asset)
    stats = lift_keyframe(avatar, K, edited, None, LiftConfig(), progress=False)
    assert stats["gaussians_painted"] < stats["gaussians_seen"] < len(seen)
    lifted, expected, before = avatar.to_asset().render(), truth.render(), asset.render()
    saw = torch.stack([coverage(probe, t, seen) for t in range(FRAMES)])[:, None]
    assert psnr(lifted, expected, (saw > 0.5).float()) >= 28
    assert psnr(lifted, before, (saw < 0.01).float()) >= 40  # where the keyframe saw nothing
    # the mark rides with the head: in the frame furthest from K it sits where the truth puts it
    far = (K + FRAMES // 2) % FRAMES
    on_mark = (coverage(probe, far, share > 0.5) > 0.5).float()[None, None]
    assert on_mark.sum() > 4
    assert psnr(lifted[far : far + 1], expected[far : far + 1], on_mark) >= 24
    assert psnr(lifted[far : far + 1], before[far : far + 1], on_mark) < 15


@pytest.mark.parametrize("mode", ["sds", "dds"])
def test_score_distillation_moves_features_and_decoder_only(asset, models, mode):
    request = DiffusionRequest(
        mode=mode,
        prompt="a statue",
        source_prompt="a person" if mode == "dds" else "",
        model=models["sd"],
        overrides={"steps": 3, "lr": 0.2, "lr_decoder": 0.05, "view_chance": 0.5},
        device="cpu",
    )
    edited, meta = asset.diffusion_edit(request, progress=False)
    assert meta["mode"] == mode and meta["config"]["steps"] == 3
    for key in ("tri_id", "bary", "offset", "quats_local", "log_scales", "opacity_logits"):
        assert torch.equal(edited.gaussians[key], asset.gaussians[key]), key
    assert not torch.equal(edited.gaussians["features"], asset.gaussians["features"])
    changed = [k for k, v in edited.decoder_state.items() if not torch.equal(v, asset.decoder_state[k])]
    assert changed and "colour" not in changed
    before, after = asset.render(), edited.render()
    alpha = asset.render_person(list(range(FRAMES)))[1]
    assert torch.equal(before[(alpha == 0).expand_as(before)], after[(alpha == 0).expand_as(after)])
    assert (after - before)[(alpha > 0.5).expand_as(after)].abs().mean() > 1e-3


def test_portrait_modes_refuse_what_they_cannot_do(asset, models):
    for request, words in [
        (DiffusionRequest(mode="img2img", prompt="x", model=models["sd"]), "does not apply to a portrait"),
        (DiffusionRequest(prompt="x", layers=[0], model=models["sd"]), "apply to 2D runs"),
        (DiffusionRequest(mode="sds", prompt="x", model=models["ip2p"]), "is not a text-to-image model"),
        (DiffusionRequest(mode="sds", prompt="x", overrides={"view_chance": 2}), "view_chance"),
    ]:
        with pytest.raises(UserError, match=words):
            asset.diffusion_edit(request, progress=False)


def gradient_magnitude(images: torch.Tensor) -> torch.Tensor:
    grey = images.mean(1, keepdim=True)
    dx = torch.nn.functional.pad(grey[..., :, 1:] - grey[..., :, :-1], (0, 1, 0, 0))
    dy = torch.nn.functional.pad(grey[..., 1:, :] - grey[..., :-1, :], (0, 0, 0, 1))
    return (dx**2 + dy**2).sqrt().expand(-1, 3, -1, -1)


def test_appearance_takes_the_reference_colour_statistics(asset, clip16):
    # a portrait in another palette, cut out by its alpha: the statistics come from the opaque pixels only
    frame, mask = clip16.clip.frames[7], clip16.clip.masks[7, :1]
    reference = torch.cat([0.8 * rotate_hue(frame) + 0.1, mask])
    edited, meta = asset.transfer_appearance(reference)
    frames = list(range(FRAMES))
    person, alpha = edited.render_person(frames)
    inside = (alpha > 0.5).expand_as(person)
    pixels = (person / alpha.clamp(min=1e-3)).permute(1, 0, 2, 3)[inside.permute(1, 0, 2, 3)].reshape(3, -1).T
    opaque = reference[:3].reshape(3, -1).T[mask.flatten() > 0.5]
    (mean, cov), (ref_mean, ref_cov) = colour_stats(pixels), colour_stats(opaque)
    assert (mean - ref_mean).abs().max() < 0.02, (mean, ref_mean)
    assert (cov - ref_cov).norm() / ref_cov.norm() < 0.1, (cov, ref_cov)
    original, _ = asset.render_person(frames)
    mask = (alpha > 0.5).float()
    assert ssim(gradient_magnitude(person), gradient_magnitude(original), mask) >= 0.8
    assert len(meta["colour_matrix"]) == 3


def fill_holes(mask: torch.Tensor) -> torch.Tensor:
    """H×W bool: `mask` with every region not connected to the border filled in."""
    outside = torch.zeros_like(mask)
    outside[0, :], outside[-1, :], outside[:, 0], outside[:, -1] = True, True, True, True
    outside &= ~mask
    while True:
        grown = torch.nn.functional.max_pool2d(outside.float()[None, None], 3, 1, 1)[0, 0] > 0
        grown &= ~mask
        if torch.equal(grown, outside):
            return ~outside
        outside = grown


def test_turned_views_show_the_whole_person(asset):
    frontal = asset.turned_person([3], [(0.0, 0.0)])[1][0, 0] > 0.5
    for yaw in (-30.0, 30.0):
        alpha = asset.turned_person([3], [(yaw, 0.0)])[1][0, 0]
        mask = alpha > 0.5
        assert mask.sum() >= 0.5 * frontal.sum(), yaw
        holes = fill_holes(mask) & ~mask
        assert holes.sum() <= 0.01 * mask.sum(), (yaw, int(holes.sum()))
    orbit = asset.render_turned(orbit=30.0)
    assert orbit.shape == (FRAMES, 3, SIZE, SIZE)
    assert torch.allclose(
        asset.render_turned([3], view=(0.0, 0.0))[0], asset.render_person([3])[0][0], atol=1e-6
    )


def test_a_turn_pivots_on_the_head(asset):
    tr, body = asset.tracking, asset.get_body()
    camera = tr.camera(2)
    centre = head_centre(body, tr, 2)
    turned = turned_camera(camera, centre, 25.0, -10.0)
    pivot = project_points(centre[None], camera.viewmat, camera.K)
    assert torch.allclose(project_points(centre[None], turned.viewmat, turned.K), pivot, atol=1e-4)
    eye = lambda vm: -vm[:3, :3].T @ vm[:3, 3]  # noqa: E731
    assert torch.isclose((eye(turned.viewmat) - centre).norm(), (eye(camera.viewmat) - centre).norm())
    assert (eye(turned.viewmat) - eye(camera.viewmat)).norm() > 0.1
    assert torch.equal(turned_camera(camera, centre, 0.0, 0.0).viewmat, camera.viewmat)


def test_an_edit_from_another_run_is_refused_in_one_line(portrait_run, asset, tmp_path):
    folder = tmp_path / "other"
    folder.mkdir()
    fewer = {k: v[:-5] for k, v in asset.gaussians.items()}
    dataclasses.replace(asset, gaussians=fewer).save_edit(folder)
    with pytest.raises(UserError, match="does not match this run's Gaussians"):
        asset.load_edit(folder)
    asset.save_edit(folder)
    assert torch.equal(asset.load_edit(folder).render_person([1])[0], asset.render_person([1])[0])


def test_paint_through_the_cli_writes_only_its_edit_folder(portrait_run, clip16, tmp_path):
    run = portrait_run
    before = sorted(p.relative_to(run.path) for p in run.path.rglob("*"))
    painted = clip16.clip.frames[4].clone()
    painted[:, 20:26, 24:30] = 0.0
    write_image(tmp_path / "painted.png", painted)
    argv = ["edit", str(run.path), "--keyframe", "4", "--image", str(tmp_path / "painted.png")]
    assert main([*argv, "--set", "steps=30", "--set", "lr=0.3"]) == 0
    after = sorted(p.relative_to(run.path) for p in run.path.rglob("*"))
    assert [p for p in after if p not in before and p.parts[0] != "edits"] == []
    assert (
        main(["render", str(run.path), "--edit", "keyframe", "--frame", "4", "-o", str(tmp_path / "e.png")])
        == 0
    )
    assert read_image(tmp_path / "e.png")[:, 21:25, 25:29].mean() < painted[:, 21:25, 25:29].mean() + 0.25


def test_a_copy_with_other_gaussians_does_not_reuse_the_kept_render(asset):
    asset = dataclasses.replace(asset, keep_renders=True)  # as a fit's bake
    full = asset.render()  # keeps every frame's person render for the next full render
    features = asset.gaussians["features"].clone()
    features[:, :3] += 2.0
    brighter = dataclasses.replace(asset, gaussians={**asset.gaussians, "features": features})
    assert brighter.render().mean() > full.mean() + 0.01
    assert torch.allclose(asset.render(), full, atol=2e-3)  # the kept render is float16


def test_chunks_after_a_full_render_reuse_it(asset, monkeypatch):
    asset = dataclasses.replace(asset, keep_renders=True)  # as a fit's bake
    full = asset.render()
    calls = []
    monkeypatch.setattr(type(asset), "render_person", lambda self, ids: calls.append(ids))
    assert torch.allclose(asset.render([1, 3]), full[[1, 3]], atol=2e-3)  # a finish step's chunk
    assert calls == []


def test_a_loaded_asset_streams_its_footage_and_keeps_no_render(asset, tmp_path, monkeypatch):
    """`render` of a saved portrait reads its uint8 footage from the mapped file a chunk at a time and
    renders each frame once, keeping nothing: a long clip's render holds a chunk, not every frame."""
    asset.save(tmp_path / "canonical")
    loaded = EditablePortrait.load(tmp_path / "canonical", body=asset.body)
    footage = loaded.background
    assert footage.frames.dtype == torch.uint8 and footage.storage is not None
    want = (asset.background.uint8().float() / 255)[[1, 3]]
    assert torch.equal(footage[[1, 3]], want) and torch.equal(footage[3], want[1])
    full = loaded.render()
    assert torch.allclose(full, asset.render(), atol=0.5 / 255 + 1e-6)  # the footage is stored in 8 bits
    rendered = []
    person = type(loaded).render_person
    monkeypatch.setattr(
        type(loaded), "render_person", lambda self, ids: rendered.append(ids) or person(self, ids)
    )
    assert torch.equal(loaded.render([1, 3]), full[[1, 3]])
    assert rendered == [[1, 3]] and loaded._person is None
    bad = shutil.copytree(tmp_path / "canonical", tmp_path / "bad")  # the loaded one stays mapped
    save_file({"frames": asset.background.frames}, str(bad / "background.safetensors"))
    with pytest.raises(CorruptFile, match="not T×3×H×W uint8"):  # float frames: not what a bake writes
        EditablePortrait.load(bad)


def test_a_stopped_idu_edit_resumes_bit_for_bit(portrait_run, models, capsys, monkeypatch):
    """Ctrl-C in step 6 of 8 (after the second re-edit) keeps the edited dataset, the re-edit order and
    the counts with the parameters: the resumed edit is the one that ran through, bit for bit."""
    from canon_edit_representations.portrait import idu

    def argv(name: str, *extra: str) -> list[str]:
        return [
            "edit", str(portrait_run.path), "--instruction", "make it blue", "--model", models["ip2p"],
            "--name", name, "--device", "cpu", "--set", "steps=8", "--set", "keyframe_every=4",
            "--set", "face_crop=false", *extra,
        ]  # fmt: skip

    assert main(argv("through")) == 0
    ssim = idu.ssim_loss
    monkeypatch.setattr(idu, "ssim_loss", ctrl_c_at(ssim, 6))  # once a step
    capsys.readouterr()
    assert main(argv("part")) == 2
    assert "edit 'part' stopped at step 6 of 8" in capsys.readouterr().err
    monkeypatch.setattr(idu, "ssim_loss", ssim)
    assert main(argv("part", "--resume")) == 0
    assert "resuming edit 'part' at step 6 of 8" in capsys.readouterr().err
    base = EditablePortrait.load(portrait_run.canonical)
    through, part = (base.load_edit(portrait_run.edits / n) for n in ("through", "part"))
    assert torch.equal(through.gaussians["features"], part.gaussians["features"])
    a, b = through.decoder_state, part.decoder_state
    assert all(torch.equal(a[k], b[k]) for k in a)
    meta = [json.loads((portrait_run.edits / n / "edit.json").read_text()) for n in ("through", "part")]
    assert meta[0]["editor_calls"] == meta[1]["editor_calls"] == 2
    assert not (portrait_run.edits / ".part.partial.safetensors").exists()
