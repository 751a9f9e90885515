"""`canon-edit view` in a real browser: the system Chromium driven by Playwright (nothing downloaded).

Each test starts the viewer on a free port of 127.0.0.1 and stops it at the end. Screenshots a
failing check took are kept in the test's tmp_path and named in the assertion message. With
$CANON_EDIT_SCREENSHOT_DIR set, the 2D page is also saved there as viewer.png (docs/viewer.png).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from canon_edit.fitting import finish_run
from canon_edit.run import RunFolder
from canon_edit.video import write_image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _unavailable(reason: str) -> None:
    """Skip where the browser stack is missing, but never in CI, whose .ci/run installs it."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}, but CI must run the browser tests", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


try:
    import playwright.sync_api as playwright_api
    import viser  # noqa: F401
except ImportError as e:
    _unavailable(f"{e.name} is not installed (pip install -e '.[dev]')")
if not Path(CHROMIUM).is_file():
    _unavailable("no system Chromium at /usr/bin/chromium (apt-get install -y chromium)")

from canon_edit.viewer.app import Viewer  # noqa: E402

VIEWPORT = {"width": 1200, "height": 700}
EMPTY = np.ones((1, 1, 3), np.float32)  # viser's view before the first image: white
# viser's "software WebGL" notice would cover the top-left of the page in every screenshot
HIDE_NOTICES = ".mantine-Notifications-root { display: none !important; }"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"],
        )
        yield b
        b.close()


@pytest.fixture
def open_viewer(browser, tmp_path) -> Iterator[Callable]:
    """open_viewer(run) → (viewer, page): the viewer served on a free port and a page showing it."""
    started: list[Viewer] = []
    pages = []

    def start(run: RunFolder):
        viewer = Viewer(run.path, host="127.0.0.1", port=free_port())
        started.append(viewer)
        page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
        pages.append(page)
        page.goto(viewer.url)
        page.add_style_tag(content=HIDE_NOTICES)
        return viewer, page

    yield start
    for page in pages:
        page.close()
    for viewer in started:
        viewer.stop()


class Shots:
    """Screenshots of the 3D canvas as float arrays, each also saved under tmp_path."""

    def __init__(self, page, folder: Path):
        self.page, self.folder, self.n = page, folder, 0
        self.canvas = page.locator("canvas[data-engine]")

    def take(self, name: str) -> tuple[np.ndarray, Path]:
        self.n += 1
        path = self.folder / f"{self.n:02d}_{name}.png"
        return self._grab(path), path

    def changed(self, before: np.ndarray, name: str, timeout: float = 15.0) -> tuple[np.ndarray, Path]:
        """The first screenshot that differs from `before`, once it has stopped changing.

        A busy machine can show an intermediate image for a while (the first push, sized before the
        browser reported its canvas), so the shot is settled only when two in a row agree.
        """
        shot, path = self.until(lambda s: np.abs(s - before).max() >= 0.05, name, timeout)
        end = time.monotonic() + 5
        while time.monotonic() < end:
            time.sleep(0.3)
            settled, shot = shot, self._grab(path)
            if np.abs(shot - settled).max() < 0.02:
                break
        return shot, path

    def showing(self, viewer_session, before: np.ndarray, name: str, timeout: float = 15.0):
        """`changed`, with the session's page it shows: the page is drawn for the size the browser last
        reported, so a shot taken while the canvas was still at another size is taken again (its
        panels' rects would fall outside it)."""
        shot, path = self.changed(before, name, timeout)
        page = viewer_session.page
        end = time.monotonic() + timeout
        while shot.shape[:2] != page.image.shape[:2] and time.monotonic() < end:
            time.sleep(0.2)
            shot, page = self._grab(path), viewer_session.page
        return shot, path, page

    def until(
        self, ok: Callable[[np.ndarray], bool], name: str, timeout: float = 15.0
    ) -> tuple[np.ndarray, Path]:
        """The first screenshot for which `ok` holds, or the last one taken when `timeout` runs out."""
        shot, path = self.take(name)
        end = time.monotonic() + timeout
        while not ok(shot) and time.monotonic() < end:
            time.sleep(0.2)
            shot = self._grab(path)
        return shot, path

    def _grab(self, path: Path) -> np.ndarray:
        from PIL import Image

        path.write_bytes(self.canvas.screenshot())
        return np.asarray(Image.open(path).convert("RGB")).astype(np.float32) / 255


