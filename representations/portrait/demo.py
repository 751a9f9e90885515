"""`canon-edit demo --portrait`: fit, relight and stylise a procedural portrait whose truth is known.

The portrait is the procedural one (procedural.py) on the synthetic SMPL-X body, written into
DIR/body because SMPL-X itself is registration-gated. It is a Lambertian surface lit by key-left,
exposed so that no pixel clips. It is fitted with its true tracking into DIR/run, then edited:
relit under key-right and under sunset, each light turning 90° around the head over the clip, and
stylised from a generated striped reference. Each edit lands in DIR/run/edits. The key-right
relight is scored against the portrait's true render under that turning light; key-right mirrors
key-left, so the two share the albedo–light scale the relight fixes. Weight-free: the SMPL-X
loader comes with the portrait extra.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from canon_edit.edit.commands import EditTarget, edit_relight, edit_stylize, edited_bake
from canon_edit.fitting import ClipOptions, fit_video
from canon_edit.metrics import psnr
from canon_edit.outputs import claim_folder
from canon_edit.representation import load_bake
from canon_edit.video import write_image, write_pngs, write_video

from .body import SMPLXBody
from .lighting import preset_light, rotate_light, yaw_rotation
from .procedural import make_portrait_clip
from .synthetic_body import write_synthetic_smplx

# the presets light a face-on surface at mean shading 1, which would clip the lit cheek of the
# procedural skin in 31% of the person's pixels; a camera exposes a face below that
EXPOSURE = 0.6
TURN = 90.0  # degrees each new light turns around the head over the clip
RELIGHTS = ("key-right", "sunset")
STYLE = "stylized"
FULL = {"frames": 24, "size": 96, "fit": 800, "refit": 300, "style": 100}
QUICK = {"frames": 12, "size": 64, "fit": 150, "refit": 30, "style": 10}  # --quick: checks an install
# what the demo writes in its folder: the only entries `--force` removes
ENTRIES = frozenset(
    {"body", "clip", "run", "style.png", "source.mp4", "side_by_side.mp4", f"{STYLE}.mp4"}
    | {f"relit_{name}.mp4" for name in RELIGHTS}
)


def striped(size: int) -> Tensor:
    """The style reference: diagonal red and yellow stripes."""
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    band = (((xs + ys) // 6) % 2).float()
    return torch.stack([0.8 + 0.1 * band, 0.2 + 0.6 * band, 0.1 + 0.0 * band])


def turning(light: Tensor, frames: int) -> Tensor:
    """T×9×3: `light` turned by TURN degrees over the clip, as `Relighting.light` turns a relight."""
    angles = [math.radians(TURN) * t / frames for t in range(frames)]
    return torch.stack([rotate_light(light, yaw_rotation(a)) for a in angles])


def run_portrait_demo(
    out: Path, force: bool = False, quick: bool = False, show_progress: bool = True
) -> dict[str, Any]:
    """Run the portrait demo into `out`; returns (and prints) the figures and paths."""
    claim_folder(out, "portrait demo", ENTRIES, force=force)
    plan = QUICK if quick else FULL
    frames, size = plan["frames"], plan["size"]
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    write_synthetic_smplx(out / "body")
    body = SMPLXBody(out / "body")
    portrait = make_portrait_clip(body, frames, size, light=preset_light("key-left") * EXPOSURE)
    clip_dir = out / "clip"
    write_pngs(clip_dir / "frames", portrait.clip.frames)
    write_pngs(clip_dir / "masks", portrait.clip.masks.expand(-1, 3, -1, -1))
    portrait.tracking.save(clip_dir / "tracking.json")
    write_video(out / "source.mp4", portrait.clip.frames, portrait.clip.fps)
    overrides = {
        "body": "smplx",
        "body_model_dir": str(out / "body"),
        "tracking": str(clip_dir / "tracking.json"),
        "texel_resolution": 128,
        "train": {"steps": plan["fit"], "warmup_steps": 20},
    }
    run = fit_video(
        ClipOptions(source=str(clip_dir)),
        out / "run",
        "portrait",
        overrides=overrides,
        show_progress=show_progress,
    )
    seconds["fit"] = round(time.perf_counter() - start, 1)

    bake = load_bake(run)
    behind, mask = portrait.background, portrait.clip.masks[:, :1]
    videos = {"source": portrait.clip.frames, "reconstruction": bake.render(background=behind)}
    figures: dict[str, Any] = {
        "reconstruction_psnr": round(psnr(videos["reconstruction"], portrait.clip.frames, mask), 2)
    }
    for name in RELIGHTS:
        start = time.perf_counter()
        options = {"preset": name, "rotate": TURN, "refit_steps": plan["refit"]}
        edit_relight(EditTarget(run.path, f"relit_{name}", progress=show_progress), options)
        videos[f"relit_{name}"] = edited_bake(run, bake, f"relit_{name}").render(background=behind)
        seconds[f"relit_{name}"] = round(time.perf_counter() - start, 1)
    truth = make_portrait_clip(
        body, frames, size, light=turning(preset_light("key-right") * EXPOSURE, frames)
    )
    figures["relit_key-right_psnr_vs_truth"] = round(
        psnr(videos["relit_key-right"], truth.clip.frames, mask), 2
    )
    figures["unrelit_psnr_vs_truth"] = round(psnr(videos["reconstruction"], truth.clip.frames, mask), 2)

    start = time.perf_counter()
    write_image(out / "style.png", striped(96))
    style_options = {"mode": "texture", "steps": plan["style"], "crop": 64}
    edit_stylize(EditTarget(run.path, STYLE, progress=show_progress), out / "style.png", style_options)
    videos[STYLE] = edited_bake(run, bake, STYLE).render(background=behind)
    seconds[STYLE] = round(time.perf_counter() - start, 1)

    fps = portrait.clip.fps
    for name, video in videos.items():
        if name not in ("source", "reconstruction"):
            write_video(out / f"{name}.mp4", video.clamp(0, 1), fps)
    write_video(out / "side_by_side.mp4", torch.cat(list(videos.values()), dim=3).clamp(0, 1), fps)
    figures |= {
        "seconds": seconds,
        "side_by_side": str(out / "side_by_side.mp4"),
        "columns": list(videos),
        "run": str(run.path),
        "edits": sorted(p.name for p in run.edits.iterdir()),
    }
    print(json.dumps(figures, indent=2))
    return figures
