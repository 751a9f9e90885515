"""The shared fitting loop: NaN guard keeps the last good checkpoint, time budget, LR schedule."""

from __future__ import annotations

import json
import time

import pytest
import torch
from torch import nn

from canon_edit.cli import phrase
from canon_edit.errors import TrainingDiverged, UserError
from canon_edit.fitting import config_of
from canon_edit.optim_state import regrouped
from canon_edit.representation import get_representation
from canon_edit.run import RunFolder
from canon_edit.train import TrainConfig, lr_factor, make_optimizer, optimise, plan_line, with_quality


class Toy(nn.Module):
    """Fits one scalar to 3; its loss turns NaN at `nan_at` (None = never)."""

    def __init__(self, nan_at: int | None = None, delay: float = 0.0):
        super().__init__()
        self.x = nn.Parameter(torch.zeros(()))
        self.nan_at, self.delay = nan_at, delay
        self.schedule_steps = 0  # the loop's plan, as the 2D forms' coarse-to-fine schedules read it

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


class Pair(nn.Module):
    """Two parameters in one Adam group, or (`split`) each in its own, as `lr_grid_background` does."""

    def __init__(self, split: bool = False, size: int = 2):
        super().__init__()
        self.a, self.b = nn.Parameter(torch.zeros(size)), nn.Parameter(torch.zeros(3))
        self.split = split

    def param_groups(self):
        if self.split:
            return [{"params": [self.a], "lr": 0.1}, {"params": [self.b], "lr": 0.1}]
        return [{"params": [self.a, self.b], "lr": 0.1}]


def _adam_steps(model: Pair, steps: int) -> torch.optim.Optimizer:
    opt = make_optimizer(model)
    for _ in range(steps):
        opt.zero_grad()
        ((model.a - 1) ** 2).sum().add(((model.b + 2) ** 2).sum()).backward()
        opt.step()
    return opt


def test_a_checkpoint_resumes_with_its_parameters_regrouped(tmp_path, capsys):
    """A learning rate given to part of a group on resume splits the group: the checkpoint still
    fits (the state follows the parameters' order); other parameters are still refused."""
    run = RunFolder.create(tmp_path / "run")
    fitted = Pair()
    saved = _adam_steps(fitted, 7)
    run.save_checkpoint(7, fitted, saved)
    for split in (True, False):
        resumed = Pair(split=split)
        opt = make_optimizer(resumed)
        assert run.load_checkpoint(resumed, opt)["step"] == 7
        assert [len(g["params"]) for g in opt.param_groups] == ([1, 1] if split else [2])
        torch.testing.assert_close(resumed.a.detach(), fitted.a.detach())
        torch.testing.assert_close(opt.state[resumed.b]["exp_avg_sq"], saved.state[fitted.b]["exp_avg_sq"])
    other = Pair(split=True, size=4)
    assert run.load_checkpoint(other, make_optimizer(other)) is None
    assert "does not fit this model" in capsys.readouterr().err
    with pytest.raises(ValueError, match="other parameters"):
        regrouped(saved.state_dict()["param_groups"], make_optimizer(other), saved.state_dict()["state"])


def test_time_budget_stops_early_and_still_anneals(tmp_path, capsys):
    run = RunFolder.create(tmp_path / "run")
    cfg = TrainConfig(steps=10_000, time_budget=0.5, checkpoint_every=1000)
    toy = Toy(delay=0.005)
    done = optimise(toy, run, cfg, show_progress=False)
    assert 20 < done < 10_000
    said = capsys.readouterr()
    assert f"time budget of 0.5s reached at step {done}" in said.err and said.out == ""
    assert json.loads(run.checkpoint_paths()[-1].read_text())["step"] == done
    # schedules that are fractions of the fit follow the steps the budget allowed, not the 10 000 asked
    assert done <= toy.schedule_steps <= done + 20


def test_a_budget_the_steps_fit_in_plans_no_step_past_them(tmp_path):
    """The plan is re-estimated every 20 steps; one at the last step planned a step more (the bar ended
    at 1440/1441 on a draft fit, and the schedules' last step was off by one)."""
    run = RunFolder.create(tmp_path / "run")
    toy = Toy()
    assert optimise(toy, run, TrainConfig(steps=40, time_budget=3600), show_progress=False) == 40
    assert toy.schedule_steps == 40


def _spent(run: RunFolder) -> tuple[int, float]:
    meta = json.loads(run.checkpoint_paths()[-1].read_text())
    return meta["step"], meta["fit_seconds"]


