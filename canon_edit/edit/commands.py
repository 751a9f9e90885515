"""What `canon-edit edit`, `render` and `eval` do, as library functions with typed arguments.

Each validates everything it was given before loading a model or writing a file. Editing takes
the run's write lock (lock.py); rendering and evaluation only read the run and never block.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..canonical import CanonicalVideo, apply_canonical_edit, changed_mask, lift_keyframe
from ..errors import UserError
from ..evaluate import evaluate_video
from ..lock import run_lock
from ..outputs import check_writable
from ..representation import Bake, load_bake
from ..run import RunFolder
from ..video import (
    ASPECT_TOLERANCE,
    VIDEO_SUFFIXES,
    read_image,
    resize_frames,
    write_image,
    write_pngs,
    write_video,
)
from .store import check_edit_name, free_edit_name, load_edit, save_edit


@dataclass
class EditTarget:
    """Where an edit goes: the run, the edit's name (None: derived from its kind), and its base."""

    run: str | Path
    name: str | None = None
    replace: bool = False  # an existing edit of that name may be replaced
    from_edit: str | None = None  # start from an earlier edit's textures


def editable(bake: Bake) -> CanonicalVideo:
    """`bake` as canonical textures; bakes of other kinds (Gaussians) are not texture-edited here."""
    if isinstance(bake, CanonicalVideo):
        return bake
    raise UserError(
        f"this run's bake ({type(bake).__name__}) has no canonical textures to edit; "
        "render and eval work on it"
    )


def edit_textures(cv: CanonicalVideo, run: RunFolder, name: str) -> list[Tensor]:
    """An edit's textures, checked against the bake they re-render."""
    textures = load_edit(run, name)
    shapes = [tuple(la.texture.shape) for la in cv.layers]
    if [tuple(t.shape) for t in textures] != shapes:
        raise UserError(f"edit '{name}' does not match this run's canonical layers; make the edit again")
    return textures


def fit_image(image: Tensor, height: int, width: int, what: str) -> Tensor:
    """`image` (C×H×W) at the run's size: any image of the run's aspect is resampled to it."""
    h, w = image.shape[-2:]
    if (h, w) == (height, width):
        return image
    if abs((w / h) / (width / height) - 1) > ASPECT_TOLERANCE:
        raise UserError(
            f"{what} is {w}x{h} but the run's frames are {width}x{height}; give an image of the same "
            f"aspect ratio (any size: it is resampled)"
        )
    return resize_frames(image[None], height, width)[0].clamp(0, 1)


def _layer(cv: CanonicalVideo, k: int) -> int:
    if not 0 <= k < len(cv.layers):
        names = ", ".join(f"{i} ({la.name})" for i, la in enumerate(cv.layers))
        raise UserError(f"layer {k} does not exist; this run has layers {names}")
    return k


def _frame(bake: Bake, t: int) -> int:
    if not 0 <= t < bake.T:
        raise UserError(f"frame {t} is out of range; the run has frames 0..{bake.T - 1}")
    return t


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


def _open_for_edit(target: EditTarget) -> tuple[RunFolder, CanonicalVideo]:
    run = RunFolder.open(target.run)
    if target.name is not None:
        check_edit_name(run, target.name, target.replace)
    cv = editable(load_bake(run))
    if target.from_edit:
        cv = cv.with_textures(edit_textures(cv, run, target.from_edit))
    return run, cv


def _save(run: RunFolder, target: EditTarget, kind: str, cv: CanonicalVideo, textures, meta) -> Path:
    name = target.name or free_edit_name(run, kind)
    check_edit_name(run, name, target.replace)  # again: another edit may have taken it meanwhile
    return save_edit(run, name, cv, textures, {"kind": kind, "from_edit": target.from_edit, **meta})


def edit_canonical(target: EditTarget, image: str | Path, layer: int = 0) -> Path:
    """Replace (RGB) or paint over (RGBA) canonical layer `layer` with `image`; re-render every frame."""
    run, cv = _open_for_edit(target)
    k = _layer(cv, layer)
    painted = read_image(image)
    with run_lock(run.path, "edit"):
        textures = list(cv.textures())
        textures[k] = apply_canonical_edit(textures[k], painted)
        return _save(run, target, "canonical", cv, textures, {"image": str(image), "layer": k})


def edit_keyframe(
    target: EditTarget, frame: int, image: str | Path, change_mask: str | Path | None = None
) -> Path:
    """Lift frame `frame` as edited in `image` into the canonical; re-render every frame."""
    run, cv = _open_for_edit(target)
    t = _frame(cv, frame)
    edited = fit_image(read_image(image)[:3], cv.H, cv.W, f"the edited frame {image}")
    mask = None
    if change_mask is not None:
        mask = fit_image(read_image(change_mask)[:1], cv.H, cv.W, f"the change mask {change_mask}")[0] > 0.5
        mask = mask.float()
    with run_lock(run.path, "edit"):
        textures = keyframe_textures(cv, run.clip().frames, t, edited, mask)
        return _save(run, target, "keyframe", cv, textures, {"frame": t, "image": str(image)})


def edit_diffusion(target: EditTarget, request: Any) -> Path:
    """Edit the textures with a diffusion prior (`guidance.edit.DiffusionRequest`)."""
    from ..guidance.edit import diffusion_edit

    run, cv = _open_for_edit(target)
    with run_lock(run.path, "edit"):
        textures, meta = diffusion_edit(cv, request)
        return _save(run, target, meta["mode"], cv, textures, meta)


def render_run(
    run_path: str | Path,
    out: str | Path,
    *,
    edit: str | None = None,
    compare: bool = False,
    frame: int | None = None,
    source: bool = False,
) -> Path:
    """Write the reconstruction (or an edit) as a video, a PNG folder, or one frame's PNG."""
    out = Path(out)
    if source and frame is None:
        raise UserError("the source frame is written for one frame only: give a frame number")
    if frame is not None and out.suffix.lower() != ".png":
        raise UserError(f"one frame is written as PNG; give an output path ending in .png, not '{out}'")
    if frame is None and out.suffix and (out.suffix.lower() not in VIDEO_SUFFIXES or out.suffix == ".gif"):
        raise UserError(f"cannot write '{out}'; give an .mp4/.mov/.mkv path, or a folder for PNG frames")
    check_writable(out.parent if out.suffix else out, "output")
    run = RunFolder.open(run_path)
    bake = load_bake(run)
    textures = None
    if edit:
        textures = edit_textures(editable(bake), run, edit)
    if frame is not None:
        t = _frame(bake, frame)
        image = run.clip().frames[t] if source else bake.render([t], textures)[0]
        write_image(out, image.clamp(0, 1))
        return out
    video = bake.render(textures=textures).clamp(0, 1)
    if compare:
        video = torch.cat([run.clip().frames, video], dim=3)
    if out.suffix:
        write_video(out, video, bake.fps)
    else:
        write_pngs(out, video)
    return out


def evaluate_run(run_path: str | Path, edit: str | None = None) -> dict[str, Any]:
    """Figures of the reconstruction (or of edit `edit`) against the run's clip; stored and returned."""
    run = RunFolder.open(run_path)
    bake = load_bake(run)
    textures = edit_textures(editable(bake), run, edit) if edit else None
    video = bake.render(textures=textures).clamp(0, 1)
    return evaluate_video(run, run.clip(), video, edit=edit)
