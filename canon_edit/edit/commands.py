"""What `canon-edit edit`, `render` and `eval` do, as library functions with typed arguments.

Each validates everything it was given before loading a model or writing a file. Editing takes
the run's write lock (lock.py); rendering and evaluation only read the run and never block. A
`CanonicalVideo` is edited here, texture by texture; any other bake edits itself through the
`EditableBake` methods (representation.py), so the core never names a representation.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..atomic import atomic_dir
from ..canonical import CanonicalVideo, apply_canonical_edit, keyframe_textures
from ..errors import UserError
from ..evaluate import evaluate_video, paired, render_chunks
from ..lock import run_lock
from ..outputs import check_output_file, check_writable, claim_folder, mark_folder
from ..representation import Bake, EditableBake, load_bake
from ..run import RunFolder
from ..segments import SegmentedVideo
from ..video import (
    ASPECT_TOLERANCE,
    ENCODING,
    WRITE_VIDEO_FORMATS,
    X264,
    VideoWriter,
    joined_images,
    read_image,
    resize_frames,
    uint8_images,
    write_image,
    write_pngs,
    write_video,
)
from .checkpoint import Checkpoints, EditCheckpoint
from .store import check_edit_name, edit_folder, free_edit_name, load_edit, save_bake_edit, save_edit


@dataclass
class EditTarget:
    """Where an edit goes: the run, the edit's name (None: derived from its kind), and its base."""

    run: str | Path
    name: str | None = None
    replace: bool = False  # an existing edit of that name may be replaced, a stopped one started over
    from_edit: str | None = None  # start from an earlier edit's textures
    resume: bool = False  # continue the stopped edit of that name from its checkpoint
    progress: bool = True  # progress bars of the long edits (lifts, diffusion, relighting, stylization)


def editable(bake: Bake) -> CanonicalVideo:
    """`bake` as canonical textures; bakes of other kinds (Gaussians) are not texture-edited here."""
    if isinstance(bake, CanonicalVideo):
        return bake
    raise UserError(
        f"this run's bake ({type(bake).__name__}) has no canonical image; edit it with --keyframe, "
        "--appearance or a diffusion mode"
    )


def self_editing(bake: Bake, how: str, what: str) -> EditableBake:
    """`bake` if it can edit itself `how` (an `EditableBake` method), else one line saying so."""
    if callable(getattr(bake, how, None)):
        return bake  # type: ignore[return-value]
    raise UserError(f"this run's bake ({type(bake).__name__}) does not support {what}")


def edited_bake(run: RunFolder, bake: Bake, name: str) -> Bake:
    """The bake with edit `name` applied: textures for a `CanonicalVideo`, else the bake's own load_edit."""
    if isinstance(bake, CanonicalVideo):
        return bake.with_textures(edit_textures(bake, run, name))
    return self_editing(bake, "load_edit", "edits").load_edit(edit_folder(run, name))


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


def _open_for_edit(target: EditTarget) -> tuple[RunFolder, Bake]:
    run = RunFolder.open(target.run)
    if target.name is not None:  # a resumed edit was allowed to replace its name when it started
        check_edit_name(run, target.name, target.replace or target.resume)
    bake = load_bake(run)
    if target.from_edit:
        bake = edited_bake(run, bake, target.from_edit)
    return run, bake


def _save(run: RunFolder, target: EditTarget, kind: str, bake: Bake, textures, meta) -> Path:
    """Write the edit: `textures` of a CanonicalVideo, or the edited bake itself (textures None)."""
    name = target.name or free_edit_name(run, kind)
    check_edit_name(run, name, target.replace or target.resume)  # again: another may have taken it
    meta = {"kind": kind, "from_edit": target.from_edit, **meta}
    if isinstance(bake, SegmentedVideo) and bake.paint_stops:
        meta["paint_stops"] = [stop.message() for stop in bake.paint_stops]
        for line in meta["paint_stops"]:
            print(f"canon-edit: note: {line}", file=sys.stderr)
    if textures is None:
        return save_bake_edit(run, name, bake, meta, run.stored_clip())
    return save_edit(run, name, editable(bake), textures, meta, run.stored_clip())


