"""The edit folder: RUN/edits/NAME/{layer_K.png, textures.safetensors, edit.json, video.mp4}.

Textures are kept twice: PNG for the user's image editor, safetensors for exact re-rendering. An edit
name is a plain folder name (no separators, no leading dot), and an existing edit is replaced only
when the caller says so: earlier edits are the user's work.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor

from ..atomic import atomic_dir, write_json
from ..canonical import CanonicalVideo, texture_filename
from ..errors import ReplaceRefused, UserError
from ..files import read_tensors
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


def save_edit(
    run: RunFolder, name: str, cv: CanonicalVideo, textures: list[Tensor], meta: dict[str, Any]
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
        write_video(tmp / "video.mp4", cv.render(textures=textures).clamp(0, 1), cv.fps)
    return folder


def load_edit(run: RunFolder, name: str) -> list[Tensor]:
    path = run.edits / name / "textures.safetensors"
    if not NAME.fullmatch(name) or not path.is_file():
        have = sorted(p.name for p in run.edits.iterdir()) if run.edits.is_dir() else []
        raise UserError(f"no edit named '{name}' in {run.path}; available: {', '.join(have) or 'none'}")
    t = read_tensors(path, f"make edit '{name}' again, replacing it")
    try:
        return [t[str(k)] for k in range(len(t))]
    except KeyError:
        raise UserError(f"{path} is corrupt (layers missing); make the edit again") from None
