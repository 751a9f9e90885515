"""The benchmark scripts run against the current API (they are not imported by anything else)."""

from __future__ import annotations

import importlib.util
import json
import tempfile
from pathlib import Path

import pytest
import torch

from canon_edit.representation import get_representation
from canon_edit.video import read_clip

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
    by_frame = figures["psnr_foreground_frames"]  # the pooled in-mask PSNR lies within its frames'
    assert by_frame["min"] <= figures["psnr_foreground"] <= by_frame["max"]
    assert 0 <= by_frame["worst_frame"] < 6
    again = _load("fit_quality").main(["--run", str(tmp_path / "run")])  # measured, not fitted again
    assert again["run"] == str(tmp_path / "run") and "seconds" not in again
    assert {k: again[k] for k in ("clip", "psnr", "steps", "sharpness")} == {
        k: figures[k] for k in ("clip", "psnr", "steps", "sharpness")
    }
    with pytest.raises(SystemExit) as exit_:
        _load("fit_quality").main(["--method", "codef"])
    assert exit_.value.code == 2


def test_canonical_figure_shows_source_reconstruction_and_every_texture(truth_run, tmp_path, capsys):
    figure = tmp_path / "fig.png"
    result = _load("canonical_figure").main([str(truth_run.path), str(truth_run.path), "--out", str(figure)])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["size"] == result["size"]
    from canon_edit.video import read_image

    image = read_image(figure)
    row = _load("canonical_figure").ROW
    assert image.shape[1] == 2 * row + _load("canonical_figure").GAP  # one row per run
    assert image.shape[2] > 4 * row  # source, reconstruction, error map and two textures side by side
    metrics = json.loads(truth_run.metrics.read_text())
    assert result["psnr"] == [pytest.approx(metrics["psnr"], abs=0.05)] * 2  # the fit's own figure


def test_error_map_is_each_pixels_rms_error_over_the_clip():
    """A known answer: +0.1 on a square in 2 of 4 frames is RMS 0.1·√(2/4) there and 0 elsewhere."""
    from canon_edit.canonical import CanonicalVideo, Layer
    from canon_edit.video import Clip
    from canon_edit_representations.motion import pixel_grid_ndc

    figure = _load("canonical_figure")
    image = torch.rand(3, 16, 24, generator=torch.Generator().manual_seed(0)) * 0.8
    uv = pixel_grid_ndc(16, 24).expand(4, -1, -1, -1).half()
    bake = CanonicalVideo(layers=[Layer(texture=image, uv=uv)])
    frames = bake.render().clamp(0, 1)
    frames[:2, :, 4:8, 10:14] += 0.1
    error = figure.error_map(bake, Clip(frames=frames, fps=30.0))
    inside = torch.zeros(16, 24, dtype=torch.bool)
    inside[4:8, 10:14] = True
    assert torch.allclose(error[inside], torch.full((16,), 0.1 * 0.5**0.5), atol=1e-4)
    assert error[~inside].max() < 1e-5
    assert figure.heat(error).shape == (3, 16, 24)