def session(viewer: Viewer, timeout: float = 15.0):
    """The one client session, once it has pushed its first image."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for s in viewer.sessions.values():
            if s.pushed:
                return s
        time.sleep(0.1)
    raise AssertionError("no client connected to the viewer")


def panel(shot: np.ndarray, rect, shape: tuple[int, int]) -> torch.Tensor:
    """The screenshot's pixels of a panel, resampled to the panel's own size (3×h×w)."""
    region = torch.from_numpy(shot[rect.y : rect.y + rect.h, rect.x : rect.x + rect.w]).permute(2, 0, 1)
    return torch.nn.functional.interpolate(region[None], size=shape, mode="area")[0]


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-9))


def test_2d_page_shows_facts_and_follows_the_frame_slider(truth_run, procedural, open_viewer, tmp_path):
    viewer, page = open_viewer(truth_run)
    page.wait_for_selector("text=PSNR", timeout=20_000)
    psnr = json.loads(truth_run.metrics.read_text())["psnr"]
    for text in ("codef", f"{psnr:.4g}", "80×48", "warping error"):
        assert page.get_by_text(text, exact=False).count() > 0, f"the page does not show {text!r}"
    s = session(viewer)
    shots = Shots(page, tmp_path)
    first, first_path, first_page = shots.showing(s, EMPTY, "frame0")
    slider = page.get_by_role("slider").first
    slider.focus()
    slider.press("End")
    last, last_path, last_page = shots.showing(s, first, "frame_last")
    assert int(s.frame.value) == procedural.clip.T - 1, f"slider did not move the frame; see {last_path}"
    assert np.abs(last - first).mean() > 0.02, f"the page did not change: {first_path} vs {last_path}"
    # the source panel changed where the video changed: |frame T-1 − frame 0| matches the screenshots'
    h, w = procedural.clip.H, procedural.clip.W
    seen = (panel(last, last_page.rects[0], (h, w)) - panel(first, first_page.rects[0], (h, w))).abs().mean(0)
    truth = (procedural.clip.frames[-1] - procedural.clip.frames[0]).abs().mean(0)
    r = correlation(seen, truth)
    assert r > 0.8, (
        f"screenshot difference does not follow the video's (r={r:.2f}); see {first_path}, {last_path}"
    )


def test_2d_probe_marks_the_texel_the_pixel_samples(truth_run, open_viewer, tmp_path):
    viewer, page = open_viewer(truth_run)
    s = session(viewer)
    shots = Shots(page, tmp_path)
    before, _, shown_page = shots.showing(s, EMPTY, "before")
    cv, rects = s.video, shown_page.rects
    x, y = 50, 20  # a pixel of frame 0, on the sprite (layer 1) and over the background (layer 0)
    cx, cy = rects[1].to_canvas(x + 0.5, y + 0.5)  # the reconstruction panel
    box = shots.canvas.bounding_box()
    page.mouse.click(box["x"] + cx, box["y"] + cy)
    page.wait_for_selector("text=texel (", timeout=10_000)
    after, path = shots.changed(before, "probed")
    text = page.locator("body").inner_text()
    assert "pixel (50, 20)" in text, f"the probe did not report pixel (50, 20); see {path}"
    for k, la in enumerate(cv.layers):
        hc, wc = la.texture.shape[1:]
        u, v = la.uv[0, y, x].float().tolist()
        col, row = (u + 1) * wc / 2 - 0.5, (v + 1) * hc / 2 - 0.5
        assert f"texel ({col:.1f}, {row:.1f})" in text, (
            f"layer {k}: the page does not report texel ({col:.1f}, {row:.1f}); see {path}"
        )
        # the marker (magenta) is drawn on the layer's canonical at that texel
        mx, my = rects[2 + k].to_canvas(col + 0.5, row + 0.5)
        patch = after[int(my) - 3 : int(my) + 4, int(mx) - 3 : int(mx) + 4]
        magenta = (patch[..., 0] > 0.75) & (patch[..., 1] < 0.35) & (patch[..., 2] > 0.75)
        assert magenta.any(), f"no probe marker on layer {k} at ({mx:.0f}, {my:.0f}); see {path}"
    if os.environ.get("CANON_EDIT_SCREENSHOT_DIR"):  # the README's screenshot: a probed 2D run
        out = Path(os.environ["CANON_EDIT_SCREENSHOT_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out / "viewer.png"))


def test_2d_uploaded_canonical_rerenders_the_frames(truth_run, open_viewer, tmp_path):
    viewer, page = open_viewer(truth_run)
    s = session(viewer)
    shots = Shots(page, tmp_path)
    before, _ = shots.changed(EMPTY, "before")
    cv = s.video
    hc, wc = cv.layers[0].texture.shape[1:]
    yy = torch.linspace(0, 1, hc)[:, None].expand(hc, wc)
    edited = torch.stack([torch.ones(hc, wc), yy, torch.zeros(hc, wc)])  # red to yellow, top to bottom
    png = tmp_path / "background_edit.png"
    write_image(png, edited)
    page.locator("input[type=file]").first.set_input_files(str(png))
    after, path, shown_page = shots.showing(s, before, "preview")
    rects = shown_page.rects
    assert len(rects) == 5, f"no edit panel appeared; see {path}"
    expected = cv.render([0], [edited, cv.layers[1].texture])[0]
    shown = panel(after, rects[2], (cv.H, cv.W))
    assert (shown - expected).abs().mean() < 0.06, f"edit panel does not show the edited render; see {path}"
    slider = page.get_by_role("slider").first
    slider.focus()
    slider.press("End")
    later, later_path, shown_page = shots.showing(s, after, "preview_last")
    expected = cv.render([cv.T - 1], [edited, cv.layers[1].texture])[0]
    shown = panel(later, shown_page.rects[2], (cv.H, cv.W))
    assert (shown - expected).abs().mean() < 0.06, f"last frame of the edit is wrong; see {later_path}"
    # saved through the same code path as `canon-edit edit --canonical`
    name = page.locator("input.mantine-TextInput-input").last  # the "edit name" field
    name.fill("red")
    name.press("Enter")
    pushed = s.pushed
    page.get_by_role("button", name="save edit").click()
    page.wait_for_selector("text=saved edit 'red'", timeout=20_000)
    saved = truth_run.edits / "red" / "layer_0.png"
    assert saved.is_file(), f"the edit was not saved; see {later_path}"
    # an edited keyframe (the last frame with a blue box painted on it) is lifted into the canonical
    end = time.monotonic() + 10
    while s.pushed == pushed and time.monotonic() < end:  # the saved edit, read back and shown
        time.sleep(0.05)
    time.sleep(0.3)
    saved_shot, _ = shots.take("saved")
    t = cv.T - 1
    painted = s.scene.source[t].clone()
    painted[:, 14:34, 20:44] = torch.tensor([0.1, 0.2, 0.9])[:, None, None]
    key = tmp_path / "keyframe.png"
    write_image(key, painted)
    page.locator("input[type=file]").nth(1).set_input_files(str(key))
    lifted, lifted_path, shown_page = shots.showing(s, saved_shot, "keyframe_preview")
    shown = panel(lifted, shown_page.rects[2], (cv.H, cv.W))
    box = shown[:, 16:32, 22:42].mean((1, 2))
    assert box[2] > 0.7 and box[0] < 0.3, f"the painted box is not in the edit panel; see {lifted_path}"


def test_2d_segmented_preview_and_save_say_where_the_paint_stops(open_viewer, tmp_path):
    """The notes `canon-edit edit` prints (see test_segments.py) reach a viewer user too: in the
    status panel on the keyframe's preview and again once it is saved."""
    from canon_edit.procedural import make_long_clip, paint_seen
    from canon_edit.segment_truth import make_segmented_truth_run
    from canon_edit.segments import Segment

    proc = make_long_clip(frames=60, height=32, width=48, span=3.0, period=28)
    cuts = [Segment("seg_000", 0, 23), Segment("seg_001", 19, 40), Segment("seg_002", 36, 60)]
    run = make_segmented_truth_run(tmp_path / "seg", proc, 0, 4, segments=cuts)  # no sprite at 19-22
    viewer, page = open_viewer(run)
    s = session(viewer)
    s.frame.value = 14
    key = tmp_path / "keyframe.png"
    write_image(key, paint_seen(proc.truth, 14).render([14])[0].clamp(0, 1))
    page.locator("input[type=file]").nth(1).set_input_files(str(key))
    stop = "note: the paint on layer 1 (sprite) shows in seg_000 (frames 0-18)"
    page.wait_for_selector("text=previewing keyframe.png as frame 14", timeout=20_000)
    assert stop in s.status.content and page.get_by_text(stop).count() == 1
    name = page.locator("input.mantine-TextInput-input").last  # the "edit name" field
    name.fill("sprite")
    name.press("Enter")
    page.get_by_role("button", name="save edit").click()
    page.wait_for_selector("text=saved edit 'sprite'", timeout=20_000)
    assert stop in s.status.content and page.get_by_text(stop).count() == 1
    meta = json.loads((run.edits / "sprite" / "edit.json").read_text())
    assert page.get_by_text(stop).inner_text() == f"note: {meta['paint_stops'][0]}"  # as the CLI says it


