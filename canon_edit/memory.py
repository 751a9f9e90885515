"""Will a fit fit in memory? Checked before anything is read or written.

A fit that outgrows memory is killed by the kernel minutes in, without a word. A representation states
what its fit peaks at (`Representation.fit_memory`: a fixed part and bytes per pixel of a frame and of
the clip, measured by `bench/fit_memory.py`); a fit on the CPU whose clip needs more than the machine has
available is refused in one line that names what would fit: segments of so many frames, or a smaller
size. `CANON_EDIT_NO_MEMORY_CHECK=1` skips the check (an estimate can be wrong for an unusual clip).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from .errors import UserError

NO_CHECK_ENV = "CANON_EDIT_NO_MEMORY_CHECK"
MEMINFO = Path("/proc/meminfo")
GB = 1e9
# a segmented fit first reads the whole clip to store it (`read_clip(as_uint8=True)`): its peak, with one
# mask label, above the process's own: 13.3 bytes a pixel on davis_breakdance at 854×480 (84 frames)
READ_COST = (0.0, 0.0, 14.0)


def available_memory() -> int | None:
    """Bytes a new allocation can take without killing anything: MemAvailable + SwapFree (Linux);
    None where that cannot be read."""
    try:
        fields = dict(line.split(":", 1) for line in MEMINFO.read_text().splitlines() if ":" in line)
        return sum(int(fields[key].split()[0]) * 1024 for key in ("MemAvailable", "SwapFree"))
    except (OSError, KeyError, ValueError, IndexError):
        return None


def fit_bytes(cost: tuple[float, float, float], frames: int, height: int, width: int) -> float:
    """A fit's peak memory: `cost` = (fixed bytes, bytes a pixel of one frame, bytes a pixel of the clip)
    (the model's grids and textures grow with the frame's size, the per-frame buffers with the clip's)."""
    fixed, per_frame_pixel, per_clip_pixel = cost
    return fixed + (per_frame_pixel + per_clip_pixel * frames) * height * width


def check_fit_memory(
    method: str,
    cost: tuple[float, float, float] | None,
    shape: tuple[int, int, int] | None,
    *,
    segments: bool = False,
    available: int | None = None,
) -> None:
    """Refuse a fit of `shape` = (frames, height, width) whose estimated peak exceeds what is available.

    `segments`: `frames` is a segment's length (a segmented fit holds one segment at a time).
    """
    short = _short(cost, shape, available)
    if short is None or cost is None or shape is None:
        return
    need, available = short
    frames, height, width = shape
    fits = math.floor((available - fit_bytes(cost, 0, height, width)) / (cost[2] * height * width))
    what = f"a segment of {frames} frames" if segments else f"the clip whole ({frames} frames)"
    fixes = []
    if fits >= 2:
        fixes.append(f"{'shorter segments' if segments else 'as segments'} (--segment-frames {fits})")
    fixes.append("at a smaller --size")
    raise UserError(
        f"fitting {what} at {width}x{height} with {method} needs about {need / GB:.1f} GB of memory "
        f"and this machine has {available / GB:.1f} GB available: fit it {' or '.join(fixes)} "
        f"(or set {NO_CHECK_ENV}=1 to try anyway)"
    )


def check_read_memory(shape: tuple[int, int, int] | None, *, available: int | None = None) -> None:
    """Refuse a segmented fit whose whole clip, read once to be stored, would not fit in memory."""
    short = _short(READ_COST, shape, available)
    if short is None or shape is None:
        return
    need, available = short
    frames, height, width = shape
    fits = math.floor(available / (READ_COST[2] * height * width))
    fix = f"fewer frames (--max-frames {fits}, --stride) or " if fits >= 2 else ""
    raise UserError(
        f"reading the clip ({frames} frames at {width}x{height}) to store it for its segments needs about "
        f"{need / GB:.1f} GB of memory and this machine has {available / GB:.1f} GB available: read "
        f"{fix}at a smaller --size (or set {NO_CHECK_ENV}=1 to try anyway)"
    )


def _short(
    cost: tuple[float, float, float] | None, shape: tuple[int, int, int] | None, available: int | None
) -> tuple[float, int] | None:
    """(bytes needed, bytes available) when `shape` at `cost` needs more than is available, else None."""
    if cost is None or shape is None or os.environ.get(NO_CHECK_ENV, "") not in ("", "0"):
        return None
    available = available_memory() if available is None else available
    need = fit_bytes(cost, *shape)
    return None if available is None or need <= available else (need, available)
