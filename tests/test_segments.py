"""Segmented runs: the plan, the cross-faded render, and an edit carried through every segment.

The known answer is the procedural long clip (a pan over a background three frames wide, a sprite
that leaves and comes back). Each segment's bake is the truth restricted to its frames, with a
canonical of its own (`segment_truth`), so an edit can only reach a segment by being carried into
that segment's own texture space.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file

from canon_edit.canonical import over
from canon_edit.cli import main
from canon_edit.edit.commands import (
    EditTarget,
    edit_canonical,
    edit_keyframe,
    edited_bake,
    painted_canonical,
    render_run,
)
from canon_edit.errors import UserError
from canon_edit.fitting import ClipOptions
from canon_edit.flow import Flow
from canon_edit.metrics import psnr
from canon_edit.procedural import make_long_clip, paint_seen, seen_mask
from canon_edit.representation import load_bake
from canon_edit.run import RunFolder
from canon_edit.segment_truth import background_columns, make_segmented_truth_run
from canon_edit.segmented_fit import fit_segmented_video
from canon_edit.segments import (
    SEGMENTS_DIR,
    Segment,
    SegmentedVideo,
    blend_weights,
    plan_by_motion,
    plan_segments,
)
from canon_edit.video import read_image, write_image, write_pngs
from canon_edit.viewer.probe import uv_to_texel
from canon_edit.viewer.session2d import with_keyframe
from canon_edit.viewer.view2d import ProbePixel, ProbeTexel, Scene2D, State2D


@pytest.fixture(scope="module")
def long_clip():
    return make_long_clip(frames=60, height=32, width=48, span=3.0, period=28)


def test_plan_covers_the_clip_with_shared_frames():
    segs = plan_segments(100, 30, 5)
    assert [(s.start, s.end) for s in segs] == [(0, 29), (24, 53), (48, 76), (71, 100)]
    # the fewest segments, evenly spread: no short leftover at the end
    assert [(s.start, s.end) for s in plan_segments(58, 30, 5)] == [(0, 23), (18, 40), (35, 58)]
    assert [(s.start, s.end) for s in plan_segments(20, 30, 5)] == [(0, 20)]
    for t in range(100):
        weights = blend_weights(segs, t)
        assert sum(w for _, w in weights) == pytest.approx(1.0)
    # the cross-fade hands over monotonically from one segment to the next
    handover = [dict(blend_weights(segs, t)).get(1, 0.0) for t in range(20, 35)]
    assert handover == sorted(handover) and handover[0] == 0 and handover[-1] == 1
    with pytest.raises(UserError, match="--overlap must be between 1 and"):
        plan_segments(100, 30, 30)


@pytest.fixture(scope="module")
def segmented_run(tmp_path_factory, long_clip):
    return make_segmented_truth_run(tmp_path_factory.mktemp("seg"), long_clip, length=20, overlap=4)


def test_segmented_bake_renders_the_clip(segmented_run, long_clip):
    bake = load_bake(segmented_run)
    assert isinstance(bake, SegmentedVideo) and bake.T == 60 and len(bake.segments) == 4
    video = bake.render()
    assert psnr(video, long_clip.clip.frames) > 40
    assert torch.equal(bake.render([3, 17, 18, 59]), video[[3, 17, 18, 59]])


def test_a_segment_task_checks_memory_where_it_runs(segmented_run, tmp_path, monkeypatch):
    """A segment fitted as a (Ray) task is checked on the machine that runs it, before it writes."""
    from canon_edit import memory
    from canon_edit.segmented_fit import fit_segment

    run = shutil.copytree(segmented_run.path, tmp_path / "run")
    shutil.rmtree(run / SEGMENTS_DIR / "seg_001")
    monkeypatch.setattr(memory, "available_memory", lambda: 10**6)
    with pytest.raises(UserError, match=r"a segment of 18 frames at 48x32 with codef needs about"):
        fit_segment(str(run), 1, "cpu", None, False)
    assert not (run / SEGMENTS_DIR / "seg_001").exists()


@pytest.mark.parametrize("keyframe", [10, 15])  # inside one segment; in an overlap (two hold it)
def test_keyframe_edit_reaches_every_segment(segmented_run, long_clip, tmp_path, keyframe, capsys):
    truth_edit = paint_seen(long_clip.truth, keyframe)
    edited_frame = truth_edit.render([keyframe])[0].clamp(0, 1)
    write_image(tmp_path / "edited.png", edited_frame)
    name = f"paint{keyframe}"
    folder = edit_keyframe(EditTarget(segmented_run.path, name=name), keyframe, tmp_path / "edited.png")
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == [f"seg_{k:03d}" for k in range(4)]
    assert "paint_stops" not in json.loads((folder / "edit.json").read_text())  # every seam shows the sprite
    assert "note" not in capsys.readouterr().err

    bake = edited_bake(segmented_run, load_bake(segmented_run), name)
    video = bake.render().clamp(0, 1)
    expected = truth_edit.render().clamp(0, 1)
    seen = seen_mask(long_clip.truth, keyframe)[:, None].float()
    changed = (expected - long_clip.clip.frames).abs().amax(1, keepdim=True) > 0.1
    for seg in bake.segments:
        part = slice(seg.start, seg.end)
        # every segment shows painted pixels (the sprite comes back), and they match the true edit
        assert (changed[part] * seen[part].bool()).sum() >= 20, seg.name
        # the paint is sampled from the edited canonical once, however many seams away: no decay
        # (lifted again at every seam, the last segment fell to 37 dB)
        assert psnr(video[part], expected[part], seen[part].expand(-1, 3, -1, -1)) >= 39, seg.name

    out = tmp_path / "edit.mp4"
    assert main(["render", str(segmented_run.path), "--edit", name, "-o", str(out)]) in (0, None)
    assert out.stat().st_size > 0


def test_canonical_edit_of_one_segment_reaches_the_others(segmented_run, long_clip, tmp_path, capsys):
    bake = load_bake(segmented_run)
    h, w = bake.bakes[1].layers[0].texture.shape[1:]
    paint = torch.zeros(4, h, w)
    paint[:, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = torch.tensor([1.0, 0.1, 0.1, 1.0])[:, None, None]
    write_image(tmp_path / "paint.png", paint)
    edit = ["edit", str(segmented_run.path), "--canonical", str(tmp_path / "paint.png")]
    assert main(edit) == 2
    assert "name the one you painted with --segment K, K in 0..3" in capsys.readouterr().err
    assert main([*edit, "--segment", "1", "--name", "seg1"]) in (0, None)

    bg = long_clip.truth.layers[0].texture
    x0, _ = background_columns(long_clip.truth, 14, 32)
    placed = torch.zeros(4, *bg.shape[1:])
    placed[:, :, x0 : x0 + w] = paint
    expected = (
        long_clip.truth.with_textures([over(bg, placed), long_clip.truth.textures()[1]]).render().clamp(0, 1)
    )
    video = edited_bake(segmented_run, bake, "seg1").render().clamp(0, 1)
    painted = ((expected - long_clip.clip.frames).abs().amax(1, keepdim=True) > 0.1).expand(-1, 3, -1, -1)
    for seg in bake.segments[:3]:  # the last segment no longer sees that stretch of the pan
        part = slice(seg.start, seg.end)
        assert painted[part].sum() > 300, seg.name
        assert psnr(video[part], expected[part], painted[part].float()) >= 28, seg.name
    assert render_run(segmented_run.path, tmp_path / "f.png", frame=59, edit="seg1").is_file()


@pytest.mark.parametrize(
    ("keyframe", "stop", "unpainted"),
    [
        (
            14,
            "seg_000 (frames 0-18) but not in the frames it shares with seg_001 (19-22)",
            "from frame 24 on",
        ),
        (28, "seg_001 (frames 24-39) but not in the frames it shares with seg_000 (19-22)", "up to frame 18"),
    ],
)
def test_an_edit_says_at_which_seam_its_paint_stops(long_clip, tmp_path, capsys, keyframe, stop, unpainted):
    """Cut where the sprite is out of view (frames 19-22), the sprite's paint cannot cross that seam,
    though the sprite is in view on both sides: the edit says so, naming the layer, the segments, the
    shared frames and where the sprite is unpainted, whichever way the paint went; the background's
    paint crosses and is not named."""
    # the other seam shows the whole sprite (27-29), so all the paint that reaches seg_001 crosses it
    cuts = [Segment("seg_000", 0, 23), Segment("seg_001", 19, 40), Segment("seg_002", 26, 60)]
    assert long_clip.truth.layers[1].alpha[19:23].float().amax() < 0.5  # the premise: no sprite there
    run = make_segmented_truth_run(tmp_path, long_clip, 0, 4, segments=cuts)
    edited = tmp_path / "edited.png"
    write_image(edited, paint_seen(long_clip.truth, keyframe).render([keyframe])[0].clamp(0, 1))
    edit = ["edit", str(run.path), "--keyframe", str(keyframe), "--image", str(edited), "--name", "e"]
    assert main(edit) in (0, None)
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("canon-edit: note:")]
    assert len(notes) == 1, notes
    assert f"paint on layer 1 (sprite) shows in {stop}, so the layer is unpainted" in notes[0]
    assert f"where it is back in view ({unpainted})" in notes[0]
    meta = json.loads((run.edits / "e" / "edit.json").read_text())
    assert meta["paint_stops"] == [notes[0].removeprefix("canon-edit: note: ")]

    video = edited_bake(run, load_bake(run), "e").render().clamp(0, 1)
    sprite = long_clip.truth.layers[1].alpha[:, None].float().expand(-1, 3, -1, -1) > 0.99  # no background
    on_sprite = ((video - long_clip.clip.frames).abs() > 0.1) & sprite
    across = slice(24, 60) if keyframe < 19 else slice(0, 19)
    assert on_sprite[keyframe].any() and not on_sprite[across].any()  # what the note says


@pytest.mark.parametrize(
    ("keyframe", "source", "target", "unpainted"), [(14, 0, 1, "from frame"), (28, 1, 0, "up to frame")]
)
def test_an_edit_says_how_much_of_its_paint_crosses_a_seam(
    long_clip, tmp_path, capsys, keyframe, source, target, unpainted
):
    """Cut where the sprite is leaving the view (frames 17-18 show part of it), only that part of its
    paint crosses, and the sprite comes back whole past the seam: the edit says which share crossed,
    and that share is what a frame showing the whole sprite shows painted."""
    cuts = [Segment("seg_000", 0, 19), Segment("seg_001", 17, 40), Segment("seg_002", 26, 60)]  # 27-29: whole
    alpha = long_clip.truth.layers[1].alpha.float()
    assert 0 < alpha[17:19].amax(0).sum() < 0.7 * alpha[keyframe].sum()  # the premise: part of it there
    run = make_segmented_truth_run(tmp_path, long_clip, 0, 2, segments=cuts)
    edited = tmp_path / "edited.png"
    write_image(edited, paint_seen(long_clip.truth, keyframe).render([keyframe])[0].clamp(0, 1))
    assert main(
        ["edit", str(run.path), "--keyframe", str(keyframe), "--image", str(edited), "--name", "e"]
    ) in (0, None)
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("canon-edit: note:")]
    assert len(notes) == 1, notes
    share = re.search(r"only (\d+)% of the paint on layer 1 \(sprite\) that (seg_\d+) shows", notes[0])
    assert share and share[2] == f"seg_{source:03d}", notes[0]
    assert f"frames it shares with seg_{target:03d} (17-18)" in notes[0] and unpainted in notes[0]

    # a frame past the seam with the whole sprite in view shows that share of it painted
    whole = 28 if keyframe == 14 else 14
    video = edited_bake(run, load_bake(run), "e").render([whole])[0].clamp(0, 1)
    expected = paint_seen(long_clip.truth, keyframe).render([whole])[0].clamp(0, 1)
    sprite = alpha[whole] > 0.99
    painted = ((expected - long_clip.clip.frames[whole]).abs().amax(0) > 0.1) & sprite
    got = ((video - long_clip.clip.frames[whole]).abs().amax(0) > 0.1) & painted
    assert int(share[1]) / 100 == pytest.approx(float(got.sum() / painted.sum()), abs=0.12)
    assert 0.1 < float(got.sum() / painted.sum()) < 0.8


def test_a_part_of_the_paint_lost_at_a_seam_is_told_where_it_is_back_further_on(long_clip, tmp_path, capsys):
    """seg_001 shows only the frames where the sprite is leaving (17-18), so the part of its paint
    the first seam lost is out of view all through it, and back only in seg_002 (whole from 26): the
    note names the first seam and a frame of seg_002; the second seam carries all seg_001 has."""
    cuts = [Segment("seg_000", 0, 19), Segment("seg_001", 17, 19), Segment("seg_002", 17, 60)]
    run = make_segmented_truth_run(tmp_path, long_clip, 0, 2, segments=cuts)
    edited = tmp_path / "edited.png"
    write_image(edited, paint_seen(long_clip.truth, 14).render([14])[0].clamp(0, 1))
    edit = ["edit", str(run.path), "--keyframe", "14", "--image", str(edited), "--name", "e"]
    assert main(edit) in (0, None)
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("canon-edit: note:")]
    assert len(notes) == 1, notes
    found = re.search(
        r"that seg_000 shows .* shares with seg_001 \(17-18\).*\(from frame (\d+) on\)", notes[0]
    )
    assert found and 24 <= int(found[1]) <= 30, notes[0]


@pytest.fixture(scope="module")
def tiny_long_clip(tmp_path_factory):
    """A 24-frame long clip as a clip folder, split 12/3 into three segments."""
    proc = make_long_clip(frames=24, height=24, width=32, span=2.0, period=14)
    folder = tmp_path_factory.mktemp("tiny_long") / "clip"
    write_pngs(folder / "frames", proc.clip.frames)
    write_pngs(folder / "masks", proc.clip.masks.expand(-1, 3, -1, -1))
    return folder


def _fit_tiny(clip, out, **kwargs):
    return fit_segmented_video(
        ClipOptions(str(clip)), out, "codef", length=12, overlap=3,
        overrides={"train": {"steps": 20, "checkpoint_every": 10}}, show_progress=False, threads=1, **kwargs,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_segmented(tiny_long_clip, tmp_path_factory):
    return _fit_tiny(tiny_long_clip, tmp_path_factory.mktemp("fit") / "run")


def _bakes(run: RunFolder) -> list[dict[str, torch.Tensor]]:
    return [
        load_file(str(run.path / SEGMENTS_DIR / f"seg_{k:03d}" / "canonical" / "bake.safetensors"))
        for k in range(3)
    ]


def test_a_segmented_fit_is_a_run_of_runs(tiny_segmented):
    info = tiny_segmented.info()
    assert info["status"] == "done" and [s["end"] for s in info["segments"]] == [10, 17, 24]
    assert info["steps"] == 60
    bake = load_bake(tiny_segmented)
    assert isinstance(bake, SegmentedVideo) and bake.T == 24
    metrics = json.loads(tiny_segmented.metrics.read_text())
    assert metrics["frames"] == 24 and metrics["psnr"] > 12
    assert (tiny_segmented.renders / "reconstruction.mp4").stat().st_size > 0


def test_resume_fits_only_the_unfinished_segments(tiny_long_clip, tiny_segmented, tmp_path, capsys):
    run = RunFolder(tmp_path / "run")
    shutil.copytree(tiny_segmented.path, run.path)
    shutil.rmtree(run.path / SEGMENTS_DIR / "seg_001")  # as if killed before that segment started
    run.write_info(status="fitting")
    kept = [run.path / SEGMENTS_DIR / name / "run.json" for name in ("seg_000", "seg_002")]
    before = [p.stat().st_mtime_ns for p in kept]
    code = main(["fit", "--resume", "-o", str(run.path), "--quiet", "--threads", "1"])
    assert code in (0, None)
    assert [p.stat().st_mtime_ns for p in kept] == before  # finished segments are not touched
    assert run.info()["status"] == "done"
    for mine, theirs in zip(_bakes(run), _bakes(tiny_segmented), strict=True):
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)  # same seed, same segment


def test_segments_on_ray_equal_the_local_fit(tiny_long_clip, tiny_segmented, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        run = _fit_tiny(tiny_long_clip, tmp_path / "run", executor="ray")
    finally:
        ray.shutdown()
    for mine, theirs in zip(_bakes(run), _bakes(tiny_segmented), strict=True):
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


def test_bad_segment_options_fail_before_any_work(tiny_long_clip, tmp_path, capsys):
    out = tmp_path / "run"
    fit = ["fit", str(tiny_long_clip), "-o", str(out), "--segment-frames", "12"]
    assert main([*fit, "--overlap", "12"]) == 2 and not out.exists()
    assert "--overlap must be between 1 and" in capsys.readouterr().err
    assert main([*fit, "--segments", "auto"]) == 2 and not out.exists()
    assert "give one" in capsys.readouterr().err
    assert main([*fit, "--method", "portrait"]) == 2 and not out.exists()
    assert "splits 2D fits" in capsys.readouterr().err
    assert main([*fit[:4], "--overlap", "3"]) == 2
    assert "--overlap goes with --segment-frames" in capsys.readouterr().err
    assert main([*fit[:4], "--segment-frames", "0"]) == 2 and not out.exists()  # 0 is not "auto"
    assert "--segment-frames must be at least 2, got 0" in capsys.readouterr().err


def _panning(racing: torch.Tensor) -> Flow:
    """The background slides 0.8 px a frame (one frame width of 64 in 80 frames); the pixels of
    `racing` (T×H×W, frames 1 on) race 9 px a frame the other way."""
    forward = torch.zeros(racing.shape[0] - 1, 2, *racing.shape[1:])
    forward[:, 0] = -0.8
    forward[:, 0][racing[1:]] = 9.0
    ok = torch.ones(forward.shape[0], *racing.shape[1:], dtype=torch.bool)
    return Flow(forward, -forward, ok, ok)


def _reader(masks: torch.Tensor | None):
    """Masks in memory read as a run's stored clip reads them, a chunk of frames at a time."""
    return None if masks is None else lambda start, stop: masks[start:stop]


