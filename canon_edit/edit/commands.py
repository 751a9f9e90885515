"""What `canon-edit edit` and `canon-edit render` do, behind the CLI's argument parsing."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import Tensor

from ..canonical import CanonicalVideo, apply_canonical_edit, changed_mask, lift_keyframe
from ..errors import UserError
from ..evaluate import editable, load_canonical
from ..fitting import load_clip
from ..run import RunFolder
from ..video import VIDEO_SUFFIXES, read_image, write_image, write_pngs, write_video
from .store import edit_name, load_edit, save_edit


def _layer(cv: CanonicalVideo, k: int) -> int:
    if not 0 <= k < len(cv.layers):
        names = ", ".join(f"{i} ({la.name})" for i, la in enumerate(cv.layers))
        raise UserError(f"layer {k} does not exist; this run has layers {names}")
    return k


def keyframe_textures(
    cv: CanonicalVideo, source: Tensor, t: int, edited: Tensor, mask: Tensor | None = None
) -> list[Tensor]:
    """Lift an edited frame t whether the user started from the source frame or from the render.

    A pixel counts as changed only if it differs from both, so reconstruction error is never
    mistaken for an edit.
    """
    if mask is None:
        render = cv.render([t])[0].clamp(0, 1)
        mask = changed_mask(edited, source[t]) * changed_mask(edited, render)
    return lift_keyframe(cv, t, edited, source[t], mask=mask)


def run_edit(args: argparse.Namespace) -> Path:
    run = RunFolder.open(args.run)
    how = (
        "--canonical" if args.canonical else "--keyframe" if args.keyframe is not None else "diffusion edits"
    )
    cv = editable(load_canonical(run.canonical), how)
    if args.from_edit:
        cv = cv.with_textures(load_edit(run, args.from_edit))
    textures = cv.textures()
    if args.canonical:
        k = _layer(cv, args.layer)
        textures = list(textures)
        textures[k] = apply_canonical_edit(textures[k], read_image(args.canonical))
        kind, meta = "canonical", {"image": str(args.canonical), "layer": k}
    elif args.keyframe is not None:
        if not args.image:
            raise UserError("--keyframe needs --image EDITED_FRAME.png (the frame you edited)")
        clip = load_clip(run)
        edited = read_image(args.image)[:3]
        mask = (read_image(args.change_mask)[0] > 0.5).float() if args.change_mask else None
        textures = keyframe_textures(cv, clip.frames, args.keyframe, edited, mask)
        kind, meta = "keyframe", {"frame": args.keyframe, "image": str(args.image)}
    else:
        from ..guidance.edit import diffusion_edit

        textures, meta = diffusion_edit(cv, args)
        kind = meta["mode"]
    name = edit_name(run, args.name, kind)
    return save_edit(run, name, cv, textures, {"kind": kind, "from_edit": args.from_edit, **meta})


def run_render(args: argparse.Namespace) -> Path:
    run = RunFolder.open(args.run)
    cv = load_canonical(run.canonical)
    textures = load_edit(run, args.edit) if args.edit else None
    out = Path(args.out)
    if args.frame is not None:
        if not 0 <= args.frame < cv.T:
            raise UserError(f"--frame {args.frame} is out of range; the run has frames 0..{cv.T - 1}")
        if out.suffix.lower() != ".png":
            raise UserError(f"--frame writes a PNG; give an output path ending in .png, not '{out}'")
        image = load_clip(run).frames[args.frame] if args.source else cv.render([args.frame], textures)[0]
        write_image(out, image.clamp(0, 1))
        return out
    video = cv.render(textures=textures).clamp(0, 1)
    if args.compare:
        video = torch.cat([load_clip(run).frames, video], dim=3)
    if out.suffix.lower() in VIDEO_SUFFIXES and out.suffix.lower() != ".gif":
        write_video(out, video, cv.fps)
    elif out.suffix == "":
        write_pngs(out, video)
    else:
        raise UserError(f"cannot write '{out}'; give an .mp4/.mov/.mkv path, or a folder for PNG frames")
    return out
