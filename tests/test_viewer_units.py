"""The viewer's pieces that need no browser: the probe both ways, the adaptive resolution policy,
the page layout, the camera conversion, the render worker and the CLI's refusals."""

from __future__ import annotations

import math
import threading
import time

import pytest
import torch

from canon_edit.canonical import CanonicalVideo, Layer
from canon_edit.cli import main
from canon_edit.edit.store import list_edits
from canon_edit.viewer import view2d
from canon_edit.viewer.camera import (
    fov_y,
    intrinsics,
    look_from_viewmat,
    quaternion_matrix,
    viewmat_from_pose,
)
from canon_edit.viewer.canvas import layout
from canon_edit.viewer.facts import facts_markdown, run_facts
from canon_edit.viewer.overlays import coverage_count, with_grid
from canon_edit.viewer.policy import ResolutionPolicy, moving_scale, scaled_size, settled, update_cost
from canon_edit.viewer.probe import frame_to_texel, texel_footprint, texel_to_frame, uv_to_texel
from canon_edit.viewer.render_worker import RenderWorker
from canon_edit.viewer.view2d import ProbePixel, ProbeTexel, Scene2D, State2D


def affine_video(T: int = 3, H: int = 12, W: int = 20, hc: int = 40, wc: int = 60) -> CanonicalVideo:
    """One layer whose frame t samples texel (col, row) = (2x + 3t + 0.5, 2y + 1 + 0.5): a known uv."""
    ys, xs = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    uv = []
    for t in range(T):
        col, row = 2 * xs + 3 * t + 0.5, 2 * ys + 1 + 0.5
        uv.append(torch.stack([(col + 0.5) / (wc / 2) - 1, (row + 0.5) / (hc / 2) - 1], -1))
    texture = torch.rand(3, hc, wc, generator=torch.Generator().manual_seed(0))
    return CanonicalVideo([Layer(texture=texture, uv=torch.stack(uv).float())], fps=10.0)


def test_frame_pixel_maps_to_the_texel_its_uv_samples():
    cv = affine_video()
    for t, (x, y) in [(0, (0, 0)), (1, (7, 5)), (2, (19, 11))]:
        col, row = frame_to_texel(cv.layers[0].uv[t], x, y, (40, 60))
        assert (col, row) == pytest.approx((2 * x + 3 * t + 0.5, 2 * y + 1.5), abs=1e-4)
    # and that texel is what rendering reads: bilinear at the half-texel mixes the two neighbours
    t, x, y = 1, 4, 3
    tex = cv.layers[0].texture
    col, row = 2 * x + 3 * t, 2 * y + 1
    expected = tex[:, row : row + 2, col : col + 2].mean((1, 2))
    torch.testing.assert_close(cv.render([t])[0, :, y, x], expected, atol=1e-5, rtol=0)


def test_texel_maps_back_to_the_pixel_that_samples_it():
    cv = affine_video()
    uv = cv.layers[0].uv[2]
    hit = texel_to_frame(uv, (2 * 9 + 6 + 0.5, 2 * 4 + 1.5), (40, 60))
    assert (hit.x, hit.y) == (9, 4) and hit.distance == pytest.approx(0, abs=1e-4)
    assert texel_footprint(uv, (40, 60)) == pytest.approx(2.0, abs=1e-4)
    far = texel_to_frame(uv, (59.0, 39.0), (40, 60))  # beyond what frame 2 sees: nearest edge pixel, far away
    assert far.distance > 5
    hidden = torch.zeros(uv.shape[:2])
    assert texel_to_frame(uv, (10.0, 10.0), (40, 60), weight=hidden) is None


def test_probe_round_trip_on_the_procedural_truth(procedural):
    cv = procedural.truth
    scene = Scene2D(cv, procedural.clip.frames)
    t, x, y = 5, 40, 24  # on the sprite
    page = scene.draw(State2D(frame=t, probe=ProbePixel(x, y), width=800, height=600))
    for k, la in enumerate(cv.layers):
        expected = uv_to_texel(la.uv[t, y, x], tuple(la.texture.shape[1:])).tolist()
        assert page.marks[f"layer {k}"] == pytest.approx(expected, abs=1e-4)
    col, row = (round(v) for v in page.marks["layer 1"])
    back = scene.draw(State2D(frame=t, probe=ProbeTexel(1, col, row), width=800, height=600))
    bx, by = back.marks["frame"]
    assert abs(bx - x) <= 1 and abs(by - y) <= 1, "the texel maps back next to the probed pixel"
    # a click on the reconstruction panel probes that pixel
    rect = page.rects[1]
    cx, cy = rect.to_canvas(x + 0.5, y + 0.5)
    assert scene.probe_at(page, cx, cy) == ProbePixel(x, y)


