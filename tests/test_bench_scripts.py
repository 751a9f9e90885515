"""The benchmark scripts run against the current API (they are not imported by anything else)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fit_quality_prints_one_json_line(clip_dir, tmp_path, capsys):
    figures = _load("fit_quality").main(
        ["--clip", str(clip_dir), "--size", "48", "--preset", "codef_demo", "--steps", "10",
         "--set", "patches=16", "--out", str(tmp_path / "run")]
    )  # fmt: skip
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(line) == json.loads(json.dumps(figures))
    assert figures["steps"] == 10 and figures["frames"] == 6 and figures["render_fps"] > 0
    # the textured sprite is the harder part of the procedural clip
    assert figures["psnr_background"] > figures["psnr"] > figures["psnr_foreground"] > 0


def test_canonical_figure_shows_source_reconstruction_and_every_texture(truth_run, tmp_path, capsys):
    figure = tmp_path / "fig.png"
    result = _load("canonical_figure").main([str(truth_run.path), str(truth_run.path), "--out", str(figure)])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["size"] == result["size"]
    from canon_edit.video import read_image

    image = read_image(figure)
    row = _load("canonical_figure").ROW
    assert image.shape[1] == 2 * row + _load("canonical_figure").GAP  # one row per run
    assert image.shape[2] > 3 * row  # source, reconstruction and two textures side by side


def test_demo_lift_prints_one_json_line(capsys):
    figures = _load("demo_lift").main(["--set", "train.steps=10", "--set", "patches=16"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(figures))
    assert figures["edit"] > 10 and figures["recon"] > 10  # scored against the truth, not left empty


def test_edit_consistency_on_the_true_canonical_keeps_the_checkerboard_on_the_sprite(truth_run, capsys):
    """The procedural truth as a run: its edit lands on the true sprite and nowhere else; one method only."""
    clip = truth_run.info()["clip"]["source"]
    figures = _load("edit_consistency").main(
        ["--clip", clip, "--codef-run", str(truth_run.path), "--methods", "codef"]
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(figures))
    assert "atlas" not in figures  # nothing was fitted for the method left out
    codef = figures["codef"]
    assert codef["on_mask"] >= 0.99 and codef["mask_hit_min"] >= 0.9, codef
    assert codef["edited_warp_error"] > codef["recon_warp_error"]  # the checkerboard's edges add to it