def edit_canonical(target: EditTarget, image: str | Path, layer: int = 0, segment: int | None = None) -> Path:
    """Replace (RGB) or paint over (RGBA) canonical layer `layer` with `image`; re-render every frame.

    A segmented run has a canonical per segment: `segment` names the one painted, and the edit is
    carried from it to the others.
    """
    run, bake = _open_for_edit(target)
    if isinstance(bake, SegmentedVideo):
        return _edit_segment(run, target, bake, image, layer, segment)
    if segment is not None:
        raise UserError("--segment names a segment of a run fitted with --segment-frames; this run has none")
    cv = editable(bake)
    k = _layer(cv, layer)
    painted = read_image(image)
    with run_lock(run.path, "edit"):
        textures = painted_canonical(cv, None, k, painted).textures()
        return _save(run, target, "canonical", cv, textures, {"image": str(image), "layer": k})


def painted_canonical(
    video: CanonicalVideo | SegmentedVideo, segment: int | None, layer: int, image: Tensor
) -> CanonicalVideo | SegmentedVideo:
    """`video` with `image` over (RGBA) or in place of (RGB) canonical layer `layer`; in a segmented
    video, of segment `segment`'s canonical, carried from it to the other segments."""
    segmented = isinstance(video, SegmentedVideo)
    if segmented and segment is None:
        raise ValueError("a segmented video's canonical edit names its segment")
    cv = video.bakes[segment] if segmented else video
    textures = list(cv.textures())
    textures[layer] = apply_canonical_edit(textures[layer], image)
    return video.spread({segment: textures}) if segmented else cv.with_textures(textures)


def _edit_segment(
    run: RunFolder,
    target: EditTarget,
    bake: SegmentedVideo,
    image: str | Path,
    layer: int,
    segment: int | None,
) -> Path:
    n = len(bake.segments)
    if segment is None or not 0 <= segment < n:
        raise UserError(
            f"this run has {n} segments, each with its own canonical (RUN/segments/seg_K/canonical/): "
            f"name the one you painted with --segment K, K in 0..{n - 1}"
        )
    cv = bake.bakes[segment]
    k = _layer(cv, layer)
    painted = read_image(image)
    with run_lock(run.path, "edit"):
        meta = {"image": str(image), "layer": k, "segment": bake.segments[segment].name}
        return _save(run, target, "canonical", painted_canonical(bake, segment, k, painted), None, meta)