def test_auto_segments_cut_where_the_camera_has_travelled_a_frame():
    masks = torch.zeros(200, 2, 24, 64)  # two labels: the camera is what neither of them covers
    masks[:, 0, :, :10] = 1
    masks[:, 1, :, 10:40] = 1
    flow = _panning(masks.amax(1) > 0)  # a foreground racing the other way over most of the frame
    plan = plan_by_motion(flow, _reader(masks), stretch=1.0, overlap=5, longest=150)
    assert [(s.start, s.end) for s in plan] == [(0, 81), (76, 157), (152, 200)]
    assert plan_by_motion(flow, _reader(masks), 1.0, 5, 60)[0].end == 60  # never longer than `longest`
    # without the masks the foreground's motion would pass for the camera's
    assert plan_by_motion(flow, None, 1.0, 5, 150)[0].end == 11


def test_auto_cuts_move_to_where_the_shared_frames_show_the_masked_objects():
    """By travel alone the first cut falls at frame 81, while the object is out of view (frames 60-99),
    and its paint could not cross; the cut moves back to the last frames that show it whole, and the
    next one, past the gap, to the latest cut by travel. A second label, in view throughout, and an
    object that never comes back do not move the cuts."""
    masks = torch.zeros(200, 3, 24, 64)
    masks[:, 0, 4:12, 8:16] = 1  # always in view
    masks[:60, 1, 10:20, 30:40] = 1  # leaves at frame 60, comes back at frame 100
    masks[100:, 1, 10:20, 30:40] = 1
    masks[:30, 2, 0:4, 0:4] = 1  # leaves at frame 30 for good
    flow = _panning(masks.amax(1) > 0)  # the objects race the other way
    plan = plan_by_motion(flow, _reader(masks), stretch=1.0, overlap=5, longest=150)
    assert [(s.start, s.end) for s in plan] == [(0, 60), (55, 136), (131, 200)]
    # by travel alone (every label in view throughout), or without masks, the cuts stay put
    for only_travel in (masks[:, :1], None):
        assert [(s.start, s.end) for s in plan_by_motion(flow, _reader(only_travel), 1.0, 5, 150)] == [
            (0, 81), (76, 157), (152, 200)
        ]  # fmt: skip
    # never earlier than halfway to the travel limit: an object out of view from frame 35 on (so in
    # no shared frames of a cut from 41 to 81) does not move the cut
    masks[35:100, 1] = 0
    assert plan_by_motion(flow, _reader(masks), 1.0, 5, 150)[0].end == 81


