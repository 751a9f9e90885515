"""`canon-edit demo --portrait`: the portrait path end to end on the procedural portrait, weight-free."""

from __future__ import annotations

import json

from canon_edit.cli import main


def test_portrait_demo_fits_relights_and_stylises(tmp_path, capsys):
    out = tmp_path / "portrait-demo"
    assert main(["demo", "--portrait", "--quick", "--quiet", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    figures = json.loads(printed[printed.index("{") :])
    assert figures["edits"] == ["relit_key-right", "relit_sunset", "stylized"]
    for name in ("source", "relit_key-right", "relit_sunset", "stylized", "side_by_side"):
        assert (out / f"{name}.mp4").stat().st_size > 1000, name
    assert (out / "run" / "run.json").is_file() and (out / "style.png").is_file()
    # a short fit and refit, yet the relit video is far nearer the truth under the turning light
    assert figures["relit_key-right_psnr_vs_truth"] >= figures["unrelit_psnr_vs_truth"] + 6, figures
    assert figures["reconstruction_psnr"] >= 22, figures
    # a second run refuses to replace it without --force, in one line
    assert main(["demo", "--portrait", "--quick", "--quiet", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--force" in err[0], err
