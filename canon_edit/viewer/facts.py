"""A run's facts for the viewer's side panel, read without the run lock and tolerant of a fit in progress.

run.json and metrics.json are written atomically, so reading them while a fit runs sees either the
old or the new file; a missing metrics.json (no bake yet) just leaves those facts out.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from ..files import CorruptFile, read_json
from ..run import RunFolder


def run_facts(run: RunFolder, clip_shape: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """method, status, frames, size, fps, steps, and PSNR / SSIM / warping error when measured.

    `clip_shape` (frames, height, width) of the stored clip fills in what run.json does not record.
    """
    info = run.info()
    if clip_shape is not None:
        info = {"frames": clip_shape[0], "height": clip_shape[1], "width": clip_shape[2]} | info
    facts: dict[str, Any] = {
        "method": info.get("method"),
        "status": info.get("status"),
        "frames": info.get("frames"),
        "size": f"{info['width']}×{info['height']}" if "width" in info and "height" in info else None,
        "fps": info.get("fps"),
        "steps": info.get("steps"),
    }
    if run.metrics.is_file():
        try:
            metrics = read_json(run.metrics, "")
        except CorruptFile:
            metrics = {}
        for key in ("psnr", "ssim", "warp_error", "source_warp_error"):
            facts[key] = metrics.get(key)
    return facts


def facts_markdown(facts: dict[str, Any], edits: list[str], stale: Collection[str] = ()) -> str:
    """The facts as a markdown table; missing figures are left out. The `stale` edits were made on a
    canonical the fit has gone on from, which a viewer's user would not see in the server's console."""
    labels = {
        "method": "method", "status": "status", "frames": "frames", "size": "size", "fps": "fps",
        "steps": "steps", "psnr": "PSNR (dB)", "ssim": "SSIM", "warp_error": "warping error",
        "source_warp_error": "source warping error",
    }  # fmt: skip
    lines = ["| | |", "|---|---|"]
    for key, label in labels.items():
        value = facts.get(key)
        if value is None:
            continue
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        lines.append(f"| {label} | {text} |")
    later = " (made on an earlier canonical: make it again)"
    named = [name + later if name in stale else name for name in edits]
    lines.append(f"| edits | {', '.join(named) if named else 'none'} |")
    return "\n".join(lines)
