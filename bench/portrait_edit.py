"""Portrait edits on a fitted portrait run: seconds per edit and the edited video's warping error.

    python bench/portrait_edit.py --run RUN [--modes appearance,keyframe,ip2p,sds,dds]

RUN is a finished portrait run (e.g. the one `bench/fit_quality.py --method portrait` fits from
../shared/data/portrait_lp_d13). Each mode runs through the library's `canon-edit edit` functions
and writes RUN/edits/bench_MODE (replacing an earlier bench edit of that name, nothing else):

- appearance: the colours of a sepia-toned copy of frame 0's person (weight-free);
- keyframe: a magenta mark painted on the cheek of frame 20, lifted; its spread to other frames is
  reported as the mark's mean colour shift where the tracked cheek is in frame 150;
- ip2p / sds / dds: with TINY RANDOM diffusion models built in code (tests/tiny_diffusion.py), so the
  figures are the loops' own cost on this machine, not what real weights would produce. On a GPU,
  pass --ip2p-model / --sd-model folders to use real ones.

Per mode: seconds, the edited video's warping error against the source's own, the Gaussians' shift,
and PSNR against the unedited reconstruction inside and outside the person. One JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from canon_edit.edit.commands import EditTarget, edit_appearance, edit_diffusion, edit_keyframe, edited_bake
from canon_edit.evaluate import evaluate_video
from canon_edit.guidance.edit import DiffusionRequest
from canon_edit.metrics import psnr
from canon_edit.representation import load_bake
from canon_edit.run import RunFolder, versions
from canon_edit.video import write_image

KEYFRAME, FAR_FRAME = 20, 150


def cheek(bake, t: int) -> torch.Tensor:
    """Pixel (x, y) of the tracked face's right cheek (image left) in frame t."""
    from canon_edit_representations.portrait.tracking import project_points

    body, tr = bake.get_body(), bake.tracking
    vertices = body(tr.pose[t : t + 1], tr.expression[t : t + 1], tr.shape).vertices
    points = project_points(body.landmarks(vertices)[0], tr.viewmat[t], tr.K)
    return points.mean(0) + (points[:, 0].min() - points.mean(0)[0]) * torch.tensor([0.5, 0.0])


def disc(h: int, w: int, centre: torch.Tensor, radius: float) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    return ((((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2).sqrt() - radius) / -1.5).clamp(0, 1)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--modes", default="appearance,keyframe,ip2p,sds,dds")
    p.add_argument("--ip2p-model", help="a local InstructPix2Pix folder (default: a tiny random one)")
    p.add_argument("--sd-model", help="a local Stable Diffusion folder (default: a tiny random one)")
    p.add_argument("--device", default="auto")
    p.add_argument("--idu-steps", type=int, default=600)
    p.add_argument("--sds-steps", type=int, default=400)
    args = p.parse_args(argv)
    run = RunFolder.open(args.run)
    clip, base = run.clip(), load_bake(run)
    recon = base.render().clamp(0, 1)
    person = base.render_person(list(range(base.T)))[1] > 0.5
    scratch_dir = tempfile.TemporaryDirectory(prefix="canon-edit-bench-")  # the tiny models, the paint
    scratch = Path(scratch_dir.name)
    models = {"ip2p": args.ip2p_model, "sd": args.sd_model}
    tiny = [k for k, v in models.items() if v is None]
    if tiny:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from tiny_diffusion import save_tiny_pipeline

        for kind in tiny:
            models[kind] = str(save_tiny_pipeline(scratch / kind, kind))

    def target(mode: str) -> EditTarget:
        return EditTarget(run=run.path, name=f"bench_{mode}", replace=True)

    results: dict[str, dict] = {}
    for mode in args.modes.split(","):
        start = time.perf_counter()
        extra: dict = {}
        if mode == "appearance":
            frame = clip.frames[0]
            sepia = (frame.mean(0, keepdim=True) * torch.tensor([1.1, 0.85, 0.6])[:, None, None]).clamp(0, 1)
            alpha = base.render_person([0])[1][0]
            write_image(scratch / "reference.png", torch.cat([sepia, (alpha > 0.5).float()]))
            folder = edit_appearance(target(mode), scratch / "reference.png")
        elif mode == "keyframe":
            mark = disc(base.tracking.height, base.tracking.width, cheek(base, KEYFRAME), 6.0)
            painted = clip.frames[KEYFRAME] * (1 - mark) + torch.tensor([1.0, 0.0, 1.0])[:, None, None] * mark
            write_image(scratch / "painted.png", painted)
            folder = edit_keyframe(target(mode), KEYFRAME, scratch / "painted.png")
            far = disc(base.tracking.height, base.tracking.width, cheek(base, FAR_FRAME), 4.0)[None] > 0.5
            edited = edited_bake(run, base, folder.name).render([FAR_FRAME])[0]
            extra["far_frame_mark_shift"] = round(
                float((edited - recon[FAR_FRAME]).abs()[far.expand(3, -1, -1)].mean()), 4
            )
        else:
            kind = "ip2p" if mode == "ip2p" else "sd"
            steps = args.idu_steps if mode == "ip2p" else args.sds_steps
            overrides = {"steps": steps}
            if mode == "ip2p" and args.ip2p_model is None:
                overrides["face_resolution"] = 128  # the tiny model's tiles: 512 would only cost time
            request = DiffusionRequest(
                mode=mode,
                instruction="turn the person into a statue" if mode == "ip2p" else None,
                prompt=None if mode == "ip2p" else "a marble statue",
                source_prompt="a person" if mode == "dds" else "",
                model=models[kind],
                overrides=overrides,
                device=args.device,
            )
            folder = edit_diffusion(target(mode), request)
        seconds = time.perf_counter() - start
        meta = json.loads((folder / "edit.json").read_text())
        video = edited_bake(run, base, folder.name).render().clamp(0, 1)
        figures = evaluate_video(run, clip, video, edit=folder.name)
        inside = person.expand_as(video).float()
        results[mode] = {
            "seconds": round(seconds, 1),
            "warp_error": figures["warp_error"],
            "source_warp_error": figures["source_warp_error"],
            "warp_ratio": round(figures["warp_error"] / figures["source_warp_error"], 2),
            "psnr_vs_recon_person": round(psnr(video, recon, inside), 2),
            "psnr_vs_recon_background": round(psnr(video, recon, 1 - inside), 2),
            **{k: meta[k] for k in meta if k.startswith("gaussian_shift")},
            **extra,
        }
    scratch_dir.cleanup()
    recon_figures = json.loads(run.metrics.read_text())
    line = {
        "bench": "portrait_edit",
        "run": str(run.path),
        "frames": base.T,
        "size": [base.tracking.width, base.tracking.height],
        "tiny_models": tiny,
        "reconstruction_warp_error": recon_figures.get("warp_error"),
        "modes": results,
        "threads": torch.get_num_threads(),
        **versions(),
    }
    print(json.dumps(line))
    return line


if __name__ == "__main__":
    main()
