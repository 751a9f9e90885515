"""Atomic outputs: all or nothing, and readable like any file the user writes."""

from __future__ import annotations

import os

import torch
from safetensors.torch import save_file

from canon_edit.atomic import atomic_dir, atomic_path


def test_files_and_folders_get_the_umask_mode_whatever_the_writer_does(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    with atomic_path(tmp_path / "w.safetensors") as tmp:
        save_file({"x": torch.zeros(2)}, str(tmp))  # safetensors re-creates the file it writes
    with atomic_dir(tmp_path / "folder") as tmp:
        (tmp / "a.txt").write_text("a")
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o777 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "w.safetensors"]