@pytest.fixture
def portrait_run(tmp_path, smplx_dir, body, portrait) -> RunFolder:
    """A finished portrait run without fitting: the model's initial Gaussians, baked."""
    from canon_edit_representations.portrait.config import PortraitConfig
    from canon_edit_representations.portrait.model import Portrait

    cfg = PortraitConfig(body="smplx", body_model_dir=str(smplx_dir), texel_resolution=48)
    model = Portrait(portrait.clip, None, cfg, body=body, tracking=portrait.tracking)
    clip = portrait.clip
    run = RunFolder.create(tmp_path / "portrait_run")
    run.save_clip(clip)
    run.write_info(
        method="portrait", status="fitting", frames=clip.T, height=clip.H, width=clip.W, fps=clip.fps
    )
    finish_run(run, model.bake(), clip)
    run.write_info(status="done", steps=0)
    return run


def test_portrait_view_renders_the_person_and_orbits(portrait_run, open_viewer, tmp_path):
    viewer, page = open_viewer(portrait_run)
    page.wait_for_selector("text=portrait", timeout=20_000)
    session(viewer)
    shots = Shots(page, tmp_path)
    front, front_path = shots.changed(EMPTY, "front")
    person = front.max(-1) > 0.1  # rendered over black
    share = float(person.mean())
    assert 0.01 < share < 0.8, f"the person covers {share:.1%} of the view; see {front_path}"
    box = shots.canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 150, cy, steps=8)
    page.mouse.up()
    side, side_path = shots.changed(front, "orbited")
    changed = float((np.abs(side - front).max(-1) > 0.1).mean())
    assert changed > 0.005, f"orbiting did not change the view; see {front_path}, {side_path}"
    assert (side.max(-1) > 0.1).mean() > 0.005, f"the person vanished after orbiting; see {side_path}"


