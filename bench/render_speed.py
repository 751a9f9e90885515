"""Re-render speed of a baked CanonicalVideo at 480p and the peak memory of `render` by clip length.

    python bench/render_speed.py [--layers 2] [--frames 48] [--lengths 150 300 600] [--device cpu]

One JSON line. Speed, in one process, the variants round robin (fps: best of `--repeats` rounds),
so load from other processes hits them alike:
- `bare_gather_fps`: two `grid_sample`s on float32 uv already in memory and a `lerp` (no storage
  format, no 8-bit output), a chunk of frames at a time, in the renderer's batched form
  (`bare_gather_plain_fps`: the frames as one tall image, as the renderer did before);
- `full_render_fps`: what `canon-edit render` does short of encoding: the bake loaded from disk
  (bake.safetensors, mapped; the file was just written, so it is in the page cache), rendered a chunk
  at a time through `render_chunks` (float16 uv and alpha, composite) and converted to the uint8 frames
  the encoder takes (clamp, scale and round in one pass, interleave);
- `ratio`: full / bare in fps, the median over `--repeats` rounds in which the two run in lockstep,
  a chunk of one, then a chunk of the other (`ratio_range`: the lowest and highest round);
  `ratio_passes`: the same from the round-robin whole passes, the figure of entries before 2026-12-03;
- `fps`: `CanonicalVideo.render` of the bake in memory, float output (the figure of earlier entries);
- `full_render_faults`: the minor page faults of a full-render pass (median over the rounds): memory
  the allocator handed back to the kernel and the next chunk faulted in again (`canon_edit.allocator`).
Memory: for each of `--lengths` a synthetic run (the bake on disk and its stored clip) is written,
then `render RUN -o out.mp4` (and `--compare`) runs in a fresh subprocess that reports its own peak
RSS (`peak_rss_mb`) and its time, x264 encoding included (`encode_fps`).
`--portrait SIZE`: the memory rows only, of portrait runs: the procedural portrait (synthetic SMPL-X
body, true tracking) of each length at SIZE², fitted for 5 steps (`bench/fit_memory.py`'s clip).

The bake is synthetic (random textures, smooth uv, soft alpha) at the size a 480p fit produces;
rendering is a pure gather, so its speed does not depend on what the textures show.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from canon_edit.allocator import keep_freed_memory
from canon_edit.canonical import CanonicalVideo, Layer
from canon_edit.evaluate import render_chunks
from canon_edit.run import RunFolder, versions
from canon_edit.video import CHUNK, frame_chunks, uint8_frames
from canon_edit_representations.motion import pixel_grid_ndc


def synthetic_bake(frames: int, height: int, width: int, layers: int, device: str = "cpu") -> CanonicalVideo:
    """Layer 0 opaque, the others with soft alpha; uv a slow zoom. Filled frame by frame in float16."""
    g = torch.Generator().manual_seed(0)
    grid = pixel_grid_ndc(height, width)
    out = []
    for k in range(layers):
        uv = torch.empty(frames, height, width, 2, dtype=torch.float16)
        alpha = None if k == 0 else torch.empty(frames, height, width, dtype=torch.float16)
        for t in range(frames):
            uv[t] = grid * (0.7 + 0.1 * t / frames) + 0.05 * k
            if alpha is not None:
                alpha[t] = torch.rand(height, width, generator=g)
        tex = torch.rand(3, round(height * 1.4), round(width * 1.4), generator=g)
        out.append(
            Layer(texture=tex.to(device), uv=uv.to(device), alpha=None if alpha is None else alpha.to(device))
        )
    return CanonicalVideo(layers=out)


def synthetic_run(folder: Path, frames: int, height: int = 480, width: int = 854, layers: int = 2) -> Path:
    """A finished run of `frames` frames whose bake is `synthetic_bake` and whose clip is its render."""
    bake = synthetic_bake(frames, height, width, layers)
    run = RunFolder.create(folder)
    bake.save(run.canonical)
    clip = torch.empty(frames, 3, height, width, dtype=torch.uint8)
    with torch.no_grad():
        for ids in frame_chunks(frames):
            clip[ids[0] : ids[-1] + 1] = bake.render(ids).clamp(0, 1).mul(255).round().to(torch.uint8)
    save_file({"frames": clip}, str(run.clip_file), metadata={"fps": repr(bake.fps), "source": "synthetic"})
    run.write_info(method="codef", status="done", fps=bake.fps)
    return run.path


def render_peak(run: Path, out: Path, compare: bool = False, threads: int | None = None) -> dict[str, float]:
    """`render RUN -o OUT` (or `--compare`) in a fresh process: its peak RSS (MiB) and seconds."""
    command = [sys.executable, __file__, "--child", str(run), str(out)] + ["--compare"] * compare
    if threads:
        command += ["--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    """This process's peak RSS in MiB.

    Linux's VmHWM belongs to the address space, which exec replaces; ru_maxrss survives fork and exec,
    so a child of this (large) process would report the parent's peak (1248 MiB instead of 522 for the
    150-frame render). ru_maxrss is the fallback where /proc is missing.
    """
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(run: str, out: str, compare: bool) -> None:
    from canon_edit.edit.commands import render_run

    start = time.perf_counter()
    render_run(run, out, compare=compare)
    seconds = time.perf_counter() - start
    print(json.dumps({"peak_rss_mb": round(peak_rss_mb(), 1), "seconds": round(seconds, 2)}))


def bare_gather(bake: CanonicalVideo, chunk: int, batched: bool) -> Callable[[], Iterator[None]]:
    """Each layer's grid_sample on float32 uv in memory, lerped over the last: 2 layers, 2 and 1.

    A generator of chunks: `drain` runs it whole, `paired_ratio` a chunk at a time.
    """
    uvs = [la.uv.float() for la in bake.layers]
    alphas = [None if la.alpha is None else la.alpha.float()[:, None] for la in bake.layers]

    def sample(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = uv.shape
        if batched:
            return F.grid_sample(
                texture.expand(b, *texture.shape), uv, padding_mode="border", align_corners=False
            )
        tall = F.grid_sample(
            texture[None], uv.reshape(1, b * h, w, 2), padding_mode="border", align_corners=False
        )
        return tall.reshape(3, b, h, w).transpose(0, 1)

    def run() -> Iterator[None]:
        for i in range(0, bake.T, chunk):
            out = None
            for texture, uv, alpha in zip(bake.textures(), uvs, alphas, strict=True):
                color = sample(texture, uv[i : i + chunk])
                out = color if out is None or alpha is None else torch.lerp(out, color, alpha[i : i + chunk])
            yield

    return run


def full_render(folder: Path, chunk: int) -> Callable[[], Iterator[None]]:
    """Load the bake from disk, render it a chunk at a time and convert each chunk to uint8 frames.

    A generator of chunks, the load counted in the first.
    """

    def run() -> Iterator[None]:
        bake = CanonicalVideo.load(folder)
        for video in render_chunks(lambda ids: bake.render(ids, chunk=chunk), bake.T, chunk):
            for _ in uint8_frames(video):
                pass
            yield

    return run


def drain(chunks: Callable[[], Iterator[None]]) -> Callable[[], None]:
    return lambda: collections.deque(chunks(), maxlen=0)


def paired_ratio(
    bare: Callable[[], Iterator[None]],
    full: Callable[[], Iterator[None]],
    rounds: int,
    sync: Callable[[], None],
) -> list[float]:
    """bare / full time per round, the two run in lockstep a chunk each in turn.

    Round-robin whole passes (`speed`) let a burst of load from elsewhere on a shared VM hit one pass and
    not the other: their round-by-round ratios spread from 0.5 to over 1 on one day. Alternating
    chunk by chunk puts the two a few milliseconds apart, so such a burst hits both alike.
    """
    ratios = []
    for _ in range(rounds + 1):  # the first warms up
        seconds = {"bare": 0.0, "full": 0.0}
        steps = {"bare": bare(), "full": full()}
        running = set(steps)
        while running:
            for name in sorted(running):
                sync()
                start = time.perf_counter()
                if next(steps[name], StopIteration) is StopIteration:
                    running.discard(name)
                sync()
                seconds[name] += time.perf_counter() - start
        ratios.append(seconds["bare"] / seconds["full"])
    return ratios[1:]


def speed(args: argparse.Namespace) -> dict[str, Any]:
    """The round-robin speed figures (frames per second, best of `args.repeats`)."""
    bake = synthetic_bake(args.frames, args.height, args.width, args.layers, args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        cpu = (
            bake
            if args.device == "cpu"
            else synthetic_bake(args.frames, args.height, args.width, args.layers)
        )
        cpu.save(Path(tmp) / "canonical")
        variants = {
            "bare_gather_fps": drain(bare_gather(bake, args.chunk, batched=True)),
            "bare_gather_plain_fps": drain(bare_gather(bake, args.chunk, batched=False)),
            "full_render_fps": drain(full_render(Path(tmp) / "canonical", args.chunk)),
            "fps": lambda: bake.render(chunk=args.chunk),
        }
        rounds: list[dict[str, float]] = []
        faults: list[int] = []
        for _ in range(args.repeats + 1):  # the first round warms up
            rounds.append({})
            for name, run in variants.items():
                sync()
                before = minor_faults()
                start = time.perf_counter()
                run()
                sync()
                rounds[-1][name] = time.perf_counter() - start
                if name == "full_render_fps":
                    faults.append(minor_faults() - before)
        paired = paired_ratio(
            bare_gather(bake, args.chunk, batched=True),
            full_render(Path(tmp) / "canonical", args.chunk),
            args.repeats,
            sync,
        )
    figures = {name: round(args.frames / min(r[name] for r in rounds[1:]), 1) for name in variants}
    figures["ratio"] = round(statistics.median(paired), 3)
    figures["ratio_range"] = [round(min(paired), 3), round(max(paired), 3)]
    passes = [r["bare_gather_fps"] / r["full_render_fps"] for r in rounds[1:]]
    figures["ratio_passes"] = round(statistics.median(passes), 3)  # whole passes back to back
    figures["ratio_passes_range"] = [round(min(passes), 3), round(max(passes), 3)]
    figures["full_render_faults"] = int(statistics.median(faults[1:]))
    return figures


def minor_faults() -> int:
    """This process's minor page faults so far: memory the kernel mapped in on first touch."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def portrait_run(folder: Path, frames: int, size: int) -> Path:
    """A finished portrait run of the procedural portrait, `frames` frames of `size`², 5 steps."""
    from canon_edit.cli import main as cli

    here = str(Path(__file__).parent)
    if here not in sys.path:  # once, however many lengths are rendered
        sys.path.insert(0, here)
    from fit_memory import portrait_clip

    clip = portrait_clip(frames, size, folder / "source")
    argv = [clip, "-o", str(folder / "run"), "--method", "portrait", "--size", str(size), "--steps", "5"]
    argv += ["--body", "smplx", "--body-model-dir", str(folder / "source" / "body")]
    with contextlib.redirect_stdout(sys.stderr):  # the fit's figures: stdout is this bench's line
        code = cli(["fit", *argv, "--tracking", str(Path(clip) / "tracking.json"), "--quiet"])
    if code:
        raise SystemExit("the portrait fit failed")
    return folder / "run"


