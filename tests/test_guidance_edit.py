"""Diffusion edits end to end through the CLI, with tiny random-weight models saved to disk and
loaded by path; tiling; the one-line missing-weights error; mask-local edits bit for bit."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from interrupts import ctrl_c_at
from tiny_diffusion import save_tiny_pipeline

from canon_edit.canonical import CanonicalVideo
from canon_edit.cli import main
from canon_edit.edit.store import load_edit
from canon_edit.guidance import models as models_module
from canon_edit.guidance.models import load_model
from canon_edit.guidance.tiles import blend, feather, tile_boxes, tile_starts, working_size
from canon_edit.video import write_image


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("models")
    return {
        kind: str(save_tiny_pipeline(root / kind, kind)) for kind in ("sd", "ip2p", "controlnet", "taesd")
    }


def _original(run) -> list[torch.Tensor]:
    return CanonicalVideo.load(run.canonical).textures()


def _edit(run, models: dict[str, str], mode: str, name: str, *extra: str) -> list[torch.Tensor]:
    text = ["--instruction", "make it origami"] if mode == "ip2p" else ["--prompt", "an origami swan"]
    argv = [
        "edit",
        str(run.path),
        *text,
        "--mode",
        mode,
        "--model",
        models["ip2p" if mode == "ip2p" else "sd"],
        "--name",
        name,
        "--device",
        "cpu",
        "--set",
        "steps=3",
        *extra,
    ]
    assert main(argv) == 0
    assert (run.edits / name / "video.mp4").is_file()
    return load_edit(run, name)


# --- tiles ---------------------------------------------------------------------------------------------


def test_tiles_cover_and_spread_evenly() -> None:
    assert tile_starts(32, 32, 8) == [0]
    assert tile_starts(56, 32, 8) == [0, 24]
    assert tile_starts(58, 32, 8) == [0, 13, 26]  # two tiles would share only 6
    starts = tile_starts(200, 64, 16)
    assert starts[0] == 0 and starts[-1] == 200 - 64
    assert all(b - a <= 64 - 16 for a, b in zip(starts, starts[1:], strict=False))
    assert working_size(44, 44, 64, 2) == (64, 64)
    assert working_size(70, 116, 64, 8) == (72, 120)
    assert working_size(600, 1000, 512, 8) == (600, 1000)


def test_feathered_blend_is_a_partition_of_unity() -> None:
    image = torch.rand(1, 3, 70, 123)
    boxes = tile_boxes(70, 123, 32, 8)
    assert len(boxes) > 4
    assert torch.allclose(
        blend(((image[..., y0:y1, x0:x1], (y0, x0, y1, x1)) for y0, x0, y1, x1 in boxes), (70, 123), 8),
        image,
        atol=1e-6,
    )
    w = feather(32, 32, 8)
    assert w.min() > 0 and w[16, 16] == 1 and w[0, 16] < w[4, 16] < w[8, 16]


# --- loading -------------------------------------------------------------------------------------------


def test_loads_saved_pipelines_by_path(models: dict[str, str]) -> None:
    sd = load_model(models["sd"], device="cpu", controlnet=models["controlnet"])
    assert not sd.instruct and sd.controlnet is not None
    assert sd.resolution == 64 and sd.vae_factor == 2 and sd.tokenizer.model_max_length == 77
    assert all(not p.requires_grad for p in sd.unet.parameters())
    assert load_model(models["ip2p"], device="cpu").instruct


@pytest.mark.parametrize("model", ["/nonexistent", "nobody/no-such-model", "unreachable", "empty"])
def test_missing_weights_is_one_line(truth_run, tmp_path, capsys, monkeypatch, model: str) -> None:
    if model == "empty":
        model = str(tmp_path / "empty")
        Path(model).mkdir()
    if model == "unreachable":  # online mode, no network: fail at once instead of minutes of retries
        model = "nobody/not-cached"
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(models_module, "hub_reachable", lambda: False)
        monkeypatch.setenv(models_module.ALLOW_DOWNLOAD_ENV, "1")  # allowed, so the probe is what refuses
    capsys.readouterr()
    assert main(["edit", str(truth_run.path), "--prompt", "a swan", "--model", model, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and model in err and "--model /path/to/local/folder" in err


def test_pickled_weights_are_refused_unread(truth_run, models, tmp_path, capsys, monkeypatch) -> None:
    """A model folder whose UNet is a .bin only: diffusers would unpickle it; canon-edit names the file."""
    import shutil

    from diffusers import UNet2DConditionModel

    folder = tmp_path / "pickled"
    shutil.copytree(models["sd"], folder)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    shutil.rmtree(folder / "unet")
    unet.save_pretrained(folder / "unet", safe_serialization=False)
    assert (folder / "unet" / "diffusion_pytorch_model.bin").is_file()

    def unpickle(*args, **kwargs):
        raise AssertionError("a pickle was read")

    monkeypatch.setattr(torch, "load", unpickle)
    capsys.readouterr()
    argv = ["edit", str(truth_run.path), "--prompt", "a swan", "--model", str(folder), "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unet" in err and "pickle" in err and "safe_serialization=True" in err
    assert not (truth_run.edits / "sds").exists()


def test_model_kind_must_match_mode(truth_run, models: dict[str, str], capsys) -> None:
    argv = ["edit", str(truth_run.path), "--prompt", "a swan", "--mode", "img2img", "--model", models["ip2p"]]
    assert main([*argv, "--device", "cpu"]) == 2
    assert "InstructPix2Pix" in capsys.readouterr().err


# --- modes end to end ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["img2img", "ip2p", "sds", "dds"])
def test_mode_changes_every_texture(truth_run, models: dict[str, str], mode: str) -> None:
    extra = ["--source-prompt", "a swan"] if mode == "dds" else []
    edited = _edit(truth_run, models, mode, mode, *extra)
    for new, old in zip(edited, _original(truth_run), strict=True):
        assert new.shape == old.shape and torch.isfinite(new).all()
        assert not torch.equal(new, old)


def test_img2img_with_controlnet_and_tiny_autoencoder(truth_run, models: dict[str, str]) -> None:
    edited = _edit(
        truth_run,
        models,
        "img2img",
        "cn",
        "--controlnet",
        models["controlnet"],
        "--set",
        f"load.tiny_vae={models['taesd']}",
        "--set",
        "strength=1.0",
    )
    assert all(not torch.equal(new, old) for new, old in zip(edited, _original(truth_run), strict=True))


def test_same_seed_same_result(truth_run, models: dict[str, str]) -> None:
    a = _edit(truth_run, models, "sds", "a", "--seed", "3")
    b = _edit(truth_run, models, "sds", "b", "--seed", "3")
    c = _edit(truth_run, models, "sds", "c", "--seed", "4")
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, z) for x, z in zip(a, c, strict=True))


@pytest.mark.parametrize("mode", ["img2img", "dds"])
def test_mask_local_edit_keeps_the_rest_bit_exact(
    truth_run, models: dict[str, str], tmp_path, mode: str
) -> None:
    original = _original(truth_run)
    _, h, w = original[0].shape
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[h // 4 : 3 * h // 4, w // 3 : 2 * w // 3] = True
    write_image(tmp_path / "mask.png", mask.float()[None].expand(3, -1, -1))
    extra = ["--set", "lr=0.2"] if mode == "dds" else []
    edited = _edit(
        truth_run, models, mode, "masked", "--layers", "0", "--mask", str(tmp_path / "mask.png"), *extra
    )
    assert torch.equal(edited[1], original[1])
    assert torch.equal(edited[0][:, ~mask], original[0][:, ~mask])
    assert not torch.equal(edited[0][:, mask], original[0][:, mask])


# --- checkpoints of long edits ---------------------------------------------------------------------------


def _sds(run, models, name: str, *extra: str, prompt: str = "an origami swan") -> list[str]:
    return [
        "edit", str(run.path), "--prompt", prompt, "--mode", "sds", "--model", models["sd"],
        "--name", name, "--device", "cpu", "--set", "steps=6", *extra,
    ]  # fmt: skip


def test_quiet_edits_show_no_progress_bar(truth_run, models, capsys) -> None:
    capsys.readouterr()
    assert main(_sds(truth_run, models, "shown")) == 0
    assert "sds: 100%" in capsys.readouterr().err  # tqdm's bar, on stderr
    assert main(_sds(truth_run, models, "hidden", "--quiet")) == 0
    err = capsys.readouterr().err
    assert "sds" not in err and "%|" not in err
    assert torch.equal(load_edit(truth_run, "shown")[0], load_edit(truth_run, "hidden")[0])


def test_a_stopped_sds_edit_resumes_bit_for_bit(truth_run, models, capsys, monkeypatch) -> None:
    """Ctrl-C stops after the step in flight and saves; a kill leaves the last periodic save; either
    resumes with --resume to the very textures of an edit that ran through."""
    from canon_edit.edit import checkpoint as checkpoint_module
    from canon_edit.guidance import distill as distill_module

    assert main(_sds(truth_run, models, "through")) == 0
    through = load_edit(truth_run, "through")
    partial = truth_run.edits / ".part.partial.safetensors"
    encode = distill_module.encode_images

    def killed_in_the_second_step(*args, **kwargs):
        killed_in_the_second_step.calls += 1
        if killed_in_the_second_step.calls == 2:
            raise RuntimeError("killed")
        return encode(*args, **kwargs)

    killed_in_the_second_step.calls = 0

    monkeypatch.setattr(distill_module, "encode_images", ctrl_c_at(encode, 3))  # once a step
    capsys.readouterr()
    assert main(_sds(truth_run, models, "part")) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "edit 'part' stopped at step 3 of 6" in err and "--resume" in err
    assert partial.is_file() and not (truth_run.edits / "part").exists()
    assert "part" not in [p.name for p in truth_run.edits.iterdir() if (p / "edit.json").exists()]

    assert main(_sds(truth_run, models, "part")) == 2  # neither resumed nor started over: refused
    err = capsys.readouterr().err.strip()
    assert "was stopped at step 3 of 6" in err and "--resume" in err and "--name part --force" in err
    assert main(_sds(truth_run, models, "part", "--resume", prompt="a paper swan")) == 2
    err = capsys.readouterr().err
    assert "was started with prompt='an origami swan'" in err and "--name part --force" in err

    # resumed from step 3, then killed in step 5 after a save at every step
    monkeypatch.setattr(checkpoint_module, "CHECKPOINT_SECONDS", 0.0)
    monkeypatch.setattr(distill_module, "encode_images", killed_in_the_second_step)
    with pytest.raises(RuntimeError, match="killed"):
        main(_sds(truth_run, models, "part", "--resume"))
    monkeypatch.setattr(distill_module, "encode_images", encode)
    assert main(_sds(truth_run, models, "part", "--resume")) == 0
    assert "resuming edit 'part' at step 4 of 6" in capsys.readouterr().err
    assert all(torch.equal(a, b) for a, b in zip(load_edit(truth_run, "part"), through, strict=True))
    assert not partial.exists(), "the checkpoint outlived its saved edit"
    assert main(_sds(truth_run, models, "again", "--resume")) == 2
    assert "no checkpoint to resume" in capsys.readouterr().err


def test_a_damaged_checkpoint_is_one_line_and_force_starts_over(truth_run, models, capsys) -> None:
    partial = truth_run.edits / ".x.partial.safetensors"
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken")
    capsys.readouterr()
    assert main(_sds(truth_run, models, "x", "--resume")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is corrupt" in err and "--name x --force" in err
    assert partial.exists(), "a refused resume removed the user's checkpoint"
    assert main(_sds(truth_run, models, "x", "--force")) == 0
    assert (truth_run.edits / "x" / "edit.json").is_file() and not partial.exists()
