"""The edit folder: RUN/edits/NAME/{layer_K.png, textures.safetensors, edit.json, video.mp4}.

Textures are kept twice: PNG for the user's image editor, safetensors for exact re-rendering.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from ..atomic import atomic_dir, write_json
from ..canonical import CanonicalVideo, texture_filename
from ..errors import UserError
from ..run import RunFolder
from ..video import write_image, write_video


def edit_name(run: RunFolder, requested: str | None, kind: str) -> str:
    """The requested name, or the first free `kind`, `kind_2`, ... ."""
    if requested:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", requested):
            raise UserError(f"edit name '{requested}' may only hold letters, digits, '.', '_' and '-'")
        return requested
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
    if not path.is_file():
        have = sorted(p.name for p in run.edits.iterdir()) if run.edits.is_dir() else []
        raise UserError(f"no edit named '{name}' in {run.path}; available: {', '.join(have) or 'none'}")
    t = load_file(str(path))
    return [t[str(k)] for k in range(len(t))]
