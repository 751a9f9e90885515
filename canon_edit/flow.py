"""Forward/backward optical flow with a consistency mask, cached beside a run.

OpenCV's DIS flow needs no weights and runs on any CPU; the forward–backward check marks where it
can be trusted (occlusions, disocclusions and the frame border fail it), which is what flow losses
and the warping-error metric need.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor
from tqdm import tqdm

from .atomic import atomic_path
from .errors import UserError
from .files import CorruptFile, MappedTensors
from .video import CHUNK, frame_chunks, to_uint8

DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
FLOW_FORMAT = "canon-edit-flow-1"


@dataclass
class Flow:
    """Flows in pixels (dx, dy) between consecutive frames, with masks of where they are trustworthy."""

    forward: Tensor
    backward: Tensor
    forward_ok: Tensor
    backward_ok: Tensor


def _gray_uint8(frames: Tensor) -> np.ndarray:
    """`T×3×H×W` float in [0,1] → `T×H×W` uint8 luma (what DIS works on)."""
    rgb = to_uint8(frames.detach().float()).permute(0, 2, 3, 1).cpu()
    return np.stack([cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in rgb.numpy()])


def compute_flow(frames: Tensor, preset: str = "medium", show_progress: bool = False) -> Flow:
    """DIS optical flow between consecutive frames of `T×3×H×W` frames, both directions."""
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise ValueError(f"compute_flow expects T×3×H×W frames with T ≥ 1, got {tuple(frames.shape)}")
    n_pairs, height, width = len(frames) - 1, *frames.shape[2:]
    flow = Flow(
        forward=torch.zeros(n_pairs, 2, height, width),
        backward=torch.zeros(n_pairs, 2, height, width),
        forward_ok=torch.zeros(n_pairs, height, width, dtype=torch.bool),
        backward_ok=torch.zeros(n_pairs, height, width, dtype=torch.bool),
    )
    pairs = flow_pairs(lambda a, b: frames[a:b], len(frames), preset, show_progress)
    for t, (fwd, bwd, fwd_ok, bwd_ok) in enumerate(pairs):
        flow.forward[t], flow.backward[t], flow.forward_ok[t], flow.backward_ok[t] = fwd, bwd, fwd_ok, bwd_ok
    return flow


def flow_pairs(
    read: Callable[[int, int], Tensor], frames: int, preset: str = "medium", show_progress: bool = False
) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """(forward, backward, forward_ok, backward_ok) of each consecutive pair, the frames read a chunk
    at a time (`read(start, stop)`: `B×3×H×W` in [0, 1]), so memory holds a chunk, not the clip."""
    if preset not in DIS_PRESETS:
        raise UserError(f"flow preset '{preset}' is unknown; use one of {', '.join(DIS_PRESETS)}")
    dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])
    bar = tqdm(total=max(0, frames - 1), desc="optical flow", unit="pair", disable=not show_progress)
    previous = None
    with bar:
        for ids in frame_chunks(frames):
            for gray in _gray_uint8(read(ids[0], ids[-1] + 1)):
                if previous is not None:
                    fwd = torch.from_numpy(dis.calc(previous, gray, None)).permute(2, 0, 1)[None]
                    bwd = torch.from_numpy(dis.calc(gray, previous, None)).permute(2, 0, 1)[None]
                    yield fwd[0], bwd[0], consistency_mask(fwd, bwd)[0], consistency_mask(bwd, fwd)[0]
                    bar.update()
                previous = gray


def warp(image: Tensor, flow: Tensor) -> Tensor:
    """Sample `B×C×H×W` images at x + flow (`B×2×H×W`, pixels); bilinear, border padding.

    `warp(frames[t+1], forward[t])` brings frame t+1 back onto frame t's pixel grid.
    """
    _, _, height, width = image.shape
    ys, xs = torch.meshgrid(
        torch.arange(height, device=image.device, dtype=image.dtype),
        torch.arange(width, device=image.device, dtype=image.dtype),
        indexing="ij",
    )
    flow = flow.to(image.dtype)
    x = (xs + flow[:, 0]) * (2 / max(width - 1, 1)) - 1
    y = (ys + flow[:, 1]) * (2 / max(height - 1, 1)) - 1
    grid = torch.stack([x, y], dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def consistency_mask(fwd: Tensor, bwd: Tensor) -> Tensor:
    """`B×H×W` bool: where `fwd` (`B×2×H×W`) is undone by `bwd` and lands inside the frame.

    The test of Sundaram et al. 2010: |f + b(x+f)|² < 0.01 (|f|² + |b(x+f)|²) + 0.5.
    """
    _, _, height, width = fwd.shape
    back = warp(bwd.float(), fwd.float())
    fwd = fwd.float()
    error = (fwd + back).square().sum(1)
    magnitude = fwd.square().sum(1) + back.square().sum(1)
    ys, xs = torch.meshgrid(
        torch.arange(height, device=fwd.device), torch.arange(width, device=fwd.device), indexing="ij"
    )
    x, y = xs + fwd[:, 0], ys + fwd[:, 1]
    inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
    return (error < 0.01 * magnitude + 0.5) & inside


def frames_key(frames: Tensor) -> str:
    """Shape plus a SHA-1 of a uint8 subsample (about 128 rows and columns per frame): a cache key."""
    return chunks_key(tuple(frames.shape), frames.split(CHUNK))


def chunks_key(shape: tuple[int, ...], chunks: Iterable[Tensor]) -> str:
    """`frames_key` of frames of `shape` given in consecutive chunks (a stored clip read in flat memory)."""
    _, _, height, width = shape
    step_y, step_x = max(1, height // 128), max(1, width // 128)
    digest = hashlib.sha1()
    for chunk in chunks:
        sample = to_uint8(chunk[:, :, ::step_y, ::step_x].detach().float())
        digest.update(sample.cpu().contiguous().numpy().tobytes())
    return f"{'x'.join(str(n) for n in shape)}-{digest.hexdigest()}"


def save_flow(path: str | Path, flow: Flow, key: str) -> None:
    """Save as safetensors (flows float16, masks uint8) with `key` in the metadata; atomic."""
    tensors = {
        "forward": flow.forward.half().contiguous().cpu(),
        "backward": flow.backward.half().contiguous().cpu(),
        "forward_ok": flow.forward_ok.to(torch.uint8).contiguous().cpu(),
        "backward_ok": flow.backward_ok.to(torch.uint8).contiguous().cpu(),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"key": key, "format": FLOW_FORMAT})


def write_flow(
    path: str | Path,
    read: Callable[[int, int], Tensor],
    shape: tuple[int, int, int],
    key: str,
    preset: str = "medium",
    show_progress: bool = False,
) -> None:
    """`save_flow`'s file for frames of `shape` (T, H, W) read a chunk at a time, written pair by pair.

    A long clip's flow does not fit in memory as float32 (18 bytes a pixel of every frame: 26 GB for
    two minutes at 480p); this writes each pair at its place in the file as it is computed. The file
    is safetensors, as `save_flow` writes it (same tensors, dtypes and values); atomic.
    """
    frames, height, width = shape
    n = max(0, frames - 1)
    specs = [("forward", "F16", [n, 2, height, width], 2), ("backward", "F16", [n, 2, height, width], 2)]
    specs += [("forward_ok", "U8", [n, height, width], 1), ("backward_ok", "U8", [n, height, width], 1)]
    header: dict[str, Any] = {"__metadata__": {"key": key, "format": FLOW_FORMAT}}
    offset = 0
    for name, dtype, dims, itemsize in specs:
        size = math.prod(dims) * itemsize
        header[name] = {"dtype": dtype, "shape": dims, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)  # the data aligned, so a mapping reads float16 in place
    start = 8 + len(text)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        f.truncate(start + offset)
        for t, pair in enumerate(flow_pairs(read, frames, preset, show_progress)):
            for (name, _, dims, itemsize), value in zip(specs, pair, strict=True):
                per_pair = math.prod(dims[1:]) * itemsize
                f.seek(start + header[name]["data_offsets"][0] + t * per_pair)
                stored = value.half() if itemsize == 2 else value.to(torch.uint8)
                f.write(stored.contiguous().numpy().tobytes())


def map_flow(path: str | Path) -> tuple[Flow, str, MappedTensors]:
    """A flow saved by `save_flow` mapped as stored (float16 flows, uint8 masks), its key, the mapping.

    A reader of a long clip's flow converts pair by pair and releases the mapping as it goes.
    """
    path = Path(path)
    names = ("forward", "backward", "forward_ok", "backward_ok")
    try:
        file = MappedTensors(path, "", required=names)
    except CorruptFile as e:
        raise UserError(f"flow: cannot read {path} ({e.reason}); delete it to recompute the flow") from None
    if file.metadata.get("format") != FLOW_FORMAT:
        raise UserError(f"flow: {path} is not a canon-edit flow file; delete it to recompute")
    return Flow(*(file.tensors[name] for name in names)), str(file.metadata.get("key")), file


def load_flow(path: str | Path) -> tuple[Flow, str]:
    """Load a flow saved by `save_flow` (flows back to float32) and its key."""
    flow, key, _ = map_flow(path)
    return _unpacked(flow), key


def _unpacked(flow: Flow) -> Flow:
    return Flow(flow.forward.float(), flow.backward.float(), flow.forward_ok.bool(), flow.backward_ok.bool())


def _cached(cache_path: Path, key: str) -> tuple[Flow, MappedTensors] | None:
    """The cache mapped (see `map_flow`) when it holds the flow of `key`; else (absent, unreadable) None."""
    if not cache_path.is_file():
        return None
    try:
        flow, cached_key, file = map_flow(cache_path)
    except UserError:
        return None
    return (flow, file) if cached_key == key else None


def stored_flow(
    cache_path: str | Path,
    frames_key: str,
    read: Callable[[int, int], Tensor],
    shape: tuple[int, int, int],
    preset: str = "medium",
    show_progress: bool = False,
) -> tuple[Flow, MappedTensors]:
    """The cached flow of the frames whose `chunks_key` is `frames_key`, mapped (see `map_flow`).

    When the cache is missing, unreadable or for other frames, the flow is computed from the frames,
    read a chunk at a time (`read(start, stop)`; `shape` is T, H, W), and cached first.
    """
    cache_path, key = Path(cache_path), f"{frames_key}-dis-{preset}"
    cached = _cached(cache_path, key)
    if cached is None:
        write_flow(cache_path, read, shape, key, preset, show_progress)
        flow, _, file = map_flow(cache_path)
        return flow, file
    return cached


def load_or_compute_flow(
    cache_path: str | Path, frames: Tensor, show_progress: bool = False, preset: str = "medium"
) -> Flow:
    """Reuse the cached flow when it was computed from these frames with this preset; else compute, save.

    Either way the flow is what the cache holds (float16 flows), so a resumed fit sees the same data.
    """
    shape = (len(frames), *frames.shape[2:])
    key = frames_key(frames)
    flow, _ = stored_flow(cache_path, key, lambda a, b: frames[a:b], shape, preset, show_progress)
    return _unpacked(flow)