def test_portrait_view_shows_the_edit_picked_in_the_dropdown(portrait_run, open_viewer, tmp_path):
    from canon_edit.edit.commands import EditTarget, edit_appearance

    green = torch.zeros(3, 16, 16)
    green[1] = torch.linspace(0.6, 0.9, 16)[:, None]
    write_image(tmp_path / "green.png", green)
    edit_appearance(EditTarget(run=portrait_run.path, name="green"), tmp_path / "green.png")
    viewer, page = open_viewer(portrait_run)
    page.wait_for_selector("text=portrait", timeout=20_000)
    s = session(viewer)
    s.show_frustum.value = False  # only the avatar on screen
    shots = Shots(page, tmp_path)
    before, before_path = shots.changed(EMPTY, "reconstruction")
    assert green_share(before) < 0.5, f"the avatar is green before the edit was picked; see {before_path}"
    s.edit.value = "green"  # what picking it in the dropdown does
    after, after_path = shots.until(lambda shot: green_share(shot) > 0.6, "edit")
    share = green_share(after)
    assert share > 0.6, f"the edited avatar is not green ({share:.2f}); see {before_path}, {after_path}"


def green_share(shot: np.ndarray) -> float:
    """The median share of green in the colour of the pixels the person covers (0 where none)."""
    person = shot.max(-1) > 0.1
    if not person.any():
        return 0.0
    return float(np.median(shot[person][:, 1] / shot[person].sum(-1).clip(1e-3)))