def memory(args: argparse.Namespace) -> dict[str, Any]:
    """Peak RSS and time of `render` (and `render --compare`) per clip length, each in a fresh process."""
    rows: dict[str, Any] = {}
    for length in args.lengths:
        with tempfile.TemporaryDirectory() as tmp:
            if args.portrait:
                run = portrait_run(Path(tmp), length, args.portrait)
            else:
                run = synthetic_run(Path(tmp) / "run", length, args.height, args.width, args.layers)
            row = {}
            for name, compare in (("render", False), ("compare", True)):
                figures = render_peak(run, Path(tmp) / f"{name}.mp4", compare, args.threads)
                row[f"{name}_peak_rss_mb"] = figures["peak_rss_mb"]
                row[f"{name}_encode_fps"] = round(length / figures["seconds"], 1)
            rows[str(length)] = row
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=854)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--chunk", type=int, default=CHUNK)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--lengths", type=int, nargs="*", default=[150, 300, 600])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--portrait", type=int, metavar="SIZE", help="memory of procedural portrait runs")
    p.add_argument("--child", nargs=2, metavar=("RUN", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--compare", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    keep_freed_memory()  # as `canon-edit` does: the full render and `render` are the CLI's
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        _child(*args.child, args.compare)
        return {}
    if args.portrait:
        line = {"bench": "render_speed", "portrait": args.portrait, "peak_rss_by_length": memory(args)}
    else:
        line = {
            "bench": "render_speed",
            **speed(args),
            "frames": args.frames,
            "height": args.height,
            "width": args.width,
            "layers": args.layers,
            "device": args.device,
            "threads": torch.get_num_threads(),
            "chunk": args.chunk,
            "peak_rss_by_length": memory(args),
        }
    line["versions"] = versions()
    print(json.dumps(line))
    return line


if __name__ == "__main__":
    main()
