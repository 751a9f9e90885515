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
