"""Will a fit fit in memory? Checked before anything is read or written.

A fit that outgrows memory is killed by the kernel minutes in, without a word. A representation states
what its fit peaks at (`Representation.fit_memory`, a `FitCost`: a fixed part, bytes a pixel of a frame
and of the clip, and what each mask label adds, measured by `bench/fit_memory.py`); a fit on the CPU
whose clip needs more than the machine has available is refused in one line that names what would fit:
segments of so many frames (a portrait, fitted whole: so many frames), or a smaller size.
`CANON_EDIT_NO_MEMORY_CHECK=1` skips the check (an estimate can be wrong for an unusual clip).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

NO_CHECK_ENV = "CANON_EDIT_NO_MEMORY_CHECK"
MEMINFO = Path("/proc/meminfo")
GB = 1e9


@dataclass(frozen=True)
class FitCost:
    """What a fit peaks at, in bytes: `fixed`, plus `frame_pixel` a pixel of one frame (the grids and
    textures grow with the frame's size) and `clip_pixel` a pixel of the clip (the per-frame buffers),
    with one mask label; each label more is a layer more, `label_frame_pixel` and `label_clip_pixel`.

    A clip without masks, or whose labels are not known (None), is costed as one label: without masks
    it fits one layer fewer, for 7-25% less (bench/RESULTS.md, "Fit memory: each mask label is a layer").
    """

    fixed: float
    frame_pixel: float
    clip_pixel: float
    label_frame_pixel: float = 0.0
    label_clip_pixel: float = 0.0

    def per_frame(self, height: int, width: int, labels: int | None = 1) -> float:
        """Bytes a frame of the clip adds."""
        return (self.clip_pixel + self.label_clip_pixel * (max(labels or 1, 1) - 1)) * height * width

    def peak(self, frames: float, height: int, width: int, labels: int | None = 1) -> float:
        """The peak of a clip of `frames` frames of `height`×`width` with `labels` mask labels."""
        extra = max(labels or 1, 1) - 1
        fixed = self.fixed + (self.frame_pixel + self.label_frame_pixel * extra) * height * width
        return fixed + frames * self.per_frame(height, width, labels)


# a segmented fit first reads the whole clip to store it (`read_clip(as_uint8=True)`): its peak above the
# process's own, 8.3 bytes a pixel with one mask label on davis_breakdance at 854×480 (84 frames), and 4
# more a label (its float channel; 13.3 and 21.3 for one and three labels before the frames went
# straight into their tensor)
READ_COST = FitCost(0.0, 0.0, 9.0, 0.0, 4.0)


def available_memory() -> int | None:
    """Bytes a new allocation can take without killing anything: MemAvailable + SwapFree (Linux);
    None where that cannot be read."""
    try:
        fields = dict(line.split(":", 1) for line in MEMINFO.read_text().splitlines() if ":" in line)
        return sum(int(fields[key].split()[0]) * 1024 for key in ("MemAvailable", "SwapFree"))
    except (OSError, KeyError, ValueError, IndexError):
        return None


def check_fit_memory(
    method: str,
    cost: FitCost | None,
    shape: tuple[int, int, int] | None,
    labels: int | None = 1,
    *,
    segments: bool = False,
    whole: bool = False,
    available: int | None = None,
) -> None:
    """Refuse a fit of `shape` = (frames, height, width) with `labels` mask labels whose estimated peak
    exceeds what is available.

    `segments`: `frames` is a segment's length (a segmented fit holds one segment at a time). `whole`:
    the method fits a clip whole (a portrait), so the fix is fewer frames, not segments.
    """
    short = _short(cost, shape, labels, available)
    if short is None or cost is None or shape is None:
        return
    need, available = short
    frames, height, width = shape
    fits = math.floor(
        (available - cost.peak(0, height, width, labels)) / cost.per_frame(height, width, labels)
    )
    what = f"a segment of {frames} frames" if segments else f"the clip whole ({frames} frames)"
    fixes = []
    if fits >= 2 and whole:
        fixes.append(f"fewer frames (--max-frames {fits}, --stride)")
    elif fits >= 2:
        fixes.append(f"{'shorter segments' if segments else 'as segments'} (--segment-frames {fits})")
    fixes.append("at a smaller --size")
    raise UserError(
        f"fitting {what} at {width}x{height} with {method} needs about {need / GB:.1f} GB of memory "
        f"and this machine has {available / GB:.1f} GB available: fit it {' or '.join(fixes)} "
        f"(or set {NO_CHECK_ENV}=1 to try anyway)"
    )


def check_read_memory(
    shape: tuple[int, int, int] | None, labels: int | None = 1, *, available: int | None = None
) -> None:
    """Refuse a segmented fit whose whole clip, read once to be stored, would not fit in memory."""
    short = _short(READ_COST, shape, labels, available)
    if short is None or shape is None:
        return
    need, available = short
    frames, height, width = shape
    fits = math.floor(available / READ_COST.per_frame(height, width, labels))
    fix = f"fewer frames (--max-frames {fits}, --stride) or " if fits >= 2 else ""
    raise UserError(
        f"reading the clip ({frames} frames at {width}x{height}) to store it for its segments needs about "
        f"{need / GB:.1f} GB of memory and this machine has {available / GB:.1f} GB available: read "
        f"{fix}at a smaller --size (or set {NO_CHECK_ENV}=1 to try anyway)"
    )


def _short(
    cost: FitCost | None, shape: tuple[int, int, int] | None, labels: int | None, available: int | None
) -> tuple[float, int] | None:
    """(bytes needed, bytes available) when `shape` at `cost` needs more than is available, else None."""
    if cost is None or shape is None or os.environ.get(NO_CHECK_ENV, "") not in ("", "0"):
        return None
    available = available_memory() if available is None else available
    need = cost.peak(*shape, labels)
    return None if available is None or need <= available else (need, available)
