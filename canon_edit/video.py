"""Reading and writing clips: videos (PyAV), frame folders, clip folders with masks, PNG images.

Everything that enters the application passes through `read_clip` / `read_image`, so bad input is
caught here and reported as a one-line `UserError` naming the problem and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import cv2
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo
from torch import Tensor

from .atomic import atomic_path
from .errors import UserError

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".gif", ".mkv", ".avi", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MADE_BY = "canon-edit"  # the tag every PNG and video canon-edit writes carries
WRITE_VIDEO_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}
DEFAULT_FPS = 30.0
FPS_FILE = "fps.txt"  # a frame folder may state its rate in this file
# A gray mask with more distinct values than this is a soft (matte) mask, not a label image.
MAX_GRAY_LABELS = 16
ASPECT_TOLERANCE = 0.01
# mask files read to count a clip's labels before it is read (`mask_channels`): 64 take ~0.3 s at 480p
MASK_SAMPLE = 64
CV_MAX_CHANNELS = 4  # cv2.resize rejects more channels for some filter/size combinations
# x264's presets, fastest first (an unknown name would fail only as the encoder opens)
X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"
)  # fmt: skip
# frames per chunk when a video is rendered, written or evaluated as a stream: a render's buffers
# stay small enough to be reused (canonical.RENDER_CHUNK) and memory does not grow with the clip
CHUNK = 4


@dataclass
class Clip:
    """A video in memory: frames `T×3×H×W` in [0,1] (uint8 0..255 where read with `as_uint8`), optional
    masks `T×K×H×W` (one channel per label)."""

    frames: Tensor
    fps: float
    masks: Tensor | None = None
    source: str = ""

    @property
    def T(self) -> int:
        return int(self.frames.shape[0])

    @property
    def H(self) -> int:
        return int(self.frames.shape[2])

    @property
    def W(self) -> int:
        return int(self.frames.shape[3])

    def read(self, start: int, stop: int) -> Tensor:
        """Frames [start, stop), as `run.StoredClip.read` gives them from a run's stored clip."""
        return self.frames[start:stop]

    def read_uint8(self, start: int, stop: int) -> Tensor:
        """Frames [start, stop) as 8 bits, as `run.StoredClip.read_uint8` gives them."""
        return to_uint8(self.frames[start:stop])

    @property
    def has_masks(self) -> bool:
        return self.masks is not None

    def read_masks(self, start: int, stop: int) -> Tensor:
        """The masks of frames [start, stop) (B×K×H×W) of a clip that has them."""
        if self.masks is None:
            raise ValueError("this clip has no masks")
        return self.masks[start:stop]

    def read_foreground(self, start: int, stop: int) -> Tensor | None:
        """The union of the masks' labels over frames [start, stop) (B×H×W), or None without masks."""
        return None if self.masks is None else self.masks[start:stop].amax(1)


def to_uint8(frames: Tensor) -> Tensor:
    """Frames in [0, 1] (values outside clamped) as uint8, rounded half to even as the writers round;
    uint8 frames as they are."""
    if frames.dtype == torch.uint8:
        return frames
    return frames.clamp(0, 1).mul(255).round().to(torch.uint8)


def frame_chunks(n: int, size: int = CHUNK) -> Iterator[list[int]]:
    """Frame ids 0..n-1 in consecutive chunks of `size`."""
    for start in range(0, n, size):
        yield list(range(start, min(start + size, n)))


def _natural_key(path: Path) -> list[int | str]:
    """Sort `frame2.png` before `frame10.png`; zero-padded names sort as plain names do."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _list_images(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes), key=_natural_key
    )


def _check_positive(name: str, value: int | float | None) -> None:
    if value is not None and value < 1:
        raise UserError(f"{name}={value} is invalid; give {name} >= 1")


def _even_size(height: int, width: int, size: int | None) -> tuple[int, int]:
    """Target size with short side `size`, aspect kept, both sides even (H.264 needs even sizes)."""
    if size is None:
        return height, width
    scale = size / min(height, width)
    return max(2, round(height * scale) // 2 * 2), max(2, round(width * scale) // 2 * 2)


def _resize_hwc(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an `H×W×C` array: area filter when shrinking (no aliasing), bilinear when enlarging."""
    if image.shape[:2] == (height, width):
        return image
    shrink = height * width < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    groups = [
        cv2.resize(
            np.ascontiguousarray(image[..., c : c + CV_MAX_CHANNELS]),
            (width, height),
            interpolation=interpolation,
        )
        for c in range(0, image.shape[2], CV_MAX_CHANNELS)
    ]
    return np.concatenate([g.reshape(height, width, -1) for g in groups], axis=2)


