"""Clip IO: round trips through mp4/gif/PNG, mask folders, frame selection, and every bad-input error."""

from __future__ import annotations

import os
import re
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from canon_edit.errors import UserError
from canon_edit.metrics import psnr
from canon_edit.video import (
    X264,
    clip_shape,
    mask_channels,
    read_clip,
    read_image,
    resize_frames,
    write_image,
    write_pngs,
    write_video,
)

T, H, W = 8, 48, 64


def smooth_video(t: int = T, h: int = H, w: int = W) -> torch.Tensor:
    """Smooth moving gradients: compress well, so a codec round trip is close to lossless."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return torch.stack(
        [torch.stack([xs, ys, 0.5 + 0.3 * torch.sin(6 * xs + 0.5 * i)]) for i in range(t)]
    ).float()


def quantized(frames: torch.Tensor) -> torch.Tensor:
    """Frames on the uint8 grid, so PNG round trips must be exact."""
    return frames.mul(255).round().div(255)


def write_label_pngs(folder: Path, maps: list[np.ndarray], mode: str) -> None:
    folder.mkdir(parents=True)
    for i, m in enumerate(maps):
        image = Image.fromarray(m.astype(np.uint8), mode="L")
        if mode == "P":
            image = image.convert("P")
            image.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
        image.save(folder / f"{i:05d}.png")


@pytest.fixture
def clip_folder(tmp_path: Path) -> Path:
    """A clip folder (frames/ + masks/) with binary 0/255 masks of a moving square."""
    frames = quantized(smooth_video())
    write_pngs(tmp_path / "clip" / "frames", frames)
    maps = []
    for i in range(T):
        m = np.zeros((H, W), np.uint8)
        m[10:30, 4 + 3 * i : 24 + 3 * i] = 255
        maps.append(m)
    write_label_pngs(tmp_path / "clip" / "masks", maps, "L")
    return tmp_path / "clip"


def test_mp4_round_trip(tmp_path: Path) -> None:
    video = smooth_video()
    write_video(tmp_path / "a.mp4", video, fps=24)
    clip = read_clip(tmp_path / "a.mp4")
    assert (clip.T, clip.H, clip.W) == (T, H, W)
    assert clip.fps == pytest.approx(24)
    assert clip.masks is None
    assert psnr(clip.frames, video) >= 35
    assert not list(tmp_path.glob(".*tmp*")), "atomic write left a temp file"


def x264_options(path: Path) -> dict[str, str]:
    """The settings libx264 writes into the stream (its SEI): 'crf', 'subme' (8 slow, 2 veryfast), ..."""
    found = re.search(rb"options: ([^\x00]*)", path.read_bytes())
    assert found, f"no x264 settings in {path}"
    return dict(item.split("=", 1) for item in found.group(1).decode().split() if "=" in item)


def test_videos_are_encoded_as_measured_unless_told(tmp_path: Path) -> None:
    """veryfast at CRF 16 by default (bench/encode_presets.py); any CRF and preset x264 knows when
    given, and one line for those it does not."""
    video = smooth_video()
    write_video(tmp_path / "default.mp4", video, fps=24)
    write_video(tmp_path / "slow.mp4", video, fps=24, x264=X264(crf=22, preset="slow"))
    default, slow = x264_options(tmp_path / "default.mp4"), x264_options(tmp_path / "slow.mp4")
    assert (default["crf"], default["subme"]) == ("16.0", "2")
    assert (slow["crf"], slow["subme"]) == ("22.0", "8")
    assert psnr(read_clip(tmp_path / "default.mp4").frames, video) >= 35
    for bad, words in [({"crf": 52}, "0..51"), ({"preset": "turbo"}, "veryfast")]:
        with pytest.raises(UserError, match=words):
            X264(**bad)


def test_mp4_odd_size_padded_by_edge(tmp_path: Path) -> None:
    video = smooth_video(h=H - 1, w=W - 1)
    write_video(tmp_path / "odd.mp4", video, fps=10)
    clip = read_clip(tmp_path / "odd.mp4")
    assert (clip.H, clip.W) == (H, W)
    assert psnr(clip.frames[:, :, :-1, :-1], video) >= 35
    assert psnr(clip.frames[:, :, -1, :-1], video[:, :, -1]) >= 30
    assert psnr(clip.frames[:, :, :-1, -1], video[:, :, :, -1]) >= 30


def test_mp4_stride_and_max_frames(tmp_path: Path) -> None:
    video = smooth_video()
    write_video(tmp_path / "a.mp4", video, fps=24)
    clip = read_clip(tmp_path / "a.mp4", stride=3, max_frames=2)
    assert clip.T == 2
    assert clip.fps == pytest.approx(8)
    assert psnr(clip.frames, video[[0, 3]]) >= 35


def test_display_rotation_applied(tmp_path: Path) -> None:
    """Phone videos store upright-ness as a display rotation; frames must come out upright."""
    image = np.zeros((H, W, 3), np.uint8)
    image[:8, :8] = 255
    with av.open(str(tmp_path / "rot.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.set_display_rotation(90)
        for _ in range(2):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    frame = read_clip(tmp_path / "rot.mp4").frames[0].mean(0)
    assert frame.shape == (W, H)
    assert frame[-8:, :8].mean() > 0.9 and frame[:8, :8].mean() < 0.1


def test_gif_read(tmp_path: Path) -> None:
    frames = []
    for i in range(T):
        a = np.full((H, W, 3), (10, 20, 30), np.uint8)
        a[10:20, 5 + 3 * i : 15 + 3 * i] = (200, 50, 50)
        frames.append(Image.fromarray(a))
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    clip = read_clip(tmp_path / "a.gif")
    assert (clip.T, clip.H, clip.W) == (T, H, W)
    assert clip.fps == pytest.approx(10)
    expected = torch.stack([torch.from_numpy(np.array(f)).permute(2, 0, 1) for f in frames]) / 255
    assert torch.equal(clip.frames, expected.float())


def test_png_folder_read_exact(tmp_path: Path) -> None:
    frames = quantized(torch.rand(T, 3, H, W))
    write_pngs(tmp_path / "frames", frames)
    assert sorted(p.name for p in (tmp_path / "frames").iterdir())[:2] == ["00000.png", "00001.png"]
    clip = read_clip(tmp_path / "frames", fps=12)
    assert torch.equal(clip.frames, frames)
    assert clip.fps == 12
    assert read_clip(tmp_path / "frames").fps == 30


def test_frame_folder_natural_order(tmp_path: Path) -> None:
    frames = quantized(torch.rand(11, 3, 4, 6))
    for i, frame in enumerate(frames):
        write_image(tmp_path / f"f{i}.png", frame)
    assert torch.equal(read_clip(tmp_path).frames, frames)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_image_round_trip_exact(tmp_path: Path, channels: int) -> None:
    image = quantized(torch.rand(channels, 9, 13))
    write_image(tmp_path / "x.png", image)
    mode = Image.open(tmp_path / "x.png").mode
    assert mode == {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    back = read_image(tmp_path / "x.png")
    assert torch.equal(back, image.expand(3, -1, -1) if channels == 1 else image)


def test_clip_folder_binary_masks(clip_folder: Path) -> None:
    clip = read_clip(clip_folder)
    assert clip.masks is not None
    assert clip.masks.shape == (T, 1, H, W)
    assert set(clip.masks.unique().tolist()) == {0.0, 1.0}
    assert clip.masks[3, 0, 20, 4 + 9 + 5] == 1 and clip.masks[3, 0, 40, 5] == 0
    assert torch.equal(clip.frames, read_clip(clip_folder / "frames").frames)


@pytest.mark.parametrize("mode", ["P", "L"])
def test_label_masks_one_channel_per_label(tmp_path: Path, mode: str) -> None:
    write_pngs(tmp_path / "frames", torch.zeros(T, 3, H, W))
    rng = np.random.default_rng(0)
    values = [0, 3, 7, 40] if mode == "P" else [0, 60, 120, 250]
    maps = [rng.choice(values[:3] if i == 0 else values, size=(H, W)) for i in range(T)]
    write_label_pngs(tmp_path / "masks", maps, mode)
    masks = read_clip(tmp_path / "frames", tmp_path / "masks").masks
    assert masks is not None and masks.shape == (T, 3, H, W)
    for k, label in enumerate(values[1:]):
        expected = torch.from_numpy(np.stack(maps) == label).float()
        assert torch.equal(masks[:, k], expected)


def test_selection_and_size(clip_folder: Path) -> None:
    full = read_clip(clip_folder)
    clip = read_clip(clip_folder, stride=2, max_frames=3, size=24, fps=12)
    assert (clip.T, clip.H, clip.W) == (3, 24, 32)
    assert clip.fps == 6
    assert clip.masks is not None and clip.masks.shape == (3, 1, 24, 32)
    assert torch.allclose(clip.frames, resize_frames(full.frames[[0, 2, 4]], 24, 32), atol=1 / 255)
    assert full.masks is not None
    assert torch.allclose(clip.masks, resize_frames(full.masks[[0, 2, 4]], 24, 32), atol=1e-6)


@pytest.mark.parametrize(
    "selection",
    [{}, {"stride": 3}, {"max_frames": 5}, {"stride": 2, "max_frames": 3, "size": 24}, {"size": 37}],
)
def test_clip_shape_from_headers_is_what_reading_gives(tmp_path: Path, clip_folder: Path, selection) -> None:
    """The shape `fit` checks memory against, before reading: a clip folder, a frame folder, a video."""
    write_video(tmp_path / "a.mp4", smooth_video(t=7, h=H - 1, w=W - 1), fps=24)  # odd: padded to even
    for source in (clip_folder, clip_folder / "frames", tmp_path / "a.mp4"):
        clip = read_clip(source, **selection)
        assert clip_shape(source, **selection) == (clip.T, clip.H, clip.W), source


@pytest.mark.parametrize("selection", [{}, {"max_frames": 1}, {"stride": 2}])
def test_mask_channels_before_reading_are_what_reading_gives(tmp_path: Path, selection) -> None:
    """The layers `fit` costs memory for, before reading: labels (palette, gray), soft masks, none; a
    label seen only past the frames kept is not counted."""
    rng = np.random.default_rng(1)
    soft = [rng.integers(0, 256, size=(H, W)) for _ in range(T)]  # past MAX_GRAY_LABELS gray levels
    labels = [np.where(rng.random((H, W)) < 0.5, 0, 60 if i == 0 else 60 + 60 * (i % 3)) for i in range(T)]
    palette = [rng.choice([0, 3, 7], size=(H, W)) for _ in range(T)]
    write_pngs(tmp_path / "frames", torch.zeros(T, 3, H, W))
    for name, maps, mode in (("soft", soft, "L"), ("labels", labels, "L"), ("palette", palette, "P")):
        write_label_pngs(tmp_path / name, maps, mode)
        masks = read_clip(tmp_path / "frames", tmp_path / name, **selection).masks
        assert masks is not None
        assert mask_channels(tmp_path / "frames", tmp_path / name, **selection) == masks.shape[1], name
    assert mask_channels(tmp_path / "frames", tmp_path / "labels", max_frames=1) == 1
    assert mask_channels(tmp_path / "frames", tmp_path / "labels") == 3
    assert mask_channels(tmp_path / "frames") == 0
    assert mask_channels(tmp_path / "frames", tmp_path / "missing") is None


@pytest.mark.parametrize("expected", [2, 5, 9])  # a header's count under, equal to, over the frames
@pytest.mark.parametrize("as_uint8", [True, False])
def test_frames_go_into_their_tensor_as_decoded(expected: int, as_uint8: bool) -> None:
    """What reading held as a list of arrays and their stack, bit for bit, whatever the count told."""
    from canon_edit.video import _FrameStack

    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8) for _ in range(5)]
    frames[1].flags.writeable = False  # PIL's and PyAV's arrays can be read-only
    stack = _FrameStack(expected, as_uint8)
    for frame in frames:
        stack.add(frame)
    reference = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)
    reference = reference.contiguous() if as_uint8 else reference.float().div_(255.0)
    assert stack.hw == (5, 7) and torch.equal(stack.tensor(), reference)
    assert stack.tensor().dtype == reference.dtype and stack.tensor().stride() == reference.stride()


def test_clip_shape_is_none_where_headers_cannot_tell(tmp_path: Path) -> None:
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    (tmp_path / "empty").mkdir()
    for source in ("broken.mp4", "empty", "missing.mp4", "notes.txt"):
        assert clip_shape(tmp_path / source) is None


def test_size_keeps_aspect_with_even_sides(tmp_path: Path) -> None:
    write_pngs(tmp_path, torch.rand(2, 3, 48, 70))
    clip = read_clip(tmp_path, size=24)
    assert (clip.H, clip.W) == (24, 34)
    upscaled = read_clip(tmp_path, size=96)
    assert (upscaled.H, upscaled.W) == (96, 140)


def test_masks_resized_when_aspect_matches(tmp_path: Path) -> None:
    write_pngs(tmp_path / "frames", torch.zeros(2, 3, H, W))
    write_label_pngs(tmp_path / "masks", [np.full((H // 2, W // 2), 255)] * 2, "L")
    masks = read_clip(tmp_path / "frames", tmp_path / "masks").masks
    assert masks is not None and masks.shape == (2, 1, H, W) and bool((masks == 1).all())


def test_resize_frames_shapes_and_constant() -> None:
    frames = torch.full((2, 5, 20, 30), 0.25)
    assert torch.allclose(resize_frames(frames, 10, 16), torch.full((2, 5, 10, 16), 0.25))
    assert resize_frames(frames, 40, 60).shape == (2, 5, 40, 60)


def raises(text: str, *args: object, **kwargs: object) -> None:
    """read_clip(*args, **kwargs) raises a one-line UserError containing `text`."""
    with pytest.raises(UserError, match=re.escape(text)) as info:
        read_clip(*args, **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_errors_path_and_suffix(tmp_path: Path) -> None:
    raises("nothere.mp4", tmp_path / "nothere.mp4")
    (tmp_path / "notes.txt").write_text("x")
    raises("notes.txt", tmp_path / "notes.txt")


def test_error_corrupt_video(tmp_path: Path) -> None:
    (tmp_path / "bad.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    raises("bad.mp4", tmp_path / "bad.mp4")


def test_error_empty_video(tmp_path: Path) -> None:
    with av.open(str(tmp_path / "empty.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        container.mux(stream.encode(None))
    raises("empty.mp4", tmp_path / "empty.mp4")


def test_error_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    raises("empty", tmp_path / "empty")


def test_error_frames_of_different_sizes(tmp_path: Path) -> None:
    write_pngs(tmp_path, torch.rand(2, 3, 8, 8))
    write_image(tmp_path / "00002.png", torch.rand(3, 8, 10))
    raises("00002.png", tmp_path)


def test_errors_masks(clip_folder: Path, tmp_path: Path) -> None:
    raises("nomasks", clip_folder, tmp_path / "nomasks")
    (tmp_path / "empty").mkdir()
    raises("empty", clip_folder, tmp_path / "empty")
    os.remove(clip_folder / "masks" / "00007.png")
    raises(f"found 7 PNG files in {clip_folder / 'masks'} for 8 frames", clip_folder)
    write_label_pngs(tmp_path / "wide", [np.zeros((H, W + 8))] * T, "L")
    raises("72x48", clip_folder / "frames", tmp_path / "wide")


def test_error_mask_count_against_video_source_frames(tmp_path: Path) -> None:
    write_video(tmp_path / "a.mp4", smooth_video(), fps=24)
    write_label_pngs(tmp_path / "masks", [np.zeros((H, W))] * (T - 1), "L")
    raises("for 8 frames", tmp_path / "a.mp4", tmp_path / "masks", max_frames=2)


@pytest.mark.parametrize("option", ["max_frames", "stride", "size"])
def test_error_selection_options(clip_folder: Path, option: str) -> None:
    raises(f"{option}=0", clip_folder, **{option: 0})


def test_error_bad_image(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="x.png"):
        read_image(tmp_path / "x.png")
    with pytest.raises(UserError, match="missing.png"):
        read_image(tmp_path / "missing.png")
