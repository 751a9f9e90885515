"""Viewer latency: ms from a change to the pushed image, through the real server and a headless
system Chromium (Playwright, nothing downloaded). One JSON line.

    python bench/viewer_latency.py [--height 480] [--width 854] [--portrait-size 256] [--repeats 10]

2D: a procedural CanonicalVideo at 480p; a frame-slider change → the page redrawn, JPEG-encoded and
queued to the client (median over --repeats changes). Portrait: the procedural portrait (synthetic
SMPL-X, untrained Gaussians: the cost does not depend on what they show) with a camera change →
the reduced-resolution image while moving, and the full-resolution one once the camera settles.
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch

from canon_edit.atomic import atomic_dir
from canon_edit.fitting import finish_run
from canon_edit.procedural import make_clip
from canon_edit.run import RunFolder, versions
from canon_edit.viewer.app import Viewer
from canon_edit.viewer.policy import moving_scale

CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1280, "height": 720}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_push(session, count: int, timeout: float = 60.0) -> float:
    end = time.monotonic() + timeout
    while session.pushed < count:
        if time.monotonic() > end:
            raise TimeoutError("no image was pushed")
        time.sleep(0.001)
    return session.pushed_at


def connect(browser, run: RunFolder):
    viewer = Viewer(run.path, port=free_port())
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(viewer.url)
    end = time.monotonic() + 60
    while not any(s.pushed for s in viewer.sessions.values()):
        if time.monotonic() > end:
            raise TimeoutError("the page never connected")
        time.sleep(0.05)
    time.sleep(1.0)  # let the first camera reports settle
    return viewer, page, next(iter(viewer.sessions.values()))


def bench_2d(browser, folder: Path, height: int, width: int, repeats: int) -> dict:
    proc = make_clip(frames=repeats + 1, height=height, width=width)
    run = RunFolder.create(folder / "run2d")
    run.save_clip(proc.clip)
    run.write_info(method="codef", status="done", frames=proc.clip.T, height=height, width=width, fps=24.0)
    with atomic_dir(run.canonical) as tmp:
        proc.truth.save(tmp)
    viewer, page, s = connect(browser, run)
    times = []
    for t in range(1, repeats + 1):
        count = s.pushed + 1
        start = time.perf_counter()
        s.frame.value = t  # what the slider does: its callback queues the render
        times.append((wait_push(s, count) - start) * 1000)
        time.sleep(0.2)
    canvas = (s.state.width, s.state.height)
    page.close()
    viewer.stop()
    return {"ms_median": round(statistics.median(times), 1), "ms_max": round(max(times), 1), "canvas": canvas}


def bench_portrait(browser, folder: Path, size: int, repeats: int) -> dict:
    from canon_edit_representations.portrait.body import SMPLXBody
    from canon_edit_representations.portrait.config import PortraitConfig
    from canon_edit_representations.portrait.model import Portrait
    from canon_edit_representations.portrait.procedural import make_portrait_clip
    from canon_edit_representations.portrait.synthetic_body import write_synthetic_smplx

    write_synthetic_smplx(folder / "smplx")
    body = SMPLXBody(folder / "smplx")
    portrait = make_portrait_clip(body, frames=4, size=size)
    cfg = PortraitConfig(body="smplx", body_model_dir=str(folder / "smplx"))
    model = Portrait(portrait.clip, None, cfg, body=body, tracking=portrait.tracking)
    run = RunFolder.create(folder / "portrait")
    clip = portrait.clip
    run.save_clip(clip)
    run.write_info(
        method="portrait", status="fitting", frames=clip.T, height=clip.H, width=clip.W, fps=clip.fps
    )
    finish_run(run, model.bake(), clip)
    run.write_info(status="done")
    viewer, page, s = connect(browser, run)
    moving, full = [], []
    for _ in range(repeats):
        count = s.pushed + 1
        start = time.perf_counter()
        s.refresh(moving=True)  # what a camera update calls
        moving.append((wait_push(s, count) - start) * 1000)
        full.append((wait_push(s, count + 1) - start) * 1000 - s.policy.settle_s * 1000)
        time.sleep(0.1)
    out = {
        "gaussians": int(len(model.tri_id)),
        "moving_ms_median": round(statistics.median(moving), 1),
        "full_ms_median": round(statistics.median(full), 1),
        "full_render_ms_estimate": round(s.full_ms or 0.0, 1),
        "moving_scale": round(moving_scale(s.policy, s.full_ms), 3),
        "canvas": (int(s.client.camera.image_width), int(s.client.camera.image_height)),
    }
    page.close()
    viewer.stop()
    return out


def main() -> None:
    from playwright.sync_api import sync_playwright

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=854)
    p.add_argument("--portrait-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"],
        )
        two_d = bench_2d(browser, Path(tmp), args.height, args.width, args.repeats)
        portrait = bench_portrait(browser, Path(tmp), args.portrait_size, args.repeats)
        browser.close()
    print(
        json.dumps(
            {
                "bench": "viewer_latency",
                "device": "cpu",
                "threads": torch.get_num_threads(),
                "machine": platform.machine(),
                "slider_2d": {"height": args.height, "width": args.width, **two_d},
                "camera_portrait": {"size": args.portrait_size, **portrait},
                "versions": versions(),
            }
        )
    )


if __name__ == "__main__":
    main()