def test_demo_lift_prints_one_json_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    figures = _load("demo_lift").main(["--set", "train.steps=10", "--set", "patches=16"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(figures))
    assert figures["edit"] > 10 and figures["recon"] > 10  # scored against the truth, not left empty
    assert not list(tmp_path.iterdir())  # its run folder was a temporary one, removed


def test_edit_consistency_on_the_true_canonical_keeps_the_checkerboard_on_the_sprite(truth_run, capsys):
    """The procedural truth as a run: its edit lands on the true sprite and nowhere else; one method only."""
    clip = truth_run.info()["clip"]["source"]
    figures = _load("edit_consistency").main(
        ["--clip", clip, "--codef-run", str(truth_run.path), "--methods", "codef", "--without-residuals"]
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(figures))
    assert "atlas" not in figures  # nothing was fitted for the method left out
    codef = figures["codef"]
    assert codef["on_mask"] >= 0.99 and codef["mask_hit_min"] >= 0.9, codef
    assert codef["edited_warp_error"] > codef["recon_warp_error"]  # the checkerboard's edges add to it
    # the truth has no residuals: leaving them out changes no figure
    assert codef["without_residuals"] == {k: codef[k] for k in codef["without_residuals"]}


def test_without_residuals_leaves_out_shading_and_detail_only():
    from canon_edit.canonical import CanonicalVideo, Layer
    from canon_edit_representations.motion import pixel_grid_ndc

    uv = pixel_grid_ndc(4, 4).expand(2, -1, -1, -1).half()
    alpha = torch.full((2, 4, 4), 0.5, dtype=torch.float16)
    shading = torch.full((2, 4, 4, 3), 0.5, dtype=torch.float16)
    detail = torch.full((2, 4, 4, 3), 0.3, dtype=torch.float16)
    back = Layer(texture=torch.full((3, 4, 4), 0.2), uv=uv, shading=shading)
    front = Layer(texture=torch.full((3, 4, 4), 0.6), uv=uv, alpha=alpha, detail=detail)
    bake = CanonicalVideo(layers=[back, front], fps=12.0)
    bare = _load("edit_consistency").without_residuals(bake)
    assert bare.fps == 12.0 and bare.layers[1].alpha is alpha
    assert torch.allclose(bake.render(), torch.full((2, 3, 4, 4), 0.5 * 0.1 + 0.5 * 0.9), atol=1e-3)
    assert torch.allclose(bare.render(), torch.full((2, 3, 4, 4), 0.5 * 0.2 + 0.5 * 0.6), atol=1e-3)


def test_alpha_regions_split_the_error_by_mask_and_fitted_foreground():
    """A known answer: the foreground covers columns 0-3, the mask 2-5, errors of 0.1 and 0.01 placed."""
    from canon_edit.canonical import CanonicalVideo, Layer
    from canon_edit_representations.motion import pixel_grid_ndc

    uv = pixel_grid_ndc(8, 8).expand(2, -1, -1, -1).half()
    alpha = torch.zeros(2, 8, 8, dtype=torch.float16)
    alpha[..., :4] = 1
    flat = torch.full((3, 8, 8), 0.5)
    bake = CanonicalVideo(layers=[Layer(texture=flat, uv=uv), Layer(texture=flat * 0.4, uv=uv, alpha=alpha)])
    frames = bake.render().clamp(0, 1)
    frames[..., 2:4] += 0.1  # held: inside the mask, shown by the foreground
    frames[..., 6:] += 0.01  # clear: outside both
    masks = torch.zeros(2, 8, 8)
    masks[..., 2:6] = 1

    class Stored:  # the two reads alpha_regions makes of a StoredClip
        def read(self, start, stop):
            return frames[start:stop]

        def read_foreground(self, start, stop):
            return masks[start:stop]

    regions = _load("fit_quality").alpha_regions(bake, Stored())
    assert {k: v["share"] for k, v in regions.items()} == dict.fromkeys(
        ("clear", "leak", "held", "lost"), 0.25
    )
    assert regions["held"]["psnr"] == pytest.approx(20.0, abs=0.01)
    assert regions["clear"]["psnr"] == pytest.approx(40.0, abs=0.01)
    assert regions["leak"]["psnr"] == regions["lost"]["psnr"] == float("inf")
    assert _load("fit_quality").alpha_regions(CanonicalVideo(layers=bake.layers[:1]), Stored()) is None


def test_foreground_psnr_frame_by_frame_finds_the_worst_frame():
    """A known answer: in-mask errors of 0.01, 0.1 and 0.03 in frames 0, 1, 2 (40, 20 and 30.46 dB);
    an error outside the mask and a frame without mask pixels change nothing."""
    from canon_edit.canonical import CanonicalVideo, Layer
    from canon_edit_representations.motion import pixel_grid_ndc

    uv = pixel_grid_ndc(8, 8).expand(4, -1, -1, -1).half()
    bake = CanonicalVideo(layers=[Layer(texture=torch.full((3, 8, 8), 0.5), uv=uv)])
    frames = bake.render().clamp(0, 1)
    masks = torch.zeros(4, 8, 8)
    masks[:3, :, :4] = 1  # frame 3 has no mask pixels
    for t, error in enumerate((0.01, 0.1, 0.03, 0.2)):
        frames[t, :, :, :4] += error
    frames[:, :, :, 4:] += 0.3  # outside the masks

    class Stored:
        def read(self, start, stop):
            return frames[start:stop]

        def read_foreground(self, start, stop):
            return masks[start:stop]

    by_frame = _load("fit_quality").foreground_by_frame(bake, Stored())
    assert by_frame == {"min": 20.0, "median": 30.46, "max": 40.0, "worst_frame": 1}


def test_edit_checkpoint_holds_the_textures_and_both_moments(capsys):
    figures = _load("edit_checkpoint").main(["--layers", "1", "--texture", "256", "--repeats", "1"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(figures))
    data = 3 * (3 * 256 * 256 * 4)  # the texels, exp_avg and exp_avg_sq, float32
    assert data < figures["size_bytes"] < data + 2**16  # and a header of names and JSON


def test_fit_memory_prints_one_json_line(clip_dir, capsys):
    figures = _load("fit_memory").main(
        ["--clip", str(clip_dir), "--size", "48", "--lengths", "3", "6", "--methods", "codef", "--steps", "2"]
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(figures))
    rows = figures["codef"]["by_length"]
    assert set(rows) == {"3", "6"} and all(r["peak_rss_mb"] > 100 and r["seconds"] > 0 for r in rows.values())
    cost = get_representation("codef").fit_memory
    clip = read_clip(clip_dir, size=48)
    labels = 0 if clip.masks is None else clip.masks.shape[1]
    assert [rows[n]["estimate_mb"] for n in ("3", "6")] == [
        round(cost.peak(n, clip.H, clip.W, labels) / 2**20, 1) for n in (3, 6)
    ]
    assert figures["codef"]["mb_per_frame"] == round(
        (rows["6"]["peak_rss_mb"] - rows["3"]["peak_rss_mb"]) / 3, 2
    )


def test_fit_memory_of_the_procedural_portrait(capsys):
    """`--portrait`: a portrait fit per length, on the procedural portrait with its true tracking."""
    figures = _load("fit_memory").main(["--portrait", "--size", "32", "--lengths", "3", "4", "--steps", "2"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(figures))
    rows = figures["portrait"]["by_length"]
    cost = get_representation("portrait").fit_memory
    assert [rows[n]["estimate_mb"] for n in ("3", "4")] == [
        round(cost.peak(n, 32, 32, 1) / 2**20, 1) for n in (3, 4)
    ]
    assert all(r["peak_rss_mb"] > 100 for r in rows.values()) and figures["clip"] == "procedural portrait"


def test_render_memory_of_a_portrait_run(capsys):
    """`render_speed --portrait`: `render` and `render --compare` of a fitted procedural portrait, each
    in a fresh process that reports its own peak."""
    figures = _load("render_speed").main(["--portrait", "32", "--lengths", "3"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(figures))
    row = figures["peak_rss_by_length"]["3"]
    assert row["render_peak_rss_mb"] > 100 and row["compare_peak_rss_mb"] > 100
    assert row["render_encode_fps"] > 0 and figures["portrait"] == 32


def test_encode_presets_prints_one_json_line(clip_dir, capsys):
    figures = _load("encode_presets").main(
        ["--clip", str(clip_dir), "--size", "48", "--frames", "4", "--repeats", "1",
         "--settings", "veryfast:16", "veryfast:40"]
    )  # fmt: skip
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(figures))
    close, coarse = figures["settings"]["veryfast:16"], figures["settings"]["veryfast:40"]
    assert figures["frames"] == 4 and close["fps"] > 0
    assert close["psnr"] > coarse["psnr"] + 5 and close["kib"] >= coarse["kib"]  # size for fidelity


def test_init_speed_times_both_refinements_and_finds_them_equal(clip_dir, capsys):
    figures = _load("init_speed").main(["--clip", str(clip_dir), "--size", "48"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(figures))
    assert figures["frames"] == 6 and figures["layers"] == 2  # the background and the masked sprite
    assert figures["max_difference"] <= 1e-6  # bit for bit on the machines measured
    assert all(len(s) == 2 and min(s) > 0 for s in figures["seconds"].values())
    assert min(figures["reidentify_seconds"].values()) > 0
    assert figures["reidentify_max_difference"] <= 1e-4  # the same shift found, then refined alike


def test_bake_speed_bakes_both_ways_alike(clip_dir, capsys):
    figures = _load("bake_speed").main(["--clip", str(clip_dir), "--size", "48", "--chunk", "500"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(figures))
    assert set(figures["methods"]) == {"codef", "atlas"} and figures["frames"] == 6
    for method in figures["methods"].values():
        assert method["chunks_s"] > 0 and method["whole_s"] > 0
        assert method["max_difference"] <= 1e-3  # float16 fields: one rounding step at most
