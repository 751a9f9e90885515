"""Relighting a fitted portrait run: seconds, identity, warping error, a before/after strip and a light orbit.

    python bench/portrait_relight.py --run RUN [--strip bench/portrait_relight_d13.png]

RUN is a finished portrait run (e.g. of ../shared/data/portrait_lp_d13). Through the library's
`canon-edit relight` function it writes RUN/edits/bench_relight_PRESET for each of `--presets` and
RUN/edits/bench_light_orbit (key-left turned 360° around the head over the clip), replacing earlier
bench edits of those names and nothing else. Per edit: seconds, the edited video's warping error
against the source's own and against the reconstruction's, and (for the first preset) the identity:
the same edit re-rendered under its own fitted light, PSNR against the source inside the person, next
to the fit's. The strip shows, per column frame, source / reconstruction / each preset. One JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from canon_edit.edit.commands import EditTarget, edit_relight, edited_bake
from canon_edit.evaluate import evaluate_video
from canon_edit.metrics import psnr
from canon_edit.representation import load_bake
from canon_edit.run import RunFolder, versions
from canon_edit.video import write_image


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--presets", default="key-left,sunset")
    p.add_argument("--strip", help="write the before/after strip here (PNG)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    from canon_edit.config import parse_overrides

    run = RunFolder.open(args.run)
    clip, base = run.clip(), load_bake(run)
    recon = base.render().clamp(0, 1)
    person = (base.render_person(list(range(base.T)))[1] > 0.5).float()
    recon_figures = json.loads(run.metrics.read_text())
    extra = parse_overrides(args.overrides)
    results: dict[str, dict] = {}
    videos = {}
    jobs = [(f"bench_relight_{name}", {"preset": name}) for name in args.presets.split(",")]
    jobs.append(("bench_light_orbit", {"preset": "key-left", "rotate": 360.0}))
    for name, options in jobs:
        start = time.perf_counter()
        folder = edit_relight(EditTarget(run=run.path, name=name, replace=True), {**options, **extra})
        seconds = time.perf_counter() - start
        relit = edited_bake(run, base, folder.name)
        video = relit.render().clamp(0, 1)
        videos[name] = video
        figures = evaluate_video(run, clip, video, edit=folder.name)
        meta = json.loads((folder / "edit.json").read_text())
        results[name] = {
            "seconds": round(seconds, 1),
            "warp_error": figures["warp_error"],
            "warp_vs_source": round(figures["warp_error"] / figures["source_warp_error"], 2),
            "warp_vs_reconstruction": round(figures["warp_error"] / recon_figures["warp_error"], 3),
            "light_fit_l1": meta["light_fit_l1"],
            "albedo_refit_loss": meta.get("albedo_refit_loss"),
        }
        if len(results) == 1:
            lights = relit.relighting
            same = dataclasses.replace(relit, relighting=dataclasses.replace(lights, target=lights.fitted))
            identity = same.render().clamp(0, 1)
            results[name]["identity_person_psnr"] = round(psnr(identity, clip.frames, person), 3)
            results[name]["fit_person_psnr"] = round(psnr(recon, clip.frames, person), 3)
    if args.strip:
        columns = torch.linspace(0, base.T - 1, 4).round().long().tolist()
        rows = [clip.frames, recon, *(videos[name] for name, _ in jobs[:-1])]
        write_image(args.strip, torch.cat([torch.cat([r[t] for t in columns], 2) for r in rows], 1))
    line = {
        "bench": "portrait_relight",
        "run": str(run.path),
        "frames": base.T,
        "size": [base.tracking.width, base.tracking.height],
        "source_warp_error": recon_figures.get("source_warp_error"),
        "reconstruction_warp_error": recon_figures.get("warp_error"),
        "edits": results,
        "threads": torch.get_num_threads(),
        **versions(),
    }
    print(json.dumps(line))
    return line


if __name__ == "__main__":
    main()