def test_viewer_shows_the_canonicals_of_the_segment_that_holds_the_frame(segmented_run, long_clip):
    """The page of a segmented run: the cross-faded frames over the canonicals of the segment weighted
    most at the frame; the probe maps through that segment's uv; an edit shows that segment's texture."""
    bake = load_bake(segmented_run)
    scene = Scene2D(bake, long_clip.clip.frames)
    x, y = 20, 12
    for t, shown in [(5, 0), (15, 0), (16, 1), (59, 3)]:  # 15 and 16: the overlap of segments 0 and 1
        page = scene.draw(State2D(frame=t, probe=ProbePixel(x, y), width=800, height=600))
        name = bake.segments[shown].name
        assert page.names == [
            "source", "reconstruction", f"layer 0 (background), {name}", f"layer 1 (sprite), {name}"
        ]  # fmt: skip
        local = t - bake.segments[shown].start
        for k, la in enumerate(bake.bakes[shown].layers):
            expected = uv_to_texel(la.uv[local, y, x], tuple(la.texture.shape[1:])).tolist()
            assert page.marks[f"layer {k}"] == pytest.approx(expected, abs=1e-4)
        front = int(bake.bakes[shown].layer_weights(local)[:, y, x].argmax())  # the layer seen there
        col, row = (round(v) for v in page.marks[f"layer {front}"])
        back = scene.draw(State2D(frame=t, probe=ProbeTexel(front, col, row), width=800, height=600))
        assert abs(back.marks["frame"][0] - x) <= 1 and abs(back.marks["frame"][1] - y) <= 1

    textures = [torch.zeros_like(tex) for tex in bake.bakes[1].textures()]
    textures[0][0] = 1.0  # segment 1's background painted red, carried to the others
    edited = bake.spread({1: textures})
    for t, red in [(16, True), (5, False)]:  # segment 1's own texture is all red; segment 0's only partly
        page = scene.draw(State2D(frame=t, edit=edited, edit_label="red", width=800, height=600))
        assert page.names[2] == "edit: red"
        r = page.rects[page.names.index(f"layer 0 (background), {bake.segments[1 if red else 0].name}")]
        panel = page.image[r.y : r.y + r.h, r.x : r.x + r.w].astype(float)
        is_red = (panel[..., 0] > 200) & (panel[..., 1] < 50)
        assert is_red.mean() > 0.95 if red else 0.05 < is_red.mean() < 0.9


