"""Streaming: mapped bakes, chunked rendering, the streaming video writer and chunked evaluation.

Each streamed path is checked against the plain whole-clip computation it replaced.
"""

from __future__ import annotations

import json
import math
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from canon_edit.canonical import CanonicalVideo, Layer
from canon_edit.cli import main
from canon_edit.edit.commands import evaluate_run, render_run
from canon_edit.errors import UserError
from canon_edit.files import CorruptFile, MappedTensors
from canon_edit.flow import load_or_compute_flow, map_flow
from canon_edit.metrics import VideoMetrics, psnr, ssim, warping_error
from canon_edit.representation import load_bake
from canon_edit.video import VideoPair, VideoWriter, frame_chunks, uint8_frames, write_pngs, write_video


def reference_render(cv: CanonicalVideo, ids: list[int], textures: list[torch.Tensor]) -> torch.Tensor:
    """The renderer as first written: one tall grid_sample per layer, out-of-place composite."""
    index = torch.tensor(ids)
    out = None
    for la, tex in zip(cv.layers, textures, strict=True):
        b, h, w, _ = la.uv[index].shape
        grid = la.uv[index].to(tex.dtype).reshape(1, b * h, w, 2)
        color = F.grid_sample(tex[None], grid, padding_mode="border", align_corners=False)
        color = color.reshape(tex.shape[0], b, h, w).transpose(0, 1)
        if la.shading is not None:
            color = color * la.shading[index].to(color.dtype).permute(0, 3, 1, 2)
        if la.alpha is None:
            out = color
        else:
            a = la.alpha[index].to(color.dtype)[:, None]
            out = color * a if out is None else torch.lerp(out, color, a)
    return out


def shaded_bake(frames: int = 7, height: int = 10, width: int = 14) -> CanonicalVideo:
    """Three layers: opaque, alpha with shading, alpha; uv partly outside the texture (border)."""
    g = torch.Generator().manual_seed(1)
    layers = []
    for k in range(3):
        uv = (torch.rand(frames, height, width, 2, generator=g) * 2.4 - 1.2).half()
        layers.append(
            Layer(
                texture=torch.rand(3, 9, 11, generator=g) * 1.2 - 0.1,
                uv=uv,
                alpha=None if k == 0 else torch.rand(frames, height, width, generator=g).half(),
                shading=(torch.rand(frames, height, width, 3, generator=g) + 0.5).half() if k == 1 else None,
            )
        )
    return CanonicalVideo(layers, fps=12.0)


def decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture
def encoded(monkeypatch) -> list[np.ndarray]:
    """Every image handed to the encoder, in order: x264's threads make its bytes vary run to run."""
    images: list[np.ndarray] = []
    real = av.VideoFrame.from_ndarray

    def recording(image: np.ndarray, format: str) -> av.VideoFrame:
        images.append(np.array(image))
        return real(image, format=format)

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", recording)
    return images


def assert_same_video(path: Path, before: Path, images: list[np.ndarray], count: int) -> None:
    """`path` was encoded from the images `before` was, and decodes to them as closely as `before` does.

    The encoder's input is compared exactly; the two files are not: x264's threads now and then make
    other decisions on the same input (34 dB between two encodings of these noise frames, one run in
    about fifteen), so each decoding is scored against the images instead.
    """
    assert len(images) == 2 * count
    assert all(np.array_equal(a, b) for a, b in zip(images[:count], images[count:], strict=True))
    source = np.stack(images[:count]).astype(float)
    new, old = decoded(path).astype(float), decoded(before).astype(float)
    assert new.shape == old.shape == source.shape
    assert video_psnr(new, source) == pytest.approx(video_psnr(old, source), abs=0.5)


def video_psnr(video: np.ndarray, source: np.ndarray) -> float:
    return 10 * math.log10(255**2 / max(np.square(video - source).mean(), 1e-12))


