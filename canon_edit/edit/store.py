"""The edit folder: RUN/edits/NAME/ with edit.json, video.mp4, compare.mp4 and the edited state.

A 2D edit's state is its textures, kept twice: layer_K.png for the user's image editor,
textures.safetensors for exact re-rendering. Any other bake writes its own (a portrait: the edited
gaussians.ply and decoder). The folder appears at once (atomic_dir), so one holding edit.json is
finished. An edit name is a plain folder name (no separators, no leading dot), and an existing edit
is replaced only when the caller says so: earlier edits are the user's work.

edit.json records the fit's step the edit was made on (`fit_steps`): a fit resumed to more steps
changes the canonical under its edits, whose textures then may no longer line up, and saying so
is left to whoever reads them (`edit_folder`, `fit --resume`).
"""

from __future__ import annotations

import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from torch import Tensor

from ..atomic import atomic_dir, write_json
from ..canonical import CanonicalVideo, read_textures, write_textures
from ..errors import ReplaceRefused, UserError
from ..evaluate import paired, render_chunks
from ..files import read_json
from ..representation import Bake, EditableBake
from ..run import RunFolder, StoredClip
from ..video import Clip, VideoPair

NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


def check_edit_name(run: RunFolder, name: str, replace: bool) -> str:
    """`name` if it is a plain, new (or consented-to) edit name; else one line saying why not."""
    if not NAME.fullmatch(name):
        raise UserError(
            f"edit name '{name}' is not a plain name; use letters, digits, '_', '-' and '.' "
            "(not first), at most 100 characters"
        )
    if (run.edits / name).exists() and not replace:
        raise ReplaceRefused(f"edit '{name}' already exists in {run.edits}", run.edits / name, "edit name")
    return name


def free_edit_name(run: RunFolder, kind: str) -> str:
    """The first free `kind`, `kind_2`, ... ."""
    n, name = 1, kind
    while (run.edits / name).exists():
        n += 1
        name = f"{kind}_{n}"
    return name


def _videos(folder: Path, bake: Bake, source: Clip | StoredClip) -> None:
    """The edit's video and, for a look at what changed, the source beside it: one render pass, a
    chunk of frames at a time, the source's frames read a chunk at a time too."""
    with VideoPair(folder / "video.mp4", folder / "compare.mp4", bake.fps) as videos:
        for video, frames in paired(source, render_chunks(bake.render, bake.T), as_uint8=True):
            videos.write(video, frames)


def _record(run: RunFolder, meta: dict[str, Any]) -> dict[str, Any]:
    """edit.json: the edit's own metadata, the fit's step it was made on, and when."""
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {**meta, "fit_steps": run.info().get("steps"), "created": stamp}


def save_edit(
    run: RunFolder,
    name: str,
    cv: CanonicalVideo,
    textures: list[Tensor],
    meta: dict[str, Any],
    source: Clip | StoredClip,
) -> Path:
    """Write the edited textures, their metadata and the re-rendered video; returns the folder."""
    folder = run.edits / name
    with atomic_dir(folder) as tmp:
        write_textures(tmp, textures)
        write_json(tmp / "edit.json", _record(run, meta))
        _videos(tmp, cv.with_textures(textures), source)
    return folder


def save_bake_edit(
    run: RunFolder, name: str, bake: EditableBake, meta: dict[str, Any], source: Clip | StoredClip
) -> Path:
    """Write an edited bake's own state, its metadata and the re-rendered video; returns the folder."""
    folder = run.edits / name
    with atomic_dir(folder) as tmp:
        bake.save_edit(tmp)
        write_json(tmp / "edit.json", _record(run, meta))
        _videos(tmp, bake, source)
    return folder


def edit_folder(run: RunFolder, name: str) -> Path:
    """The folder of finished edit `name`; one line listing the run's edits when there is none."""
    folder = run.edits / name
    if not NAME.fullmatch(name) or not (folder / "edit.json").is_file():
        raise UserError(
            f"no edit named '{name}' in {run.path}; available: {', '.join(list_edits(run)) or 'none'}"
        )
    steps = run.info().get("steps")
    made = _made_before(folder, steps)
    if made is not None:
        print(
            f"canon-edit: note: edit '{name}' was made on the canonical of step {made} and the fit has "
            f"gone on to step {steps} since; its textures may no longer line up: make it again "
            "(its edit.json says how)",
            file=sys.stderr,
        )
    return folder


def _made_before(folder: Path, steps: Any) -> int | None:
    """The fit's step the edit in `folder` was made on when it is not `steps` (the run's now); None when
    it is, or for an edit from before the step was recorded."""
    try:
        made = read_json(folder / "edit.json", "").get("fit_steps")
    except UserError:
        return None
    return made if isinstance(made, int) and made != steps else None


def edits_made_before(run: RunFolder, names: list[str] | None = None) -> list[str]:
    """Those of the run's edits (`names`, or all) made on a canonical of another step than the bake now."""
    steps = run.info().get("steps")
    names = list_edits(run) if names is None else names
    return [name for name in names if _made_before(run.edits / name, steps) is not None]


def list_edits(run: RunFolder) -> list[str]:
    """Names of the run's finished edits, sorted."""
    if not run.edits.is_dir():
        return []
    return sorted(p.name for p in run.edits.iterdir() if (p / "edit.json").is_file())


def load_edit(run: RunFolder, name: str) -> list[Tensor]:
    return read_textures(edit_folder(run, name), name)
