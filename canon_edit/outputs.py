"""The one policy for output folders: canon-edit replaces only what it made, and only when told to.

Every folder canon-edit creates as an output (a run, a demo, rendered frames) gets a marker file
naming its kind; every PNG and video it writes carries a tag saying so (`video.MADE_BY`), and an
existing output file is replaced likewise only when it carries it and `force` is given.
An existing non-empty folder is reused only when its marker says it is canon-edit's folder of the
same kind, `force` is given, and it holds nothing but entries canon-edit writes there; then those
entries, and only those, are removed. Anything else (a folder holding footage, a file, a folder of
another kind) is refused with one line and left untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from .errors import ReplaceRefused, UserError
from .lock import lock_holder
from .video import made_by_canon_edit

MARKER = ".canon-edit.json"
MANIFEST = ".written.json"  # what canon-edit wrote in a folder it rewrites as a whole (a bake)
EDITABLE = (".png", ".jpg", ".jpeg", ".ply")  # what a user paints or edits in place: fingerprinted


def _fingerprints(folder: Path) -> dict[str, str]:
    """name → sha256 of every editable file under `folder` (a texture, a PLY), "" for the others:
    canon-edit's own data files (a bake's safetensors) are rebuilt when damaged, not kept."""
    out = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_file() and name != MANIFEST:
            editable = path.suffix.lower() in EDITABLE
            out[name] = hashlib.sha256(path.read_bytes()).hexdigest() if editable else ""
    return out


def write_manifest(folder: Path) -> None:
    """Record what is in `folder` now, as canon-edit wrote it (see `changed_since_written`)."""
    (folder / MANIFEST).write_text(json.dumps(_fingerprints(folder)) + "\n")


def changed_since_written(folder: Path) -> list[str]:
    """Files of `folder` added or changed since `write_manifest` (a texture painted in place, a PLY
    edited in a splat editor): what rewriting the folder would lose. [] without a manifest."""
    try:
        written = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(written, dict):
        return []
    return [name for name, print_ in _fingerprints(folder).items() if written.get(name) != print_]


def _kind_of(folder: Path, legacy: str | None) -> str | None:
    """The kind the marker names; folders from before markers are recognised by `legacy` (e.g. run.json)."""
    try:
        kind = json.loads((folder / MARKER).read_text()).get("kind")
        return kind if isinstance(kind, str) else None
    except (OSError, ValueError, AttributeError):
        pass
    return "legacy" if legacy and (folder / legacy).is_file() else None


def _leftover_temp(name: str, owned: frozenset[str]) -> bool:
    """A temp file or folder that atomic.py left for one of `owned` when a writer was killed."""
    return any(name.startswith(f".{entry.split('.')[0]}.") and ".tmp" in name for entry in owned)


def check_writable(folder: Path, what: str) -> None:
    """Refuse a path whose parent is a file or not writable, before any work is done."""
    parent = folder
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{what}: {parent} is a file, not a folder; choose another output path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{what}: {parent} is not writable; choose a writable output path")


def check_output_file(path: Path, force: bool) -> None:
    """An existing file at an output path is replaced only when told to (`force`) and only when
    canon-edit wrote it (the tag `video.made_by_canon_edit` reads); anything else is refused."""
    if not path.exists():
        return
    if path.is_dir():
        raise UserError(f"output: {path} is a folder; give a file path, or the folder without a suffix")
    if not made_by_canon_edit(path):
        raise UserError(
            f"{path} exists and carries no canon-edit tag (another tool's file, or one from before "
            "outputs were tagged); canon-edit never replaces it: choose another output path"
        )
    if not force:
        raise ReplaceRefused(f"{path} exists (an earlier canon-edit output)", path, "output path")


def claim_folder(
    path: str | Path,
    kind: str,
    owned: frozenset[str],
    *,
    force: bool,
    legacy: str | None = None,
    dry_run: bool = False,
) -> Path:
    """Make `path` an empty `kind` folder of canon-edit's, or refuse; see the module docstring.

    `owned` names the entries canon-edit writes in such a folder (the only ones `force` removes);
    `dry_run` makes every check and changes nothing, so bad input fails before slow work starts.
    """
    folder = Path(path)
    check_writable(folder, kind)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{kind}: {folder} is a file; choose a folder path for the output")
    entries = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if entries:
        found = _kind_of(folder, legacy)
        if found not in (kind, "legacy"):
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise UserError(
                f"{folder} already holds files that are not a canon-edit {kind} ({shown}); "
                "canon-edit never replaces them: choose another output folder"
            )
        if not force:
            raise ReplaceRefused(f"{folder} already holds a canon-edit {kind}", folder, "output folder")
        holder = lock_holder(folder)
        if holder is not None:
            raise UserError(f"{folder} is being written by process {holder['pid']}; wait for it or stop it")
        foreign = [e for e in entries if e not in owned and e != MARKER and not e.startswith(".")]
        if foreign:
            raise UserError(
                f"{folder} holds files canon-edit did not make ({', '.join(foreign[:3])}); "
                "move them out or choose another output folder"
            )
        if dry_run:
            return folder
        for name in entries:
            if name in owned or name == MARKER or _leftover_temp(name, owned):
                target = folder / name
                shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
    if dry_run:
        return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        mark_folder(folder, kind)
    except OSError as e:
        raise UserError(f"cannot write to {folder} ({e.strerror}); choose a writable output folder") from None
    return folder


def mark_folder(folder: Path, kind: str) -> None:
    """Say in `folder` that it is canon-edit's folder of `kind` (what `claim_folder` reads)."""
    (folder / MARKER).write_text(json.dumps({"kind": kind}) + "\n")