def edit_keyframe(
    target: EditTarget,
    frame: int,
    image: str | Path,
    change_mask: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """Lift frame `frame` as edited in `image` into the canonical asset; re-render every frame.

    `overrides` are options of a bake's own lift (a portrait's `--set steps=...`); a 2D lift has none.
    """
    run, bake = _open_for_edit(target)
    t = _frame(bake, frame)
    stored = run.stored_clip()  # read a frame of, not held whole: 12 bytes a pixel of every frame
    height, width = stored.H, stored.W
    edited = fit_image(read_image(image)[:3], height, width, f"the edited frame {image}")
    mask = None
    if change_mask is not None:
        painted = fit_image(read_image(change_mask)[:1], height, width, f"the change mask {change_mask}")
        mask = (painted[0] > 0.5).float()
    meta = {"frame": t, "image": str(image)}
    if isinstance(bake, CanonicalVideo):
        if overrides:
            raise UserError("a 2D keyframe lift has no options to --set; drop --set")
        with run_lock(run.path, "edit"):
            textures = keyframe_textures(bake, stored.read(t, t + 1)[0], t, edited, mask)
            return _save(run, target, "keyframe", bake, textures, meta)
    lifter = self_editing(bake, "lift_keyframe", "keyframe edits")
    with run_lock(run.path, "edit"):
        result, extra = lifter.lift_keyframe(
            t, edited, stored.read(t, t + 1)[0], mask, overrides, target.progress
        )
        return _save(run, target, "keyframe", result, None, {**meta, **extra})


@contextmanager
def _checkpoints(run: RunFolder, target: EditTarget, asked: dict[str, Any]) -> Iterator[Checkpoints]:
    """`checkpoints(kind)`, which opens the edit's checkpoint under its name; the checkpoints opened
    go when the block ends without an error (the edit is saved), and stay for a resume otherwise.

    `asked` (what the edit was asked, JSON-able) gains the base edit and the fit's step: a fit resumed
    since has another canonical under a stopped edit.
    """
    asked = json.loads(
        json.dumps({**asked, "from_edit": target.from_edit, "fit_steps": run.info().get("steps")})
    )
    opened: list[EditCheckpoint] = []

    def checkpoints(kind: str) -> EditCheckpoint:
        name = target.name or free_edit_name(run, kind)
        opened.append(EditCheckpoint(run, name, asked, target.resume, target.replace))
        return opened[-1]

    yield checkpoints
    for checkpoint in opened:
        checkpoint.discard()


def edit_diffusion(target: EditTarget, request: Any) -> Path:
    """Edit with a diffusion prior (`guidance.edit.DiffusionRequest`): textures, or the bake itself.

    Long modes checkpoint under the edit's name (`checkpoint.EditCheckpoint`); `target.resume`
    continues a stopped one, and the checkpoint goes once the edit is saved.
    """
    from ..guidance.edit import diffusion_edit

    run, bake = _open_for_edit(target)
    asked = {k: v for k, v in asdict(request).items() if k not in ("device", "allow_download")}
    with run_lock(run.path, "edit"), _checkpoints(run, target, asked) as checkpoints:
        if isinstance(bake, CanonicalVideo):
            textures, meta = diffusion_edit(bake, request, checkpoints, target.progress)
            return _save(run, target, meta["mode"], bake, textures, meta)
        editor = self_editing(bake, "diffusion_edit", "diffusion edits")
        result, meta = editor.diffusion_edit(request, target.progress, checkpoints)
        return _save(run, target, meta["mode"], result, None, meta)


def edit_appearance(target: EditTarget, image: str | Path) -> Path:
    """Give the subject a reference image's colours (mean and covariance inside the person mask)."""
    run, bake = _open_for_edit(target)
    editor = self_editing(
        bake, "transfer_appearance", "--appearance (it is for portrait runs; edit a 2D run's --canonical)"
    )
    reference = read_image(image)
    with run_lock(run.path, "edit"):
        result, meta = editor.transfer_appearance(reference)
        return _save(run, target, "appearance", result, None, {"image": str(image), **meta})


def edit_relight(target: EditTarget, options: dict[str, Any]) -> Path:
    """Relight the subject (`options`: the bake's relighting options, e.g. preset, azimuth, envmap)."""
    run, bake = _open_for_edit(target)
    relighter = self_editing(bake, "relight", "relighting (it is for portrait runs)")
    asked = {k: v for k, v in options.items() if k not in ("device", "allow_download")}
    with run_lock(run.path, "edit"), _checkpoints(run, target, asked) as checkpoints:
        result, meta = relighter.relight(options, target.progress, checkpoints)
        return _save(run, target, "relight", result, None, meta)


def edit_stylize(
    target: EditTarget,
    style: str | Path,
    options: dict[str, Any] | None = None,
    vgg: str | None = None,
) -> Path:
    """Give the subject a style image's colours and texture (`options`: the bake's stylize options)."""
    run, bake = _open_for_edit(target)
    stylist = self_editing(bake, "stylize", "stylization (it is for portrait runs)")
    image = read_image(style)
    if vgg is not None and not Path(vgg).is_file():
        raise UserError(f"VGG weights {vgg} not found; give a torchvision VGG-16/19 state dict file")
    weights = str(Path(vgg).resolve()) if vgg else None
    asked = {"style": str(Path(style).resolve()), "vgg": weights, "options": options or {}}
    with run_lock(run.path, "edit"), _checkpoints(run, target, asked) as checkpoints:
        result, meta = stylist.stylize(image, options, vgg, target.progress, checkpoints)
        return _save(run, target, "stylize", result, None, {"style": str(style), "vgg": vgg, **meta})


def _check_angles(orbit: float | None, view: tuple[float, float] | None) -> None:
    if orbit is not None and view is not None:
        raise UserError("--orbit swings the camera over the clip and --view fixes it; give one of them")
    angles = [orbit] if orbit is not None else list(view or ())
    if any(not -90 <= a <= 90 for a in angles):
        raise UserError(f"view angles are degrees in [-90, 90], got {', '.join(f'{a:g}' for a in angles)}")


def _turned(bake: Bake) -> Any:
    """The bake's novel-view renderer (3D bakes)."""
    renderer = getattr(bake, "render_turned", None)
    if not callable(renderer):
        raise UserError("--orbit and --view render new viewpoints of a 3D asset; this run's bake is 2D")
    return renderer


def render_run(
    run_path: str | Path,
    out: str | Path,
    *,
    edit: str | None = None,
    compare: bool = False,
    frame: int | None = None,
    source: bool = False,
    orbit: float | None = None,
    view: tuple[float, float] | None = None,
    force: bool = False,
    x264: X264 = ENCODING,
) -> Path:
    """Write the reconstruction (or an edit) as a video (encoded as `x264` says), a PNG folder, or one
    frame's PNG.

    `orbit` (degrees) swings the camera around a 3D asset's head over the clip, in yaw and pitch;
    `view` (yaw, pitch) holds it at one offset. Novel views are rendered over black. An existing
    output is replaced only with `force` and only when canon-edit wrote it (outputs.py).
    """
    out = Path(out)
    if source and frame is None:
        raise UserError("the source frame is written for one frame only: give a frame number")
    if frame is not None and out.suffix.lower() != ".png":
        raise UserError(f"one frame is written as PNG; give an output path ending in .png, not '{out}'")
    if frame is None and out.suffix and out.suffix.lower() not in WRITE_VIDEO_FORMATS:
        raise UserError(
            f"cannot write '{out}'; give a video path ending in {', '.join(WRITE_VIDEO_FORMATS)}, "
            "or a folder for PNG frames"
        )
    if source and (orbit is not None or view is not None):
        raise UserError("the source frame has only its own viewpoint; drop --orbit/--view or --source")
    _check_angles(orbit, view)
    check_writable(out.parent if out.suffix else out, "output")
    # run now, and again as the output takes its name: a file may land at `out` while rendering
    recheck = (
        partial(check_output_file, out, force)
        if out.suffix
        else partial(claim_folder, out, FRAMES, _numbered_pngs(out), force=force, dry_run=True)
    )
    recheck()
    run = RunFolder.open(run_path)
    bake = load_bake(run)
    if edit:
        bake = edited_bake(run, bake, edit)
    turned = _turned(bake) if orbit is not None or view is not None else None
    render = bake.render if turned is None else lambda ids: turned(ids, orbit=orbit, view=view)
    if frame is not None:
        t = _frame(bake, frame)
        image = (run.stored_clip().read(t, t + 1) if source else render([t]))[0].clamp(0, 1)
        write_image(out, image, recheck)
        return out
    video = render_chunks(render, bake.T)  # streamed: a chunk is rendered, written and dropped
    if compare and out.suffix:  # joined in 8 bits, the source as stored
        with VideoWriter(out, bake.fps, x264, recheck) as writer:
            for chunk, frames in paired(run.stored_clip(), video, as_uint8=True):
                writer.write_images(joined_images(uint8_images(frames), uint8_images(chunk)))
        return out
    if compare:
        video = (torch.cat([frames, chunk], dim=3) for chunk, frames in paired(run.stored_clip(), video))
    if out.suffix:
        write_video(out, video, bake.fps, x264, check=recheck)
    else:
        with atomic_dir(out, recheck) as tmp:  # the frames appear together, in a marked folder
            write_pngs(tmp, video)
            mark_folder(tmp, FRAMES)
    return out


FRAMES = "frame folder"  # the kind of a folder `render` writes PNG frames into


def _numbered_pngs(folder: Path) -> frozenset[str]:
    """The frames an earlier render wrote in `folder` (00000.png, ...): what a forced render replaces."""
    if not folder.is_dir():
        return frozenset()
    return frozenset(p.name for p in folder.iterdir() if re.fullmatch(r"\d{5}\.png", p.name))


def evaluate_run(run_path: str | Path, edit: str | None = None) -> dict[str, Any]:
    """Figures of the reconstruction (or of edit `edit`) against the run's clip; stored and returned."""
    run = RunFolder.open(run_path)
    bake = load_bake(run)
    if edit:
        bake = edited_bake(run, bake, edit)
    return evaluate_video(run, run.stored_clip(), render_chunks(bake.render, bake.T), edit=edit)