def test_layout_keeps_aspect_and_maps_clicks_both_ways():
    rows = [[(80, 48), (80, 48), (80, 48)], [(120, 70), (64, 64)]]
    placed = layout(rows, 1000, 600)
    for row_sizes, rects in zip(rows, placed, strict=True):
        for (w, h), r in zip(row_sizes, rects, strict=True):
            assert r.w / r.h == pytest.approx(w / h, rel=0.05)
            assert r.x >= 0 and r.x + r.w <= 1000 and r.y >= 0 and r.y + r.h <= 600
            for col, row in [(0, 0), (w // 2, h // 3), (w - 1, h - 1)]:
                assert r.to_panel(*r.to_canvas(col + 0.5, row + 0.5)) == (col, row)
    flat = [r for rects in placed for r in rects]
    for a in flat:  # no two panels overlap
        for b in flat:
            if a is not b:
                assert a.x + a.w <= b.x or b.x + b.w <= a.x or a.y + a.h <= b.y or b.y + b.h <= a.y


def test_resolution_policy_scales_with_cost_and_settles():
    p = ResolutionPolicy(budget_ms=50, min_scale=0.25, settle_s=0.2)
    assert moving_scale(p, None) == 1.0 and moving_scale(p, 40.0) == 1.0
    assert moving_scale(p, 200.0) == pytest.approx(0.5)  # a quarter of the pixels: a quarter of the time
    assert moving_scale(p, 1e6) == 0.25
    # a render at half the side that took 30 ms means about 120 ms at full size
    assert update_cost(None, 30.0, 0.5, p) == pytest.approx(120.0)
    assert update_cost(100.0, 30.0, 0.5, p) == pytest.approx(110.0)
    assert scaled_size(1280, 720, 0.5) == (640, 360) and scaled_size(20, 10, 0.01) == (8, 8)
    assert not settled(10.1, 10.0, p) and settled(10.25, 10.0, p)


def test_browser_camera_converts_to_the_renderer_camera():
    angle = math.radians(30)
    wxyz = (math.cos(angle / 2), 0.0, math.sin(angle / 2), 0.0)  # 30° about y
    position = (0.3, -0.2, -2.0)
    view = viewmat_from_pose(wxyz, position)
    r = quaternion_matrix(wxyz)
    torch.testing.assert_close(view[:3, :3] @ r, torch.eye(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        view[:3, :3] @ torch.tensor(position) + view[:3, 3], torch.zeros(3), atol=1e-6, rtol=0
    )
    pos, look, up = look_from_viewmat(view, 2.0)
    torch.testing.assert_close(pos, torch.tensor(position), atol=1e-6, rtol=0)
    forward = r[:, 2]
    torch.testing.assert_close(look, torch.tensor(position) + 2 * forward, atol=1e-6, rtol=0)
    torch.testing.assert_close(up, -r[:, 1], atol=1e-6, rtol=0)
    K = intrinsics(math.radians(50), 640, 480)
    assert fov_y(K, 480) == pytest.approx(math.radians(50)) and K[0, 2] == 320 and K[0, 0] == K[1, 1]


def test_render_worker_coalesces_requests_and_follows_up_when_idle():
    rendered: list[int] = []
    gate, busy = threading.Event(), threading.Event()

    def render(n: int) -> None:
        busy.set()
        gate.wait(5)
        rendered.append(n)

    worker = RenderWorker(render, lambda line: None, idle=lambda n: -n if n > 0 else None, idle_s=0.05)
    worker.submit(1)
    assert busy.wait(5)  # 1 is being rendered (blocked); 2..4 queue up and only 4 survives
    for n in (2, 3, 4):
        worker.submit(n)
    gate.set()
    deadline = time.monotonic() + 5
    while len(rendered) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.stop()
    assert rendered == [1, 4, -4]


def test_facts_come_from_the_run_files(truth_run):
    facts = run_facts(truth_run, (12, 48, 80))
    assert facts["method"] == "codef" and facts["status"] == "done" and facts["size"] == "80×48"
    text = facts_markdown(facts, list_edits(truth_run))
    assert f"{facts['psnr']:.4g}" in text and "| edits | none |" in text
    text = facts_markdown(facts, ["a", "b"], stale=["b"])
    assert "| edits | a, b (made on an earlier canonical: make it again) |" in text


def test_view_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["view", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a canon-edit run" in err


def test_view_without_viser_names_the_extra(truth_run, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "viser", None)  # import viser → ImportError
    assert main(["view", str(truth_run.path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "viewer extra" in err


def test_viewer_opens_a_run_being_fitted_without_its_lock(tmp_path, procedural):
    pytest.importorskip("viser", reason="viser is not installed (pip install -e '.[viewer]')")
    import socket

    from canon_edit.fitting import finish_run
    from canon_edit.lock import LOCK_NAME, run_lock
    from canon_edit.run import RunFolder
    from canon_edit.viewer.app import Viewer

    run = RunFolder.create(tmp_path / "run")
    run.save_clip(procedural.clip)
    run.write_info(method="codef", status="fitting", frames=procedural.clip.T, fps=procedural.clip.fps)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with run_lock(run.path, "fit"):  # a fit is writing the run
        held = (run.path / LOCK_NAME).read_bytes()
        viewer = Viewer(run.path, port=port)
        try:
            assert viewer.bake is None and viewer.url == f"http://127.0.0.1:{port}"
            # the source frames are read as they are shown, from the run's mapped clip, not held whole
            assert viewer.source.storage is not None and viewer.source.shape == procedural.clip.frames.shape
            assert torch.equal(viewer.source[3], run.stored_clip().read(3, 4)[0])
            finish_run(run, procedural.truth, procedural.clip)  # the fit writes its bake
            viewer.reload()
            assert isinstance(viewer.bake, CanonicalVideo) and viewer.scene is not None
        finally:
            viewer.stop()
        assert (run.path / LOCK_NAME).read_bytes() == held, "the viewer touched the fit's lock"


def test_portrait_asset_renders_any_view_and_its_source_view(smplx_dir, body, portrait):
    from dataclasses import replace

    from canon_edit_representations.portrait.config import PortraitConfig
    from canon_edit_representations.portrait.model import Portrait

    cfg = PortraitConfig(body="smplx", body_model_dir=str(smplx_dir), texel_resolution=48)
    asset = Portrait(portrait.clip, None, cfg, body=body, tracking=portrait.tracking).bake()
    t = 2
    cam = asset.source_camera(t)
    black = torch.zeros(3, cam.height, cam.width)
    torch.testing.assert_close(
        asset.render_view(t, cam), asset.render([t], background=black)[0], atol=1e-6, rtol=0
    )
    # another camera (half the size, turned 20° about the body's vertical axis) sees a different image
    turn = viewmat_from_pose(
        (math.cos(math.radians(10)), 0.0, math.sin(math.radians(10)), 0.0), (0.0, 0.0, 0.0)
    )
    other = replace(
        cam,
        viewmat=cam.viewmat @ turn,
        K=cam.K * torch.tensor([[0.5], [0.5], [1.0]]),
        width=cam.width // 2,
        height=cam.height // 2,
    )
    image = asset.render_view(t, other)
    assert image.shape == (3, cam.height // 2, cam.width // 2) and image.amax() > 0.1
    vertices, faces = asset.body_mesh(t)
    assert vertices.shape[1] == 3 and int(faces.max()) < len(vertices)


def test_coverage_counts_the_frames_that_see_each_texel():
    cv = affine_video()  # frame t sees columns 3t .. 3t + 39 (plus the splat's one-texel rim), rows 1 .. 24
    count = coverage_count(cv, 0)
    assert count.shape == (40, 60)
    assert count[10, 20] == 3  # in every frame
    assert count[10, 1] == 1 and count[10, 44] == 1  # only at the pan's start / end
    assert count[10, 55] == 0 and count[35, 20] == 0  # never seen


def test_uv_grid_changes_the_renders_but_not_the_source(procedural):
    scene = Scene2D(procedural.truth, procedural.clip.frames)
    plain = scene.draw(State2D(frame=3, width=640, height=480))
    grid = scene.draw(State2D(frame=3, grid=True, width=640, height=480))
    diff = torch.from_numpy(plain.image.astype("float32") - grid.image.astype("float32")).abs().amax(-1)
    src, rec = plain.rects[0], plain.rects[1]
    assert diff[src.y : src.y + src.h, src.x : src.x + src.w].max() == 0
    assert (diff[rec.y : rec.y + rec.h, rec.x : rec.x + rec.w] > 60).float().mean() > 0.05


def test_the_uv_grid_is_painted_once_per_video_not_once_per_draw(procedural, monkeypatch):
    painted = []
    monkeypatch.setattr(view2d, "with_grid", lambda x: painted.append(x) or with_grid(x))
    scene = Scene2D(procedural.truth, procedural.clip.frames)
    first = scene.draw(State2D(frame=3, grid=True, width=640, height=480))
    assert len(painted) == len(procedural.truth.layers)
    again = scene.draw(State2D(frame=5, grid=True, width=640, height=480))
    assert len(painted) == len(procedural.truth.layers)  # the same video: its gridded copy is reused
    assert not (first.image == again.image).all()
    edit = procedural.truth.with_textures([1 - x for x in procedural.truth.textures()])
    scene.draw(State2D(frame=5, grid=True, edit=edit, edit_label="inverted", width=640, height=480))
    assert len(painted) == 2 * len(procedural.truth.layers)  # a new edit is gridded once
    scene.draw(State2D(frame=6, grid=True, edit=edit, edit_label="inverted", width=640, height=480))
    assert len(painted) == 2 * len(procedural.truth.layers)