def test_viewer_preview_is_the_edit_the_cli_saves(segmented_run, long_clip, tmp_path):
    """What the viewer previews for an uploaded canonical (of the shown segment) or keyframe is what
    `edit --canonical --segment` / `edit --keyframe` then save, and the paint reaches every segment."""
    bake = load_bake(segmented_run)
    hc, wc = bake.bakes[1].textures()[0].shape[1:]
    paint = torch.zeros(4, hc, wc)
    paint[0], paint[3, : hc // 3] = 1.0, 1.0  # a red band over the top of segment 1's background
    write_image(tmp_path / "band.png", paint)
    preview = painted_canonical(bake, 1, 0, read_image(tmp_path / "band.png"))
    edit_canonical(EditTarget(segmented_run.path, name="band"), tmp_path / "band.png", 0, segment=1)
    saved = edited_bake(segmented_run, bake, "band")
    for before, shown, kept in zip(bake.bakes, preview.bakes, saved.bakes, strict=True):
        assert torch.equal(shown.textures()[0], kept.textures()[0])
        assert not torch.equal(shown.textures()[0], before.textures()[0])  # the band reached it

    t = 15  # in the overlap of segments 0 and 1
    write_image(tmp_path / "frame.png", paint_seen(long_clip.truth, t).render([t])[0].clamp(0, 1))
    edited = read_image(tmp_path / "frame.png")
    preview = with_keyframe(bake, t, edited, segmented_run.clip().frames[t])
    edit_keyframe(EditTarget(segmented_run.path, name="frame"), t, tmp_path / "frame.png")
    saved = edited_bake(segmented_run, bake, "frame")
    assert torch.equal(preview.render(), saved.render())
