"""What a run folder or model file from someone else cannot make canon-edit do, and missing extras.

No downloads without permission, no executable named by a run's config, no unpickling of model or
tracking files; a missing optional package is one line naming the extra to install.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from huggingface_hub import constants as hub_constants

from canon_edit.config import from_dict
from canon_edit.errors import UserError
from canon_edit.extras import require
from canon_edit.guidance import models
from canon_edit.run import RunFolder
from canon_edit_representations.portrait.body import AnnyBody, SMPLXBody, find_smplx_file
from canon_edit_representations.portrait.config import PortraitConfig
from canon_edit_representations.portrait.import_tracking import import_portraitgen

HUB_ID = "nobody/not-cached"


class Payload:
    """Unpickling it creates the directory `marker`: a stand-in for code a crafted pickle runs."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def one_line(error: pytest.ExceptionInfo[UserError]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.fixture
def online(monkeypatch) -> list[tuple]:
    """HF_HUB_OFFLINE and the download permission unset; every socket connection is recorded, not made."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv(models.ALLOW_DOWNLOAD_ENV, raising=False)
    connections: list[tuple] = []

    def refuse(self, address, *args, **kwargs):
        connections.append(address)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return connections


class FakeLoader:
    """A hub loader that misses the local cache and 'downloads' when allowed to."""

    def __init__(self) -> None:
        self.calls: list[bool] = []

    def __call__(self, source: str, local_files_only: bool, **kwargs) -> str:
        self.calls.append(local_files_only)
        if local_files_only:
            raise OSError(f"{source} is not in the cache")
        return f"downloaded {source}"


# --- downloads only with permission -----------------------------------------------------------------


def test_uncached_hub_id_is_not_downloaded_without_permission(online, monkeypatch) -> None:
    monkeypatch.setattr(models, "hub_reachable", lambda: pytest.fail("the hub was probed"))
    loader = FakeLoader()
    with pytest.raises(UserError) as err:
        models.load_part(loader, HUB_ID)
    message = one_line(err)
    assert loader.calls == [True]  # only the cache was read
    assert HUB_ID in message and "not in the local Hugging Face cache" in message
    assert f"huggingface-cli download {HUB_ID} --local-dir /path/to/local/folder" in message
    assert "--model /path/to/local/folder" in message
    assert "--allow-download" in message and f"{models.ALLOW_DOWNLOAD_ENV}=1" in message
    # the real loaders, through load_model: the same line, and not one connection attempted
    with pytest.raises(UserError) as err:
        models.load_model(HUB_ID, device="cpu")
    assert "--allow-download" in one_line(err) and online == []


def test_allow_download_fetches_an_uncached_hub_id(online, monkeypatch) -> None:
    monkeypatch.setattr(models, "hub_reachable", lambda: True)
    loader = FakeLoader()
    assert models.load_part(loader, HUB_ID, allow_download=True) == f"downloaded {HUB_ID}"
    assert loader.calls == [True, False]  # the cache first, then the download


def test_allow_download_env_fetches_unless_offline(online, monkeypatch) -> None:
    monkeypatch.setattr(models, "hub_reachable", lambda: True)
    monkeypatch.setenv(models.ALLOW_DOWNLOAD_ENV, "1")
    loader = FakeLoader()
    assert models.load_part(loader, HUB_ID) == f"downloaded {HUB_ID}"
    assert loader.calls == [True, False]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # HF_HUB_OFFLINE wins over the permission
    loader = FakeLoader()
    with pytest.raises(UserError, match="HF_HUB_OFFLINE is set") as err:
        models.load_part(loader, HUB_ID)
    one_line(err)
    assert loader.calls == [True]


def test_permission_is_refused_at_once_when_the_hub_is_unreachable(online, monkeypatch) -> None:
    monkeypatch.setattr(models, "hub_reachable", lambda: False)
    loader = FakeLoader()
    with pytest.raises(UserError, match="the hub cannot be reached") as err:
        models.load_part(loader, HUB_ID, allow_download=True)
    one_line(err)
    assert loader.calls == [True]


def test_load_model_passes_the_permission_to_every_part(tmp_path, monkeypatch) -> None:
    from tiny_diffusion import save_tiny_pipeline

    folder = str(save_tiny_pipeline(tmp_path / "sd", "sd"))
    tiny_vae = str(save_tiny_pipeline(tmp_path / "taesd", "taesd"))
    controlnet = str(save_tiny_pipeline(tmp_path / "controlnet", "controlnet"))
    seen: list[bool] = []
    real = models.load_part

    def spy(*args, allow_download: bool = False, **kwargs):
        seen.append(allow_download)
        return real(*args, allow_download=allow_download, **kwargs)

    monkeypatch.setattr(models, "load_part", spy)
    options = models.LoadOptions(tiny_vae=tiny_vae)
    models.load_model(folder, device="cpu", options=options, controlnet=controlnet)
    assert seen == [False] * 7  # tokenizer, text encoder, UNet, VAE, scheduler, tiny VAE, ControlNet
    seen.clear()
    models.load_model(folder, device="cpu", options=options, controlnet=controlnet, allow_download=True)
    assert seen == [True] * 7


# --- missing extras -----------------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["diffusers", "transformers"])
def test_missing_diffusion_extra_is_one_line(monkeypatch, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(UserError) as err:
        models.load_model(HUB_ID, device="cpu")
    assert one_line(err) == (
        f"a diffusion edit needs the {module} package; install the diffusion extra: "
        "pip install 'canon-edit[diffusion]'"
    )


def test_missing_portrait_extra_is_one_line(monkeypatch, smplx_dir) -> None:
    monkeypatch.setitem(sys.modules, "smplx", None)
    monkeypatch.setitem(sys.modules, "anny", None)
    with pytest.raises(UserError) as err:
        SMPLXBody(smplx_dir)
    assert one_line(err).startswith("--body smplx needs the smplx package")
    with pytest.raises(UserError) as err:
        AnnyBody()
    assert one_line(err) == (
        "--body anny needs the anny package; install the portrait extra: pip install 'canon-edit[portrait]'"
    )


def test_require_names_a_broken_dependency(tmp_path, monkeypatch) -> None:
    (tmp_path / "half_installed.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError) as err:
        require("half_installed", "viewer", "the viewer")
    message = one_line(err)
    assert "half_installed package, which cannot be imported" in message
    assert "no_such_dependency_xyz" in message and "pip install 'canon-edit[viewer]'" in message
    assert require("json", "none", "x") is sys.modules["json"]


# --- the detector interpreter ---------------------------------------------------------------------------


def test_detector_interpreter_never_comes_from_the_config(tmp_path, monkeypatch, smplx_dir) -> None:
    assert "detector_python" not in {f.name for f in dataclasses.fields(PortraitConfig)}
    assert PortraitConfig.LEGACY_KEYS == ("detector_python",)
    with pytest.raises(UserError, match="unknown config option 'detector_python'"):
        from_dict(PortraitConfig, {"detector_python": str(tmp_path / "evil")})
    # prepare asks the detector without naming an interpreter (detect_clip falls back to the env var)
    from canon_edit_representations.portrait import detect
    from canon_edit_representations.portrait.prepare import prepare_portrait

    calls: list[dict] = []

    def spy(frames, **kwargs):
        calls.append(kwargs)
        raise UserError("stop here")

    monkeypatch.setattr(detect, "detect_clip", spy)
    cfg = from_dict(PortraitConfig, {"body": "smplx", "body_model_dir": str(smplx_dir)})
    clip = SimpleNamespace(frames=torch.zeros(2, 3, 8, 8), T=2, masks=None)
    with pytest.raises(UserError, match="stop here"):
        prepare_portrait(clip, cfg, RunFolder.create(tmp_path / "run"), show_progress=False)
    assert len(calls) == 1 and calls[0].get("python") is None


# --- no unpickling of model and tracking files ------------------------------------------------------


def test_smplx_file_with_a_pickled_object_loads_without_running_it(tmp_path, smplx_dir, body) -> None:
    marker = tmp_path / "pwned"
    arrays = dict(np.load(smplx_dir / "SMPLX_NEUTRAL.npz"))
    folder = tmp_path / "model"
    folder.mkdir()
    payload = np.empty(1, dtype=object)
    payload[0] = Payload(marker)
    np.savez(folder / "SMPLX_NEUTRAL.npz", **arrays, joint2num=payload)

    loaded = SMPLXBody(folder)
    assert not marker.exists()
    gen = torch.Generator().manual_seed(0)
    params = body.zero_params(2)
    params["pose"] = 0.2 * torch.randn(params["pose"].shape, generator=gen)
    params["expression"] = torch.randn(params["expression"].shape, generator=gen)
    with torch.no_grad():
        assert torch.equal(loaded(**params).vertices, body(**params).vertices)
    # the payload is live: smplx's own load (allow_pickle=True) would have run it
    np.load(folder / "SMPLX_NEUTRAL.npz", allow_pickle=True)["joint2num"]
    assert marker.is_dir()


def test_smplx_pickle_files_are_refused(tmp_path) -> None:
    (tmp_path / "SMPLX_NEUTRAL.pkl").write_bytes(b"\x80\x04N.")
    for model_dir in (tmp_path, tmp_path / "SMPLX_NEUTRAL.pkl"):
        with pytest.raises(UserError) as err:
            find_smplx_file(model_dir)
        message = one_line(err)
        assert "SMPLX_NEUTRAL.pkl is a Python pickle" in message and "SMPLX_NEUTRAL.npz" in message


def test_tracking_file_with_a_malicious_pickle_is_refused(tmp_path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "smplx_track.pth"
    torch.save({"body_pose": np.zeros((2, 63), np.float32), "extra": Payload(marker)}, path)
    with pytest.raises(UserError) as err:
        import_portraitgen(path, 2)
    message = one_line(err)
    assert "holds Python objects" in message and "does not unpickle" in message
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is live: a plain torch.load runs it
    assert marker.is_dir()
