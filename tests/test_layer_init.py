"""The layers' initial affines are computed once per run and read back by `fit --resume`."""

from __future__ import annotations

import pytest
import torch

from canon_edit.fitting import fit_clip, resume_fit
from canon_edit.procedural import make_clip
from canon_edit_representations import fields
from canon_edit_representations.layer_init import INIT_FILE, cached_inits


def _inits(frames: int, value: float) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    return [(torch.full((frames, 2, 3), value), torch.tensor([-1.0, -0.5]), torch.tensor([1.0, 0.5]))]


def test_the_cache_holds_only_what_was_computed_for_its_key(tmp_path):
    path = tmp_path / INIT_FILE
    calls = []

    def compute(value: float, frames: int = 5):
        def run():
            calls.append(value)
            return _inits(frames, value)

        return run

    first = cached_inits(path, "a", 4, compute(1.0, 4))
    again = cached_inits(path, "a", 4, compute(2.0, 4))
    assert calls == [1.0] and all(torch.equal(x, y) for x, y in zip(first[0], again[0], strict=True))
    assert torch.equal(cached_inits(path, "b", 4, compute(3.0, 4))[0][0], _inits(4, 3.0)[0][0])
    assert torch.equal(cached_inits(path, "b", 5, compute(4.0))[0][0], _inits(5, 4.0)[0][0])  # 5 frames
    path.write_bytes(path.read_bytes()[:40])  # truncated: computed again and rewritten
    assert torch.equal(cached_inits(path, "b", 5, compute(5.0))[0][0], _inits(5, 5.0)[0][0])
    assert calls == [1.0, 3.0, 4.0, 5.0]
    assert torch.equal(cached_inits(path, "b", 5, compute(6.0))[0][0], _inits(5, 5.0)[0][0])
    assert cached_inits(path, "c", 5, compute(float("nan")))[0][0].isnan().all()  # stored, but
    assert cached_inits(path, "c", 5, compute(8.0))[0][0][0, 0, 0] == 8.0  # never read back
    assert cached_inits(None, "b", 5, compute(7.0))[0][0][0, 0, 0] == 7.0  # no run folder: nothing kept


def test_a_resumed_fit_reads_the_layer_init_back(tmp_path, monkeypatch):
    clip = make_clip(frames=6, height=32, width=48).clip
    overrides = {"train": {"steps": 4, "checkpoint_every": 2}, "patches": 8}
    run = fit_clip(
        clip, tmp_path / "run", "codef", preset="codef_demo", overrides=overrides, show_progress=False
    )
    assert (run.path / INIT_FILE).is_file()
    before = run.checkpoint_paths()[-1].with_suffix(".safetensors").read_bytes()

    def chained_again(*args, **kwargs):
        raise AssertionError("the resumed fit chained the affines again")

    monkeypatch.setattr(fields, "init_layer_affine", chained_again)
    resume_fit(run.path, show_progress=False)  # a finished run is finished again from the same state
    assert run.info()["status"] == "done"
    assert run.checkpoint_paths()[-1].with_suffix(".safetensors").read_bytes() == before
    (run.path / INIT_FILE).unlink()
    with pytest.raises(AssertionError, match="chained the affines again"):
        resume_fit(run.path, show_progress=False)
