"""One writer per run folder: a fit or an edit holds RUN/.lock while it writes.

The lock file names the process (pid, host, command, start time), so a second writer is refused
with one line saying who holds the run. A lock whose process is gone (killed, crashed) is taken
over. Readers (render, eval, the viewer) never take the lock and never block.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from .errors import UserError

LOCK_NAME = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def lock_holder(folder: str | Path) -> dict | None:
    """The live holder of run `folder`'s lock, or None when the lock is free, stale or unreadable."""
    path = Path(folder) / LOCK_NAME
    try:
        info = json.loads(path.read_text())
        pid, host = int(info["pid"]), str(info["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host == socket.gethostname() and (pid == os.getpid() or not _alive(pid)):
        return None
    return info


@contextmanager
def run_lock(folder: str | Path, what: str) -> Iterator[None]:
    """Hold the write lock of run `folder` for the block; refuse when a live process holds it."""
    path = Path(folder) / LOCK_NAME
    mine = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": what,
        "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
    }
    # the lock appears with its content in one step (a hard link of a written temp file), so a
    # reader never sees an empty lock and mistakes it for a stale one
    tmp = path.with_name(f"{LOCK_NAME}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(mine))
    try:
        for _ in range(2):
            try:
                os.link(tmp, path)
                break
            except FileExistsError:
                holder = lock_holder(folder)
                if holder is not None:
                    raise UserError(
                        f"{folder} is being written by process {holder['pid']} on {holder['host']} "
                        f"({holder.get('command', '?')} since {holder.get('since', '?')}); wait for it to "
                        "finish or stop it, then try again"
                    ) from None
                path.unlink(missing_ok=True)  # stale: its process is gone
        else:
            raise UserError(f"cannot take the write lock {path}; another process keeps taking it, try again")
    finally:
        tmp.unlink(missing_ok=True)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()) == mine:  # never remove a lock another process took
                path.unlink()
