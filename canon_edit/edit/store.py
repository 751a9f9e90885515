"""The edit folder: RUN/edits/NAME/ with edit.json, video.mp4, compare.mp4 and the edited state.

A 2D edit's state is its textures, kept twice: layer_K.png for the user's image editor,
textures.safetensors for exact re-rendering. Any other bake writes its own (a portrait: the edited
gaussians.ply and decoder). The folder appears at once (atomic_dir), so one holding edit.json is
finished. An edit name is a plain folder name (no separators, no leading dot), and an existing edit
is replaced only when the caller says so: earlier edits are the user's work.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from ..atomic import atomic_dir, write_json
from ..canonical import CanonicalVideo, texture_filename
from ..errors import ReplaceRefused, UserError
from ..files import read_tensors
from ..representation import EditableBake
from ..run import RunFolder
from ..video import write_image, write_video

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


def _videos(folder: Path, video: Tensor, source: Tensor, fps: float) -> None:
    """The edit's video and, for a look at what changed, the source beside it."""
    write_video(folder / "video.mp4", video, fps)
    write_video(folder / "compare.mp4", torch.cat([source, video], dim=3), fps)


def save_edit(
    run: RunFolder,
    name: str,
    cv: CanonicalVideo,
    textures: list[Tensor],
    meta: dict[str, Any],
    source: Tensor,
) -> Path:
    """Write the edited textures, their metadata and the re-rendered video; returns the folder."""
    folder = run.edits / name
    with atomic_dir(folder) as tmp:
        save_file(
            {f"{k}": t.float().contiguous() for k, t in enumerate(textures)},
            str(tmp / "textures.safetensors"),
        )
        for k, tex in enumerate(textures):
            write_image(tmp / texture_filename(k), tex.clamp(0, 1))
        write_json(
            tmp / "edit.json", {**meta, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        )
        _videos(tmp, cv.render(textures=textures).clamp(0, 1), source, cv.fps)
    return folder


def save_bake_edit(
    run: RunFolder, name: str, bake: EditableBake, meta: dict[str, Any], source: Tensor
) -> Path:
    """Write an edited bake's own state, its metadata and the re-rendered video; returns the folder."""
    folder = run.edits / name
    with atomic_dir(folder) as tmp:
        bake.save_edit(tmp)
        write_json(
            tmp / "edit.json", {**meta, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        )
        _videos(tmp, bake.render().clamp(0, 1), source, bake.fps)
    return folder


def edit_folder(run: RunFolder, name: str) -> Path:
    """The folder of finished edit `name`; one line listing the run's edits when there is none."""
    folder = run.edits / name
    if not NAME.fullmatch(name) or not (folder / "edit.json").is_file():
        raise UserError(
            f"no edit named '{name}' in {run.path}; available: {', '.join(list_edits(run)) or 'none'}"
        )
    return folder


def list_edits(run: RunFolder) -> list[str]:
    """Names of the run's finished edits, sorted."""
    if not run.edits.is_dir():
        return []
    return sorted(p.name for p in run.edits.iterdir() if (p / "edit.json").is_file())


def load_edit(run: RunFolder, name: str) -> list[Tensor]:
    path = edit_folder(run, name) / "textures.safetensors"
    if not path.is_file():
        raise UserError(f"edit '{name}' holds no textures (it was made on another kind of run)")
    t = read_tensors(path, f"make edit '{name}' again, replacing it")
    try:
        return [t[str(k)] for k in range(len(t))]
    except KeyError:
        raise UserError(f"{path} is corrupt (layers missing); make the edit again") from None
