"""What an edit's paint does at the seams of a segmented run, and what `edit` says about it.

    python bench/paint_crossing.py [--frames 600] [--segment-frames 100] [--overlap 10]

No fit: each segment's bake is the procedural long clip's truth in a canonical of its own
(`canon_edit.segment_truth`), so what is measured is the carrying of paint across seams, not the fits.
Frame 10 is painted as a user would (`procedural.paint_seen`) and lifted as `edit --keyframe 10`
lifts it (`SegmentedVideo.lift_keyframe`), for two clips cut by the same plan (`plan_segments`), as
in `bench/long_video.py`:

- `sprite_at_seams`: the sprite's swing timed so it is whole in view in every overlap (the clip
  `bench/long_video.py` fits);
- `sprite_crossing_seams`: the sprite swings every 180 frames, blind to the cuts, so some overlaps
  show only part of it or none.

One JSON line per clip: `notes` (each seam `edit` told about: source and target segment, the shared
frames, the share of the paint that crossed, null where none did, and the first frame past the seam
that shows the layer unpainted) and `edit_psnr` (per segment, PSNR against the true edit on the
sprite's pixels whose surface frame 10 saw; none where a segment shows none of them).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from canon_edit.metrics import psnr
from canon_edit.procedural import make_long_clip, paint_seen, seen_mask
from canon_edit.representation import load_bake
from canon_edit.run import versions
from canon_edit.segment_truth import make_segmented_truth_run
from canon_edit.segments import SegmentedVideo, plan_segments

KEYFRAME = 10


def crossing(name: str, period: int, args: argparse.Namespace, folder: Path) -> dict:
    height, width = 48, 64
    proc = make_long_clip(args.frames, height, width, span=1 + args.frames / 120, period=period)
    run = make_segmented_truth_run(folder / name, proc, args.segment_frames, args.overlap)
    truth_edit = paint_seen(proc.truth, KEYFRAME)
    bake = load_bake(run)
    assert isinstance(bake, SegmentedVideo)
    edited = truth_edit.render([KEYFRAME])[0].clamp(0, 1)
    lifted = bake.lift_keyframe(KEYFRAME, edited, run.clip().frames[KEYFRAME], None, {}, False)[0]
    with torch.no_grad():
        video = lifted.render().clamp(0, 1)
        expected = truth_edit.render().clamp(0, 1)
    sprite = proc.truth.layers[1].alpha.float() > 0.99
    seen = (seen_mask(proc.truth, KEYFRAME) & sprite)[:, None].expand(-1, 3, -1, -1).float()
    edit_psnr: dict[str, float | None] = {}
    for seg in bake.segments:
        part = slice(seg.start, seg.end)
        edit_psnr[seg.name] = (
            round(psnr(video[part], expected[part], seen[part]), 2) if seen[part].any() else None
        )
    notes = [
        {
            "source": s.source,
            "target": s.target,
            "shared": list(s.shared),
            "crossed": None if s.crossed is None else round(s.crossed, 2),
            "unpainted_from": s.returns,
            "message": s.message(),
        }
        for s in lifted.paint_stops
    ]
    return {"bench": "paint_crossing", "clip": name, "period": period, "frames": args.frames,
            "segments": [[s.start, s.end] for s in bake.segments], "notes": notes, "edit_psnr": edit_psnr,
            "versions": versions()}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=600)
    p.add_argument("--segment-frames", type=int, default=100)
    p.add_argument("--overlap", type=int, default=10)
    args = p.parse_args()
    segments = len(plan_segments(args.frames, args.segment_frames, args.overlap))
    at_seams = round(2 * (args.frames - args.overlap) / segments)  # as bench/long_video.py times it
    with tempfile.TemporaryDirectory() as tmp:
        for name, period in (("sprite_at_seams", at_seams), ("sprite_crossing_seams", 180)):
            print(json.dumps(crossing(name, period, args, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