def reference_write_video(path: Path, frames: torch.Tensor, fps: float) -> None:
    """The writer as first written: the whole clip converted, then encoded frame by frame."""
    array = frames.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    with av.open(
        str(path), mode="w", format="mp4", container_options={"movflags": "+faststart"}
    ) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(10000))
        stream.height, stream.width = array.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}
        for image in array:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def test_mapped_load_equals_the_eager_load_and_maps_only_per_frame_fields(tmp_path, procedural):
    procedural.truth.save(tmp_path / "c")
    eager = load_file(str(tmp_path / "c" / "bake.safetensors"))
    cv = CanonicalVideo.load(tmp_path / "c")
    assert cv.storage is not None
    for k, la in enumerate(cv.layers):
        assert torch.equal(la.texture, eager[f"{k}.texture"]) and torch.equal(la.uv, eager[f"{k}.uv"])
        assert la.uv.dtype == torch.float16
        assert (la.alpha is None) == (f"{k}.alpha" not in eager)
        if la.alpha is not None:
            assert torch.equal(la.alpha, eager[f"{k}.alpha"])
    mapped = {t.untyped_storage().data_ptr() for t in cv.storage.tensors.values()}
    assert cv.layers[0].uv.untyped_storage().data_ptr() in mapped  # a view of the file, not a copy
    assert cv.layers[0].texture.untyped_storage().data_ptr() not in mapped  # textures are read at once
    assert torch.equal(cv.layers[1].uv[3], procedural.truth.layers[1].uv[3])  # edit code indexes frames


def test_chunked_render_equals_the_whole_render_and_the_reference(tmp_path):
    cv = shaded_bake()
    cv.save(tmp_path / "c")
    loaded = CanonicalVideo.load(tmp_path / "c")
    whole = loaded.render()
    assert torch.equal(whole, reference_render(cv, list(range(cv.T)), cv.textures()))
    assert torch.equal(torch.cat([loaded.render(ids) for ids in frame_chunks(cv.T, 3)]), whole)
    assert torch.equal(loaded.render(chunk=1), whole)
    assert torch.equal(loaded.render([5, 2, 6]), whole[[5, 2, 6]])


def test_render_keeps_its_gradient_with_respect_to_the_textures():
    cv = shaded_bake()
    weights = torch.rand(3, 3, cv.H, cv.W, generator=torch.Generator().manual_seed(2))
    grads = []
    for render in (lambda t: cv.render([1, 4, 5], t), lambda t: reference_render(cv, [1, 4, 5], t)):
        textures = [tex.clone().requires_grad_(True) for tex in cv.textures()]
        (render(textures) * weights).sum().backward()
        grads.append([t.grad for t in textures])
    for new, old in zip(*grads, strict=True):
        assert torch.allclose(new, old, atol=1e-6)


def test_uint8_conversion_is_the_rounding_of_the_torch_chain():
    ties = torch.tensor([(k + 0.5) / 255 for k in range(255)])
    near = torch.cat([torch.nextafter(ties, ties + 1), torch.nextafter(ties, ties - 1), ties])
    values = torch.cat([near, torch.rand(5000), torch.tensor([-0.3, -0.0, 0.0, 1.0, 1.7, 255.0])])
    for frames, channels in ((1, 1), (1, 3), (3, 4), (4, 3)):  # a chunk: every frame, not only the first
        x = values[: values.numel() // (frames * channels) * frames * channels].reshape(
            frames, channels, 1, -1
        )
        expected = x.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        assert np.array_equal(np.stack([image.copy() for image in uint8_frames(x)]), expected)


def test_streaming_writer_writes_the_video_the_whole_clip_writer_wrote(tmp_path, encoded):
    frames = torch.rand(9, 3, 16, 24, generator=torch.Generator().manual_seed(3)) * 1.2 - 0.1
    reference_write_video(tmp_path / "before.mp4", frames, 24.0)
    with VideoWriter(tmp_path / "chunked.mp4", 24.0) as writer:
        for chunk in frames.split(4):
            writer.write(chunk)
    assert_same_video(tmp_path / "chunked.mp4", tmp_path / "before.mp4", encoded, 9)
    encoded.clear()
    reference_write_video(tmp_path / "before.mp4", frames, 24.0)
    write_video(tmp_path / "whole.mp4", frames, 24.0)
    assert_same_video(tmp_path / "whole.mp4", tmp_path / "before.mp4", encoded, 9)


