"""H.264 encoding: speed, size and fidelity of x264 presets and CRFs on a real clip. One JSON line.

    python bench/encode_presets.py [--clip ../shared/data/davis_camel] [--size 480] [--frames 60] \
        [--settings medium:18 faster:18 veryfast:18 veryfast:17 veryfast:16]

Every video canon-edit writes (a fit's reconstruction and comparison, every edit's, `render`) goes
through `VideoWriter`, whose x264 settings this measures: for each `preset:crf`, the encoding speed
(fps, the 8-bit RGB frames given, the colour conversion to yuv420p included, best of `--repeats`), the
file's size, and the PSNR of the decoded frames against the source's own yuv420p round trip (so the
chroma subsampling every setting shares is not counted).
"""

from __future__ import annotations

import argparse
import io
import json
import time
from fractions import Fraction
from typing import Any

import av
import numpy as np

from canon_edit.run import versions
from canon_edit.video import read_clip, uint8_frames

SETTINGS = ["medium:18", "faster:18", "veryfast:18", "veryfast:17", "veryfast:16"]


def encode(frames: list[np.ndarray], preset: str, crf: int) -> tuple[float, bytes]:
    """Seconds to encode `frames` as H.264 (yuv420p, MP4 in memory) and the file's bytes."""
    buffer = io.BytesIO()
    start = time.perf_counter()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(24))
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": preset}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return time.perf_counter() - start, buffer.getvalue()


def decoded(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def psnr(images: list[np.ndarray], reference: list[np.ndarray]) -> float:
    mse = np.mean([np.mean((a.astype(np.float64) - b) ** 2) for a, b in zip(images, reference, strict=True)])
    return float(10 * np.log10(255**2 / mse))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip", default="../shared/data/davis_camel")
    p.add_argument("--size", type=int, default=480)
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--settings", nargs="+", default=SETTINGS)
    args = p.parse_args(argv)
    clip = read_clip(args.clip, max_frames=args.frames, size=args.size)
    frames = [image.copy() for image in uint8_frames(clip.frames)]
    rgb = [av.VideoFrame.from_ndarray(image, format="rgb24") for image in frames]
    reference = [frame.reformat(format="yuv420p").to_ndarray(format="rgb24") for frame in rgb]
    rows = {}
    for setting in args.settings:
        preset, crf = setting.split(":")
        runs = [encode(frames, preset, int(crf)) for _ in range(args.repeats)]
        seconds, data = min(runs, key=lambda run: run[0])
        rows[setting] = {
            "fps": round(len(frames) / seconds, 1),
            "kib": len(data) // 1024,
            "psnr": round(psnr(decoded(data), reference), 2),
        }
    result = {
        "bench": "encode_presets",
        "clip": args.clip.rstrip("/").rsplit("/", 1)[-1],
        "frames": len(frames),
        "height": clip.H,
        "width": clip.W,
        "settings": rows,
        "versions": versions(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
