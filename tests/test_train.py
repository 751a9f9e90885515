"""The shared fitting loop: NaN guard keeps the last good checkpoint, time budget, LR schedule."""

from __future__ import annotations

import json
import time

import pytest
import torch
from torch import nn

from canon_edit.cli import phrase
from canon_edit.errors import TrainingDiverged
from canon_edit.run import RunFolder
from canon_edit.train import TrainConfig, lr_factor, optimise


class Toy(nn.Module):
    """Fits one scalar to 3; its loss turns NaN at `nan_at` (None = never)."""

    def __init__(self, nan_at: int | None = None, delay: float = 0.0):
        super().__init__()
        self.x = nn.Parameter(torch.zeros(()))
        self.nan_at, self.delay = nan_at, delay

    def param_groups(self):
        return [{"params": [self.x], "lr": 0.5}]

    def sample(self, step, generator):
        return {"step": torch.tensor(step)}

    def losses(self, batch, step):
        time.sleep(self.delay)
        loss = (self.x - 3) ** 2
        if self.nan_at is not None and step >= self.nan_at:
            loss = loss * float("nan")
        return {"mse": loss}, {"mse": float(loss.detach())}


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path):
    run = RunFolder.create(tmp_path / "run")
    cfg = TrainConfig(steps=100, checkpoint_every=10)
    with pytest.raises(TrainingDiverged, match=r"non-finite at step 25.*step 20.*resume the fit") as error:
        optimise(Toy(nan_at=25), run, cfg, show_progress=False)
    # the CLI words the fix as flags and the command to run
    assert phrase(error.value).endswith(
        f"(--set lr_...=VALUE) and continue with 'canon-edit fit --resume -o {run.path}'"
    )
    last = run.checkpoint_paths()[-1]
    assert json.loads(last.read_text())["step"] == 20
    resumed = Toy()
    optimise(resumed, run, cfg, resume=True, show_progress=False)  # continues from step 20 without the fault
    assert abs(resumed.x.item() - 3) < 0.05


def test_time_budget_stops_early_and_still_anneals(tmp_path):
    run = RunFolder.create(tmp_path / "run")
    cfg = TrainConfig(steps=10_000, time_budget=0.5, checkpoint_every=1000)
    done = optimise(Toy(delay=0.005), run, cfg, show_progress=False)
    assert 20 < done < 10_000
    assert json.loads(run.checkpoint_paths()[-1].read_text())["step"] == done


def test_lr_schedule_warms_up_then_decays_to_the_final_fraction():
    cfg = TrainConfig(steps=1000, warmup_steps=50, final_lr_fraction=0.1)
    assert lr_factor(0, cfg, 1000) == pytest.approx(1 / 50)
    assert lr_factor(50, cfg, 1000) == pytest.approx(1.0, abs=0.01)
    assert lr_factor(1000, cfg, 1000) == pytest.approx(0.1)