def test_streaming_writer_leaves_nothing_when_a_chunk_fails(tmp_path):
    def chunks():
        yield torch.rand(4, 3, 16, 24)
        raise RuntimeError("the render failed")

    with pytest.raises(RuntimeError, match="render failed"):
        write_video(tmp_path / "out.mp4", chunks(), 24.0)
    with pytest.raises(ValueError, match="chunk"), VideoWriter(tmp_path / "out.mp4", 24.0) as writer:
        writer.write(torch.rand(2, 3, 16, 24))
        writer.write(torch.rand(2, 3, 8, 24))
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "out.mp4", torch.rand(0, 3, 16, 24), 24.0)
    with pytest.raises(UserError, match="give a path ending in"):
        VideoWriter(tmp_path / "out.gif", 24.0)
    assert list(tmp_path.iterdir()) == []


def test_a_video_pair_leaves_neither_video_when_a_chunk_fails(tmp_path):
    with pytest.raises(RuntimeError), VideoPair(tmp_path / "v.mp4", tmp_path / "c.mp4", 24.0) as videos:
        videos.write(torch.rand(2, 3, 16, 24), torch.rand(2, 3, 16, 24))
        raise RuntimeError("stopped")
    assert list(tmp_path.iterdir()) == []


def test_a_video_pair_hands_the_encoder_the_frames_of_the_float_concatenation(tmp_path, encoded):
    """The compare frame is joined in 8 bits, the source as a run stores it (uint8) or as float: the
    encoder gets the pixels of converting `torch.cat([source, video], 3)`, odd sides padded alike."""
    g = torch.Generator().manual_seed(5)
    video = torch.rand(5, 3, 15, 21, generator=g) * 1.2 - 0.1
    stored = torch.randint(0, 256, (5, 3, 15, 21), dtype=torch.uint8, generator=g)
    stored[0].view(3, -1)[:, :256] = torch.arange(256, dtype=torch.uint8)  # every 8-bit value
    write_video(tmp_path / "video.mp4", video, 24.0)
    write_video(tmp_path / "compare.mp4", torch.cat([stored.float() / 255, video], dim=3), 24.0)
    before = [image.copy() for image in encoded]
    for k, source in enumerate((stored, stored.float() / 255)):
        encoded.clear()
        with VideoPair(tmp_path / f"v{k}.mp4", tmp_path / f"c{k}.mp4", 24.0) as videos:
            for ids in frame_chunks(len(video), 2):
                videos.write(video[ids], source[ids])
        assert len(encoded) == len(before) == 10 and encoded[0].shape == (16, 22, 3)
        assert all(np.array_equal(a, b) for a, b in zip(encoded[0::2], before[:5], strict=True))
        assert all(np.array_equal(a, b) for a, b in zip(encoded[1::2], before[5:], strict=True))


def test_png_chunks_are_numbered_across_chunks(tmp_path):
    frames = torch.rand(5, 3, 4, 6)
    write_pngs(tmp_path / "p", frames.split(2))
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [f"{i:05d}.png" for i in range(5)]


def test_chunked_metrics_equal_the_whole_clip_metrics(tmp_path, procedural):
    source = procedural.clip.frames
    video = (source + 0.05 * torch.rand(source.shape, generator=torch.Generator().manual_seed(4))).clamp(0, 1)
    flow = load_or_compute_flow(tmp_path / "flow.safetensors", source)
    mapped, _, _ = map_flow(tmp_path / "flow.safetensors")  # float16 flows, uint8 masks, as evaluation reads
    whole = {
        "psnr": psnr(video, source),
        "ssim": ssim(video, source),
        "warp_error": warping_error(video, flow),
        "source_warp_error": warping_error(source, flow),
    }
    for chunk in (1, 5):
        metrics = VideoMetrics(mapped, len(source))
        for ids in frame_chunks(len(source), chunk):
            metrics.add(video[ids], source[ids])
        assert metrics.figures() == pytest.approx(whole, rel=1e-9, abs=1e-12)


def test_chunked_metrics_split_the_error_between_the_masked_objects_and_the_rest(tmp_path, procedural):
    source, sprite = procedural.clip.frames, procedural.clip.masks.amax(1)
    video = source + torch.where(sprite[:, None] > 0.5, 0.1, 0.01)  # 20 dB on the sprite, 40 around it
    load_or_compute_flow(tmp_path / "flow.safetensors", source)
    flow, _, _ = map_flow(tmp_path / "flow.safetensors")
    metrics = VideoMetrics(flow, len(source))
    for ids in frame_chunks(len(source), 5):
        metrics.add(video[ids], source[ids], sprite[ids])
    figures = metrics.figures()
    assert figures["psnr_foreground"] == pytest.approx(20.0, abs=1e-4)
    assert figures["psnr_background"] == pytest.approx(40.0, abs=1e-4)
    plain = VideoMetrics(flow, len(source))
    plain.add(video, source)
    assert "psnr_foreground" not in plain.figures()