def test_a_time_budget_counts_the_whole_fit_across_resumes(tmp_path, capsys):
    """A fit stopped by its budget is not fitted again by --resume; one killed part-way spends only
    what is left, planning from the rate so far; a larger budget continues it."""
    run = RunFolder.create(tmp_path / "run")
    cfg = TrainConfig(steps=10_000, time_budget=0.6, checkpoint_every=1000)
    done = optimise(Toy(delay=0.005), run, cfg, show_progress=False)
    step, spent = _spent(run)
    assert step == done and 0.6 <= spent < 1.5
    assert optimise(Toy(delay=0.005), run, cfg, resume=True, show_progress=False) == done
    assert _spent(run) == (done, spent)  # the finished fit is only finished again (no new checkpoint)

    killed = RunFolder.create(tmp_path / "killed")  # as if killed a third of the way: 0.2 s of the 0.6 spent
    first = optimise(
        Toy(delay=0.005), killed, TrainConfig(steps=10_000, time_budget=0.2), show_progress=False
    )
    toy = Toy(delay=0.005)
    resumed = optimise(toy, killed, cfg, resume=True, show_progress=True)
    assert f"resuming at step {first}:" in capsys.readouterr().err
    step, spent = _spent(killed)
    assert step == resumed and 0.6 <= spent < 1.0 and resumed > first
    assert resumed <= toy.schedule_steps <= resumed + 20

    # a checkpoint from before `fit_seconds` (or a damaged one): a finished run's record counts
    last = run.checkpoint_paths()[-1]
    meta = json.loads(last.read_text())
    last.write_text(json.dumps(meta | {"fit_seconds": "n/a"}))
    run.write_info(status="done", steps=done, fit_seconds=3.5)
    assert optimise(Toy(delay=0.005), run, cfg, resume=True, show_progress=False) == done
    assert _spent(run) == (done, 3.5)  # kept with the checkpoint: this pass rewrites run.json
    last.write_text(json.dumps(meta | {"fit_seconds": "n/a"}))
    run.write_info(steps=None)  # not the finished step: the budget starts anew
    assert optimise(Toy(delay=0.005), run, cfg, resume=True, show_progress=False) > done
    done = _spent(run)[0]

    longer = optimise(Toy(delay=0.005), run, TrainConfig(steps=10_000, time_budget=1.2), resume=True,
                      show_progress=False)  # fmt: skip
    step, spent = _spent(run)
    assert step == longer > done and 1.2 <= spent < 2.0


def test_quality_is_a_time_and_a_step_cap_known_before_the_fit():
    cfg = with_quality(TrainConfig(steps=4000, quality="draft", reference_rate=10.0))
    assert (cfg.time_budget, cfg.steps) == (120.0, 1200)
    assert plan_line(cfg).startswith("quality 'draft': fitting for up to 2 min and 1200 steps")
    assert plan_line(cfg, 1.26e9).endswith(
        "(fewer on a busy or slower machine); about 1.3 GB of memory at its peak"
    )
    assert plan_line(TrainConfig(steps=30)) == "fitting for 30 steps"
    best = with_quality(TrainConfig(steps=4000, quality="best"))  # no measured rate: the steps stay
    assert (best.time_budget, best.steps) == (1800.0, 4000)
    assert with_quality(TrainConfig(steps=7)) == TrainConfig(steps=7)
    with pytest.raises(UserError, match="train.quality must be one of draft, default, best"):
        TrainConfig(quality="fast").validate()


def test_lr_schedule_warms_up_then_decays_to_the_final_fraction():
    cfg = TrainConfig(steps=1000, warmup_steps=50, final_lr_fraction=0.1)
    assert lr_factor(0, cfg, 1000) == pytest.approx(1 / 50)
    assert lr_factor(50, cfg, 1000) == pytest.approx(1.0, abs=0.01)
    assert lr_factor(1000, cfg, 1000) == pytest.approx(0.1)


def test_a_plain_fit_runs_to_the_default_quality_and_explicit_steps_replace_it():
    codef = get_representation("codef")
    plain = config_of(codef, None, None).train
    assert (plain.quality, plain.time_budget) == ("default", 600.0)
    assert plain.steps == round(plain.reference_rate * 600)
    stepped = config_of(codef, None, {"train": {"steps": 50}}).train
    assert (stepped.quality, stepped.steps, stepped.time_budget) == ("", 50, 0.0)
    drafted = config_of(codef, None, {"train": {"quality": "draft"}}).train
    assert drafted.time_budget == 120.0
    assert config_of(codef, "codef_demo", None).train.time_budget == 0.0  # a step-count preset stays one


def test_fused_adam_takes_the_steps_of_the_per_op_adam():
    """The loop's optimizer is fused on the CPU (a sixth of the per-op Adam's time on an atlas's grids)
    and must step as the per-op reference does, group learning rates included."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    model.param_groups = lambda: [  # two groups at their own rates, as the fields' grids and MLPs
        {"params": list(model[0].parameters()), "lr": 1e-2},
        {"params": list(model[2].parameters()), "lr": 3e-3},
    ]
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    fused = make_optimizer(model)
    assert fused.defaults["fused"] and not fused.defaults["foreach"]
    x, y = torch.randn(64, 8), torch.randn(64, 3)

    def fit(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
        for _ in range(50):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        return {k: v.clone() for k, v in model.state_dict().items()}

    after = fit(fused)
    model.load_state_dict(reference)
    groups = model.param_groups()
    per_op = torch.optim.Adam(groups, betas=(0.9, 0.99), eps=1e-15, foreach=True)
    for k, v in fit(per_op).items():
        torch.testing.assert_close(after[k], v, atol=1e-5, rtol=1e-5)
        assert not torch.equal(v, reference[k])