def resize_frames(frames: Tensor, height: int, width: int) -> Tensor:
    """Resize `T×C×H×W` frames with the same filter `read_clip` uses, so frames and masks stay aligned."""
    if frames.shape[-2:] == (height, width):
        return frames
    array = frames.detach().cpu().float().permute(0, 2, 3, 1).numpy()
    resized = np.stack([_resize_hwc(frame, height, width) for frame in array])
    return torch.from_numpy(resized).permute(0, 3, 1, 2).to(device=frames.device, dtype=frames.dtype)


def _load_pil(path: Path, what: str) -> Image.Image:
    if not path.is_file():
        raise UserError(f"{what}: {path} does not exist; check the path")
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise UserError(f"{what}: cannot decode {path} ({e}); re-export it as PNG or JPEG") from e
    return image


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)


def _to_rgb_uint8(image: Image.Image, keep_alpha: bool) -> np.ndarray:
    """`H×W×3` (or `×4` with alpha) uint8; 16-bit images are scaled down, EXIF rotation applied."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        gray = np.asarray(image, dtype=np.float64) / 65535.0
        image = Image.fromarray(np.round(np.clip(gray, 0, 1) * 255).astype(np.uint8))
    mode = "RGBA" if keep_alpha and _has_alpha(image) else "RGB"
    return np.asarray(image.convert(mode))


def _to_tensor(frames: list[np.ndarray]) -> Tensor:
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div_(255.0)


def read_image(path: str | Path) -> Tensor:
    """Read an image as `C×H×W` float32 in [0,1]; C = 4 when the file has alpha (edits keep it)."""
    array = _to_rgb_uint8(_load_pil(Path(path), "image"), keep_alpha=True)
    return _to_tensor([array])[0]


def _reason(error: Exception) -> str:
    """FFmpeg's own words without the errno and path PyAV adds around them."""
    return getattr(error, "strerror", None) or str(error)


def _select(n: int, stride: int, max_frames: int | None) -> list[int]:
    return list(range(0, n, stride))[:max_frames]