def test_eval_and_render_stream_the_run_as_the_whole_clip_functions_score_it(truth_run, tmp_path, encoded):
    figures = evaluate_run(truth_run.path)
    clip, bake = truth_run.clip(), load_bake(truth_run)
    assert torch.equal(truth_run.stored_clip().read(2, 5), clip.frames[2:5])
    stored = truth_run.stored_clip().read_uint8(2, 5)
    assert stored.dtype == torch.uint8 and torch.equal(stored.float() / 255, clip.frames[2:5])
    video = bake.render().clamp(0, 1)
    flow = load_or_compute_flow(truth_run.flow, clip.frames)
    assert figures["psnr"] == round(psnr(video, clip.frames), 3)
    assert figures["ssim"] == round(ssim(video, clip.frames), 4)
    assert figures["warp_error"] == pytest.approx(warping_error(video, flow), abs=1e-9)
    assert figures["source_warp_error"] == pytest.approx(warping_error(clip.frames, flow), abs=1e-9)
    sprite = clip.masks.amax(1)
    assert figures["psnr_foreground"] == round(psnr(video, clip.frames, sprite), 3)
    assert figures["psnr_background"] == round(psnr(video, clip.frames, 1 - sprite), 3)
    assert json.loads(truth_run.metrics.read_text())["psnr"] == figures["psnr"]
    render_run(truth_run.path, tmp_path / "compare.mp4", compare=True)
    reference_write_video(tmp_path / "before.mp4", torch.cat([clip.frames, video], dim=3), bake.fps)
    assert_same_video(tmp_path / "compare.mp4", tmp_path / "before.mp4", encoded, clip.T)


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],
        lambda b: b[:5],
        lambda b: (10**9).to_bytes(8, "little") + b[8:],
        lambda b: b[:8] + b"{" * int.from_bytes(b[:8], "little") + b[8 + int.from_bytes(b[:8], "little") :],
        lambda b: os.urandom(len(b)),
    ],
    ids=["truncated", "stub", "header-too-long", "bad-json", "random"],
)
def test_a_damaged_bake_is_one_corrupt_file_line(tmp_path, procedural, damage, capsys):
    procedural.truth.save(tmp_path / "c")
    path = tmp_path / "c" / "bake.safetensors"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CorruptFile) as error:
        CanonicalVideo.load(tmp_path / "c")
    assert error.value.path == path and "\n" not in str(error.value)
    assert "is corrupt" in str(error.value) and "resuming the fit" in str(error.value)


def test_a_bake_of_inconsistent_shapes_is_a_corrupt_file(tmp_path, procedural):
    procedural.truth.save(tmp_path / "c")
    path = tmp_path / "c" / "bake.safetensors"
    tensors = load_file(str(path))
    tensors["1.alpha"] = tensors["1.alpha"][:, :-1].contiguous()
    save_file(tensors, str(path))
    with pytest.raises(CorruptFile, match="layers disagree"):
        CanonicalVideo.load(tmp_path / "c")


def test_a_damaged_bake_fails_render_in_one_line_and_writes_nothing(truth_run, tmp_path, capsys):
    path = truth_run.canonical / "bake.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    assert main(["render", str(truth_run.path), "-o", str(tmp_path / "out.mp4")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bake.safetensors is corrupt (truncated" in err
    assert not (tmp_path / "out.mp4").exists()


def _rss_file_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssFile:"))


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads Linux's /proc")
def test_released_pages_leave_resident_memory(tmp_path):
    save_file({"x": torch.ones(64, 256, 1024)}, str(tmp_path / "big.safetensors"))  # 64 MiB
    file = MappedTensors(tmp_path / "big.safetensors", "fix")
    before = _rss_file_kb()
    assert math.isclose(float(file.tensors["x"].sum()), 64 * 256 * 1024)
    touched = _rss_file_kb()
    file.release()
    assert touched - before > 48 * 1024  # reading a mapping makes its pages resident ...
    assert _rss_file_kb() - before < 8 * 1024  # ... and release drops them
    assert float(file.tensors["x"][-1].sum()) == 256 * 1024  # the tensor still reads the file
