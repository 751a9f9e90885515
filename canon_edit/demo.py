"""`canon-edit demo`: the whole product on an embedded procedural clip whose truth is known.

Generates the clip, fits CoDeF, lifts an edit painted on one frame into the canonical textures,
re-renders every frame, and scores both reconstruction and edit against the ground truth.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .canonical import CanonicalVideo, keyframe_textures
from .edit.store import save_edit
from .fitting import ClipOptions, fit_video
from .metrics import psnr
from .outputs import claim_folder
from .procedural import edited_truth, make_clip, seen_mask
from .video import write_image, write_pngs, write_video

DEMO = {"frames": 32, "height": 96, "width": 160}
KEYFRAME = 12
QUICK_STEPS = 300  # --quick: enough to check an install end to end, not for the figures
# what the demo writes in its folder: the only entries `--force` removes
DEMO_ENTRIES = frozenset(
    {"clip", "run", "source.mp4", "edited.mp4", "side_by_side.mp4", f"edited_frame_{KEYFRAME}.png"}
)


def run_demo(
    out: Path,
    force: bool = False,
    quick: bool = False,
    show_progress: bool = True,
    preset: str = "codef_demo",
) -> dict:
    """Run the demo into `out`; returns (and prints) the figures and paths."""
    claim_folder(out, "demo", DEMO_ENTRIES, force=force)
    proc = make_clip(**DEMO)
    clip_dir = out / "clip"
    write_pngs(clip_dir / "frames", proc.clip.frames)
    write_pngs(clip_dir / "masks", proc.clip.masks.expand(-1, 3, -1, -1))
    write_video(out / "source.mp4", proc.clip.frames, proc.clip.fps)

    run = fit_video(
        ClipOptions(source=str(clip_dir)),
        out / "run",
        "codef",
        preset=preset,
        overrides={"train": {"steps": QUICK_STEPS}} if quick else None,
        show_progress=show_progress,
    )

    cv = CanonicalVideo.load(run.canonical)
    cv.fps = proc.clip.fps
    recon = cv.render().clamp(0, 1)

    truth_edit = edited_truth(proc.truth)
    gt_video = truth_edit.render().clamp(0, 1)
    edited_frame = gt_video[KEYFRAME]
    write_image(out / f"edited_frame_{KEYFRAME}.png", edited_frame)
    textures = keyframe_textures(cv, proc.clip.frames[KEYFRAME], KEYFRAME, edited_frame)
    folder = save_edit(run, "keyframe_demo", cv, textures, {"kind": "keyframe", "frame": KEYFRAME}, proc.clip)
    edited = cv.render(textures=textures).clamp(0, 1)
    write_video(out / "edited.mp4", edited, proc.clip.fps)
    write_video(out / "side_by_side.mp4", torch.cat([proc.clip.frames, recon, edited], dim=3), proc.clip.fps)

    seen = seen_mask(proc.truth, KEYFRAME)
    figures = {
        "reconstruction_psnr": round(psnr(recon, proc.clip.frames), 2),
        "edit_psnr_vs_truth": round(psnr(edited, gt_video, seen), 2),
        "source": str(out / "source.mp4"),
        "reconstruction": str(run.renders / "reconstruction.mp4"),
        "edited": str(out / "edited.mp4"),
        "side_by_side": str(out / "side_by_side.mp4"),
        "canonical": [str(p) for p in sorted(run.canonical.glob("layer_*.png"))],
        "edit_folder": str(folder),
    }
    print(json.dumps(figures, indent=2))
    return figures