class _FrameStack:
    """Frames put one by one into the clip's `T×3×H×W` tensor as they are decoded.

    The clip is held once, in its final type and layout: a list of decoded arrays, their stack and its
    permuted copy peaked at 13.3 bytes a pixel for a uint8 read with a mask (22.3 as float), and glibc's
    heap kept the list's 3 after the read (bench/RESULTS.md, "Reading frames"). The layout is the one
    that path gave, which the fits were measured with: uint8 planar, float channels-last (a fit's flow
    and metrics view the frames as H×W×3 for free; planar float frames cost a camel fit about 10% more
    at its peak in one try). `expected` sizes the tensor; a video that decodes more frames than its
    header said grows it.
    """

    def __init__(self, expected: int, as_uint8: bool) -> None:
        self.expected = max(expected, 1)
        self.dtype = torch.uint8 if as_uint8 else torch.float32
        self.layout = torch.contiguous_format if as_uint8 else torch.channels_last
        self.out: Tensor | None = None
        self.count = 0

    def add(self, frame: np.ndarray) -> None:
        """One `H×W×3` uint8 frame; as float, exactly `frame / 255`."""
        if self.out is None:
            shape = (self.expected, 3, *frame.shape[:2])
            self.out = torch.empty(shape, dtype=self.dtype, memory_format=self.layout)
        elif self.count == len(self.out):
            shape = (self.count + max(self.count // 2, 16), *self.out.shape[1:])
            grown = torch.empty(shape, dtype=self.dtype, memory_format=self.layout)
            grown[: self.count] = self.out
            self.out = grown
        target = self.out[self.count]
        target.numpy()[...] = frame.transpose(2, 0, 1)  # a decoded frame may be read-only: numpy copies it
        if self.dtype != torch.uint8:
            target.div_(255.0)
        self.count += 1

    @property
    def hw(self) -> tuple[int, int]:
        assert self.out is not None
        return int(self.out.shape[2]), int(self.out.shape[3])

    def tensor(self) -> Tensor:
        """The frames added; a tensor sized for more is copied down to them (its storage let go)."""
        assert self.out is not None
        return self.out if self.count == len(self.out) else self.out[: self.count].clone()


def _read_folder(
    folder: Path, stride: int, max_frames: int | None, size: int | None, as_uint8: bool
) -> tuple[_FrameStack, int, tuple[int, int]]:
    """Selected frames of a folder (resized), the number of source frames, the source (H, W)."""
    files = _list_images(folder, IMAGE_SUFFIXES)
    if not files:
        raise UserError(
            f"frames: no .png/.jpg files in {folder}; give a video file or a folder of frame images"
        )
    selected = _select(len(files), stride, max_frames)
    frames = _FrameStack(len(selected), as_uint8)
    source_hw = (0, 0)
    for index in selected:
        array = _to_rgb_uint8(_load_pil(files[index], "frames"), keep_alpha=False)
        if not frames.count:
            source_hw = array.shape[:2]
        elif array.shape[:2] != source_hw:
            raise UserError(
                f"frames: {files[index]} is {array.shape[1]}x{array.shape[0]} but the first selected frame "
                f"is {source_hw[1]}x{source_hw[0]}; give frames of one size"
            )
        frames.add(_resize_hwc(array, *_even_size(*source_hw, size)))
    return frames, len(files), source_hw


def _stated_frames(container: av.container.InputContainer) -> int:
    """The video stream's frame count as its container states it, else as its duration and rate give it
    (WebM and Matroska state no count); 0 where neither is stated."""
    stream = container.streams.video[0]
    rate = _stream_rate(stream)
    return stream.frames or round(float((container.duration or 0) / av.time_base * (rate or 0)))


def _stream_rate(stream: av.video.stream.VideoStream) -> Fraction | None:
    """The stream's frame rate (a Fraction), as stated or as guessed from its timing; None if neither."""
    return stream.average_rate or stream.guessed_rate


def _decoded(container: av.container.InputContainer) -> Iterator[np.ndarray]:
    """Decoded RGB frames, turned upright by the stream's display rotation (phone videos)."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    for frame in container.decode(stream):
        array = frame.to_ndarray(format="rgb24")
        quarter_turns = round(frame.rotation / 90) % 4
        yield np.ascontiguousarray(np.rot90(array, quarter_turns)) if quarter_turns else array


def _read_video(
    path: Path, stride: int, max_frames: int | None, size: int | None, count_all: bool, as_uint8: bool
) -> tuple[_FrameStack, int, tuple[int, int], float | None]:
    """Selected frames of a video (resized), the number of source frames, the source (H, W), its fps.

    Decoding stops after the last selected frame unless `count_all` (masks must match every frame).
    A stream that changes resolution midway is resized to the first selected frame's size.
    """
    source_hw = out_hw = (0, 0)
    n_source = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UserError(f"video: {path} has no video stream; give a file that contains video")
            rate = _stream_rate(container.streams.video[0])
            frames = _FrameStack(len(_select(_stated_frames(container), stride, max_frames)), as_uint8)
            for index, array in enumerate(_decoded(container)):
                full = max_frames is not None and frames.count >= max_frames
                if full and not count_all:
                    break
                n_source = index + 1
                if index % stride == 0 and not full:
                    if not frames.count:
                        source_hw = array.shape[:2]
                        out_hw = _even_size(*source_hw, size)
                    frames.add(_resize_hwc(array, *out_hw))
    except (av.FFmpegError, OSError) as e:
        raise UserError(
            f"video: cannot decode {path} ({_reason(e)}); check it is a complete, valid video"
        ) from e
    if not frames.count:
        raise UserError(f"video: {path} contains no decodable frames; give a video with at least one frame")
    return frames, n_source, source_hw, float(rate) if rate else None


def _mask_values(image: Image.Image) -> tuple[np.ndarray, int | None]:
    """An `H×W` integer map (palette index, gray value or packed RGB colour) and its full-scale value.

    The full scale is None where values can only be labels (palette indices, colours).
    """
    if image.mode == "P":
        return np.asarray(image).astype(np.int32), None
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        return np.asarray(image.convert("I")).astype(np.int32), 65535
    if image.mode not in ("RGB", "RGBA"):
        return np.asarray(image.convert("L")).astype(np.int32), 255
    rgb = np.asarray(image.convert("RGB")).astype(np.int32)
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return rgb[..., 0], 255
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2], None


def _read_masks(
    folder: Path,
    n_source: int,
    source_hw: tuple[int, int],
    out_hw: tuple[int, int],
    stride: int,
    max_frames: int | None,
) -> Tensor:
    """`T×K×H×W` masks: K=1 for binary or soft masks, else one channel per distinct non-zero label."""
    if not folder.is_dir():
        raise UserError(f"masks: {folder} is not a folder; give a folder with one PNG mask per frame")
    files = _list_images(folder, (".png",))
    if not files:
        raise UserError(f"masks: no PNG files in {folder}; give a folder with one PNG mask per frame")
    if len(files) != n_source:
        raise UserError(
            f"masks: found {len(files)} PNG files in {folder} for {n_source} frames; "
            "give one mask per frame (same sorted order)"
        )
    source_aspect = source_hw[1] / source_hw[0]
    maps: list[np.ndarray] = []
    full_scale: int | None = 255
    for index in _select(n_source, stride, max_frames):
        values, scale = _mask_values(_load_pil(files[index], "masks"))
        full_scale = _merged_scale(full_scale, scale)
        mask_aspect = values.shape[1] / values.shape[0]
        if abs(mask_aspect / source_aspect - 1) > ASPECT_TOLERANCE:
            raise UserError(
                f"masks: {files[index]} is {values.shape[1]}x{values.shape[0]} but the frames are "
                f"{source_hw[1]}x{source_hw[0]}; give masks with the frames' size or aspect ratio"
            )
        maps.append(_narrowest(values))
    labels, soft, k = _mask_layout(maps, full_scale)

    def channels(m: np.ndarray) -> np.ndarray:
        """One map as H×W×k float: its soft values, its foreground, or a channel per label."""
        if soft:
            return (m.astype(np.float32) / full_scale)[..., None]
        if k == 1:
            return (m > 0).astype(np.float32)[..., None]
        return np.stack([m == label for label in labels], axis=-1).astype(np.float32)

    # written frame by frame into the T×K×H×W result: a long clip's masks are held as the result and
    # as one byte a pixel of labels, not as float copies of every frame
    out = np.empty((len(maps), k, *out_hw), np.float32)
    for i, m in enumerate(maps):
        out[i] = _resize_hwc(channels(m), *out_hw).transpose(2, 0, 1)
    return torch.from_numpy(out).clamp_(0.0, 1.0)


def _merged_scale(full_scale: int | None, scale: int | None) -> int | None:
    """The full scale of the masks read so far, with one more mask's (`_mask_values`)."""
    return scale if scale is None or full_scale is None else max(scale, full_scale)


def _mask_layout(maps: list[np.ndarray], full_scale: int | None) -> tuple[np.ndarray, bool, int]:
    """The non-zero labels over `maps`, whether they are soft values (a gray ramp) rather than labels,
    and the mask channels they make.

    Gray values are labels up to `MAX_GRAY_LABELS` of them, past that a soft mask's levels; palette
    indices and colours (`full_scale` None) are always labels. A single label is one channel either way.
    """
    labels = np.unique(np.concatenate([np.unique(m) for m in maps]))
    labels = labels[labels != 0]
    soft = full_scale is not None and len(labels) > MAX_GRAY_LABELS
    return labels, soft, 1 if soft else max(len(labels), 1)


def _clip_masks(path: Path, masks: str | Path | None) -> str | Path | None:
    """`masks`, else the masks/ beside a clip folder's frames/."""
    if masks is None and path.is_dir() and _frames_folder(path) != path and (path / "masks").is_dir():
        return path / "masks"
    return masks


def mask_channels(
    path: str | Path, masks: str | Path | None = None, *, max_frames: int | None = None, stride: int = 1
) -> int | None:
    """How many mask channels (so foreground layers) `read_clip` would give the clip: 0 without masks.

    Read from at most `MASK_SAMPLE` of the mask files the selection keeps, spread over the clip, for
    estimating a fit's memory before reading it: a label seen only between the sampled frames is missed.
    None when the masks cannot be read (`read_clip` then reports what is wrong).
    """
    masks = _clip_masks(Path(path), masks)
    if masks is None:
        return 0
    try:
        files = _list_images(Path(masks), (".png",))
        kept = _select(len(files), stride, max_frames)
        spread = np.linspace(0, len(kept) - 1, min(len(kept), MASK_SAMPLE)).round().astype(int)
        maps: list[np.ndarray] = []
        full_scale: int | None = 255
        for index in (kept[i] for i in spread):
            with Image.open(files[index]) as image:
                values, scale = _mask_values(image)
            full_scale = _merged_scale(full_scale, scale)
            maps.append(values)
    except (OSError, ValueError, UnidentifiedImageError):
        return None
    if not maps:
        return None
    return _mask_layout(maps, full_scale)[2]


def _narrowest(values: np.ndarray) -> np.ndarray:
    """An integer map in the smallest unsigned type that holds it (a mask is 1 byte a pixel, not 4)."""
    low, high = int(values.min()), int(values.max())
    for kind in (np.uint8, np.uint16):
        if low >= 0 and high <= np.iinfo(kind).max:
            return values.astype(kind)
    return values


def stated_fps(path: str | Path) -> float | None:
    """The frame rate a clip or frame folder states in an `fps.txt` (e.g. "24"), if it has one.

    It may sit in the clip folder or in its frames/ folder.
    """
    path = Path(path)
    for folder in (path, path / "frames"):
        note = folder / FPS_FILE
        if note.is_file():
            try:
                rate = float(note.read_text().strip())
            except (ValueError, OSError, UnicodeDecodeError):
                raise UserError(f"{note} must hold one number, the frame rate (e.g. 24)") from None
            if not rate > 0 or rate == float("inf"):
                raise UserError(f"{note} must hold a positive frame rate, got {rate}")
            return rate
    return None


def _frames_folder(path: Path) -> Path:
    """A clip folder's frames/, else the folder itself (a folder of frames)."""
    return path / "frames" if (path / "frames").is_dir() else path


def clip_shape(
    path: str | Path, *, max_frames: int | None = None, stride: int = 1, size: int | None = None
) -> tuple[int, int, int] | None:
    """(frames, height, width) of the clip `read_clip` would read, from file names and headers only.

    For deciding, before decoding anything, whether a clip can be held at all. None when that cannot be
    told cheaply (a video whose container states neither its frame count nor its duration, an
    unreadable header): `read_clip` then reports what is wrong. A rotated video's sides may be swapped;
    the number of pixels is right.
    """
    path = Path(path)
    try:
        if path.is_dir():
            files = _list_images(_frames_folder(path), IMAGE_SUFFIXES)
            if not files:
                return None
            with Image.open(files[0]) as image:
                width, height = image.size
            count = len(files)
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                width, height = stream.codec_context.width, stream.codec_context.height
                count = _stated_frames(container)
        else:
            return None
    except (OSError, IndexError, ValueError, UnidentifiedImageError, av.FFmpegError):
        return None
    frames = len(_select(count, stride, max_frames))
    if not frames or not width or not height:
        return None
    return (frames, *_even_size(height, width, size))


def read_clip(
    path: str | Path,
    masks: str | Path | None = None,
    *,
    max_frames: int | None = None,
    stride: int = 1,
    size: int | None = None,
    fps: float | None = None,
    as_uint8: bool = False,
) -> Clip:
    """Read a video file, a folder of frames, or a clip folder (`frames/` + optional `masks/`).

    Every `stride`-th source frame is kept, then the first `max_frames`; masks get the same selection.
    `size` is the short side in pixels (aspect kept, even sides). `fps` is the rate of a frame folder
    (default: the number in the folder's `fps.txt`, else 30) and overrides a video's own; the clip's
    fps is divided by `stride`. `as_uint8` keeps the frames as read, 0..255 (a quarter of the float
    frames' memory), for a caller that stores them rather than fits them (a long clip's segments).
    """
    _check_positive("max_frames", max_frames)
    _check_positive("stride", stride)
    _check_positive("size", size)
    if fps is not None and fps <= 0:
        raise UserError(f"fps={fps} is invalid; give a positive frame rate")
    path = Path(path)
    if not path.exists():
        raise UserError(f"input: {path} does not exist; check the path")
    if path.is_dir():
        masks = _clip_masks(path, masks)
        frames, n_source, source_hw = _read_folder(_frames_folder(path), stride, max_frames, size, as_uint8)
        rate = fps or stated_fps(path) or DEFAULT_FPS
    elif path.suffix.lower() in VIDEO_SUFFIXES:
        frames, n_source, source_hw, video_rate = _read_video(
            path, stride, max_frames, size, count_all=masks is not None, as_uint8=as_uint8
        )
        rate = fps or video_rate or DEFAULT_FPS
    else:
        raise UserError(
            f"input: {path} has unsupported suffix '{path.suffix}'; give a video "
            f"({', '.join(VIDEO_SUFFIXES)}) or a folder of .png/.jpg frames"
        )
    tensor = frames.tensor()
    mask_tensor = (
        None
        if masks is None
        else _read_masks(Path(masks), n_source, source_hw, frames.hw, stride, max_frames)
    )
    return Clip(frames=tensor, fps=rate / stride, masks=mask_tensor, source=str(path))


def uint8_frames(frames: Tensor) -> Iterator[np.ndarray]:
    """Each `C×H×W` frame of `frames` (float in [0,1]) as `H×W×C` uint8, exactly `x.clamp(0, 1).mul(255)
    .round()`, in one array overwritten by the next frame.

    Per plane, one OpenCV pass computes x·255 in float32 and saturate-casts it to 8 bits, rounding half
    to even: the clamp, the scale and the rounding of the torch chain (tested on the ties), into arrays
    reused frame after frame; `merge` interleaves the planes. The torch chain (five passes, an
    interleaving copy, a chunk-sized buffer) cost a quarter of a 480p render; this about a tenth.
    """
    planes = frames.detach().float().contiguous().cpu().numpy()
    scaled = [np.empty(planes.shape[2:], np.uint8) for _ in range(planes.shape[1])]
    image = np.empty((*planes.shape[2:], planes.shape[1]), np.uint8)
    for planar in planes:
        for plane, out in zip(planar, scaled, strict=True):
            cv2.multiply(plane, 255.0, dst=out, dtype=cv2.CV_8U)
        yield cv2.merge(scaled, dst=image).reshape(image.shape)


def uint8_images(frames: Tensor) -> Iterator[np.ndarray]:
    """Each frame of `frames` as H×W×3 uint8: uint8 frames as they are (views), float ones through
    `uint8_frames` (one array overwritten by the next frame)."""
    if frames.dtype != torch.uint8:
        yield from uint8_frames(frames)
        return
    for frame in frames:
        yield frame.permute(1, 2, 0).numpy()


def joined_images(left: Iterable[np.ndarray], right: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Image by image, `left | right` (H×W×3 uint8 each) as one H×(W+W')×3 image, in one array
    overwritten by the next: the pixels of converting `torch.cat([left, right], 3)` of the frames,
    without a float copy of the pair."""
    joined = None
    for a, b in zip(left, right, strict=True):
        shape = (a.shape[0], a.shape[1] + b.shape[1], 3)
        joined = joined if joined is not None and joined.shape == shape else np.empty(shape, np.uint8)
        joined[:, : a.shape[1]] = a
        joined[:, a.shape[1] :] = b
        yield joined


@dataclass(frozen=True)
class X264:
    """How canon-edit's videos are encoded. The default, veryfast at CRF 16, encodes 2× as fast as
    x264's own default (medium, CRF 18 here before) at the same fidelity (−0.05 to +0.46 dB on three
    DAVIS clips at 480p) for files a fifth to a third larger (bench/encode_presets.py): a fit and each
    edit write two videos, and encoding was most of `render`'s time."""

    crf: int = 16
    preset: str = "veryfast"

    def __post_init__(self) -> None:
        if not 0 <= self.crf <= 51:
            raise UserError(
                f"CRF {self.crf} is outside x264's 0..51; lower is larger and closer to the frames"
            )
        if self.preset not in X264_PRESETS:
            raise UserError(f"unknown x264 preset '{self.preset}'; use one of {', '.join(X264_PRESETS)}")


ENCODING = X264()


class VideoWriter:
    """H.264 yuv420p (plays everywhere) written a chunk of `T×3×H×W` frames at a time.

    Atomic like every output: the video appears at `path` only when the `with` block ends without
    an error, so a render that fails or is stopped midway leaves nothing there. Odd sizes are padded
    by edge replication.
    """

    def __init__(
        self, path: str | Path, fps: float, x264: X264 = ENCODING, check: Callable[[], object] | None = None
    ) -> None:
        self.path, self.check = Path(path), check
        if self.path.suffix.lower() not in WRITE_VIDEO_FORMATS:
            raise UserError(
                f"output: cannot write H.264 into {self.path}; give a path ending in "
                f"{', '.join(WRITE_VIDEO_FORMATS)}"
            )
        self.fps, self.x264 = fps, x264
        self._stream: av.video.stream.VideoStream | None = None

    def __enter__(self) -> VideoWriter:
        self._context = self._open()
        self._context.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._context.__exit__(kind, error, trace)

    @contextmanager
    def _open(self) -> Iterator[None]:
        """The encoder on a temp file: flushed and renamed onto `path` after a block without error."""
        container_format = WRITE_VIDEO_FORMATS[self.path.suffix.lower()]
        options = {"movflags": "+faststart"} if container_format in ("mp4", "mov") else {}
        with atomic_path(self.path, self.check) as tmp:
            with self._errors():
                self._container = av.open(str(tmp), "w", format=container_format, container_options=options)
                self._container.metadata["comment"] = MADE_BY  # so a later render may replace it (force)
            try:
                yield
                if self._stream is None:
                    raise ValueError(f"no frames were written to {self.path}")
                with self._errors():
                    self._container.mux(self._stream.encode())
            finally:
                with self._errors():
                    self._container.close()

    def write(self, frames: Tensor) -> None:
        """Encode `frames` (T×3×H×W in [0,1]; values outside are clamped) after those written before."""
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"VideoWriter expects T×3×H×W frames, got {tuple(frames.shape)}")
        self.write_images(uint8_frames(frames))

    def write_images(self, images: Iterable[np.ndarray]) -> None:
        """Encode H×W×3 uint8 frames after those written before (each may be overwritten once the next
        is asked for: the encoder copies it)."""
        for image in images:
            height, width = self._open_stream(image.shape[0], image.shape[1])
            if (height, width) != image.shape[:2]:
                pad = ((0, height - image.shape[0]), (0, width - image.shape[1]), (0, 0))
                image = np.pad(image, pad, mode="edge")
            image = np.ascontiguousarray(image)
            with self._errors():
                self._container.mux(self._stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))

    def _open_stream(self, frame_height: int, frame_width: int) -> tuple[int, int]:
        """The stream's size (frames padded to even sides), the stream opened by the first frames."""
        height, width = frame_height + frame_height % 2, frame_width + frame_width % 2
        if self._stream is None:
            self._stream = self._container.add_stream(
                "libx264", rate=Fraction(self.fps).limit_denominator(10000)
            )
            self._stream.height, self._stream.width = height, width
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": str(self.x264.crf), "preset": self.x264.preset}
        elif (height, width) != (self._stream.height, self._stream.width):
            raise ValueError(
                f"a {width}×{height} chunk in a {self._stream.width}×{self._stream.height} video"
            )
        return height, width

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """FFmpeg's and the file system's failures as one line naming the output."""
        try:
            yield
        except (av.FFmpegError, OSError) as e:
            raise UserError(
                f"output: cannot write {self.path} ({_reason(e)}); check the folder is writable"
            ) from e


class VideoPair:
    """A video and its compare video (source | video), written together a chunk at a time.

    Both are `VideoWriter`s, so neither appears unless the `with` block ends without an error.
    """

    def __init__(self, video: str | Path, compare: str | Path, fps: float) -> None:
        self.video, self.compare = VideoWriter(video, fps), VideoWriter(compare, fps)

    def __enter__(self) -> VideoPair:
        with ExitStack() as stack:
            stack.enter_context(self.video)
            stack.enter_context(self.compare)
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stack.__exit__(kind, error, trace)

    def write(self, video: Tensor, source: Tensor) -> None:
        """The next chunk of the video (float), and of the source frames it renders (float, or uint8 as a
        run stores them). Each frame goes to 8 bits once, for both videos, and the compare video's frame
        is joined in 8 bits: no float copy of the source or of the pair."""

        def shown() -> Iterator[np.ndarray]:
            for image in uint8_images(video):
                self.video.write_images([image])
                yield image

        self.compare.write_images(joined_images(uint8_images(source), shown()))


def write_video(
    path: str | Path,
    frames: Tensor | Iterable[Tensor],
    fps: float,
    x264: X264 = ENCODING,
    check: Callable[[], object] | None = None,
) -> None:
    """Write `T×3×H×W` frames, or chunks of them, as H.264 (see `VideoWriter`; `check`: `atomic_path`'s)."""
    with VideoWriter(path, fps, x264, check) as writer:
        for chunk in frames.split(CHUNK) if isinstance(frames, Tensor) else frames:
            writer.write(chunk)


def write_image(path: str | Path, image: Tensor, check: Callable[[], object] | None = None) -> None:
    """Write a `C×H×W` image in [0,1] as PNG (lossless, keeps alpha): C=3 RGB, C=4 RGBA, C=1 gray.

    `check` runs just before the PNG takes its name (`atomic_path`)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UserError(f"output: {path} is written as PNG; give it a .png name")
    if image.ndim != 3 or image.shape[0] not in (1, 3, 4):
        raise ValueError(f"write_image expects C×H×W with C in (1, 3, 4), got {tuple(image.shape)}")
    array = next(uint8_frames(image[None]))
    pil = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    info = PngInfo()
    info.add_text("Software", MADE_BY)  # so a later render may replace it (force)
    with atomic_path(path, check) as tmp:
        pil.save(tmp, format="PNG", pnginfo=info)


def made_by_canon_edit(path: str | Path) -> bool:
    """Whether the PNG or video at `path` says canon-edit wrote it (what `write_image` and
    `VideoWriter` record): the only files an output may replace."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".png":
            with Image.open(path) as image:
                return getattr(image, "text", {}).get("Software") == MADE_BY
        with av.open(str(path)) as container:
            return any(k.lower() == "comment" and v == MADE_BY for k, v in container.metadata.items())
    except (OSError, ValueError, av.FFmpegError):
        return False


def write_pngs(folder: str | Path, frames: Tensor | Iterable[Tensor]) -> None:
    """Write `T×C×H×W` frames, or chunks of them, as `00000.png`, `00001.png`, … (each file atomic)."""
    folder = Path(folder)
    chunks = [frames] if isinstance(frames, Tensor) else frames
    index = 0
    for chunk in chunks:
        for frame in chunk:
            write_image(folder / f"{index:05d}.png", frame)
            index += 1
