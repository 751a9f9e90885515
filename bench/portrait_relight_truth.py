"""Relighting and stylization against known answers on the procedural portrait; one JSON line.

    python bench/portrait_relight_truth.py [--steps 300] [--shading-blur 0.01]

Relighting: a Lambertian procedural portrait (12 frames of 64², known albedo, normals and light
key-left, exposed at EXPOSURE so no pixel clips) is fitted with its true tracking, relit to
key-right with `albedo` ratio and refit (the avatar's render) and with the footage relit (tracked
views: the source frames × new ÷ fitted shading), and compared inside the person with its true render under
key-right, every render composited over the clip's true background. Also reported: the unrelit fit
against that truth; the identity (relit under its own fitted light) against the source and against
the fit; the fitted light's error (shading over camera-facing normals, best scale per channel); the
renderer's ceiling (true albedo and true lights) and the same with the true light but the albedo
refitted from the fit.

Stylization: the true portrait (8 frames of 48²) given a striped style's colours only, then colours
and texture (100 steps, 64² crops); the random-filter Gram distance to the style and the content SSIM
of luminance against the original, over three frames.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch

from canon_edit.fitting import fit_clip
from canon_edit.metrics import psnr, ssim
from canon_edit.run import versions
from canon_edit_representations.portrait.avatar import EditableAvatar
from canon_edit_representations.portrait.body import SMPLXBody
from canon_edit_representations.portrait.demo import EXPOSURE, striped
from canon_edit_representations.portrait.edit_config import RelightConfig
from canon_edit_representations.portrait.editing import EditablePortrait
from canon_edit_representations.portrait.lighting import preset_light, shading_error
from canon_edit_representations.portrait.procedural import make_portrait_clip, truth_asset
from canon_edit_representations.portrait.relight import refit_albedo
from canon_edit_representations.portrait.shading import Relighting
from canon_edit_representations.portrait.stylize import gram_distance, person_crops
from canon_edit_representations.portrait.synthetic_body import write_synthetic_smplx


def relighting(body: SMPLXBody, model_dir: Path, folder: Path, steps: int, blur: float) -> dict:
    a, b = preset_light("key-left") * EXPOSURE, preset_light("key-right") * EXPOSURE
    clip_a = make_portrait_clip(body, frames=12, size=64, light=a)
    clip_b = make_portrait_clip(body, frames=12, size=64, light=b)
    clip_a.tracking.save(folder / "tracking.json")
    overrides = {
        "body": "smplx", "body_model_dir": str(model_dir), "tracking": str(folder / "tracking.json"),
        "texel_resolution": 96, "train": {"steps": steps, "warmup_steps": 10},
    }  # fmt: skip
    run = fit_clip(clip_a.clip, folder / "run", "portrait", overrides=overrides, show_progress=False)
    asset = EditablePortrait.load(run.canonical)
    mask, behind = clip_a.clip.masks[:, :1], clip_a.background
    fitted = asset.render(background=behind)

    def against(bake: EditablePortrait, clip) -> float:
        return round(psnr(bake.render(background=behind), clip.clip.frames, mask), 2)

    out: dict = {"fit_psnr": round(psnr(fitted, clip_a.clip.frames, mask), 2)}
    out["unrelit_vs_truth_b"] = round(psnr(fitted, clip_b.clip.frames, mask), 2)
    modes = {
        "ratio": {"albedo": "ratio", "footage": False},
        "refit": {"albedo": "refit", "footage": False},
        "footage": {"albedo": "ratio", "footage": True},
    }
    for mode, options in modes.items():
        start = time.perf_counter()
        relit, _ = asset.relight({"preset": "key-right", "shading_blur": blur, **options}, progress=False)
        lights = relit.relighting
        same = dataclasses.replace(relit, relighting=dataclasses.replace(lights, target=lights.fitted))
        out[mode] = {
            "seconds": round(time.perf_counter() - start, 1),
            "relit_vs_truth_b": against(relit, clip_b),
            "identity_vs_source": against(same, clip_a),
            "identity_vs_fit": round(psnr(same.render(background=behind), fitted, mask), 2),
            "light_error": round(shading_error(lights.fitted, a), 4),
        }
    true_albedo = truth_asset(clip_a, body, str(model_dir))
    out["ceiling_true_albedo_and_light"] = against(
        dataclasses.replace(true_albedo, relighting=Relighting(a, b, 0.0, True, blur)), clip_b
    )
    avatar = EditableAvatar(asset)
    refit_albedo(avatar, asset.surface_probe(), a, RelightConfig(preset="top", shading_blur=blur), False)
    out["true_light_fit_albedo"] = against(
        dataclasses.replace(avatar.to_asset(), relighting=Relighting(a, b, 0.0, True, blur)), clip_b
    )
    return out


def stylization(body: SMPLXBody, model_dir: Path) -> dict:
    clip = make_portrait_clip(body, frames=8, size=48)
    asset = truth_asset(clip, body, str(model_dir))
    style, frames = striped(96), [0, 3, 6]
    texture = {"mode": "texture", "steps": 100, "crop": 64}
    results = {
        "original": asset,
        "colour": asset.stylize(style, {"mode": "colour"}, None, progress=False)[0],
        "texture": asset.stylize(style, texture, None, progress=False)[0],
    }

    def crops(bake: EditablePortrait) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            pairs = [person_crops(EditableAvatar(bake), t, 64) for t in frames]
        return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])

    original, mask = crops(asset)
    grey = lambda x: x.mean(1, keepdim=True).expand(-1, 3, -1, -1)  # noqa: E731
    out = {}
    for name, bake in results.items():
        images, _ = crops(bake)
        out[name] = {
            "gram_distance": round(gram_distance(images, mask, style), 4),
            "content_ssim": round(ssim(grey(images), grey(original), mask), 3),
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300, help="fit steps of the Lambertian portrait")
    p.add_argument("--shading-blur", type=float, default=0.01, help="RelightConfig.shading_blur")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="canon-edit-bench-") as tmp:
        folder = Path(tmp)
        write_synthetic_smplx(folder / "smplx")
        body = SMPLXBody(folder / "smplx")
        line = {
            "bench": "portrait_relight_truth",
            "shading_blur": args.shading_blur,
            "relighting": relighting(body, folder / "smplx", folder, args.steps, args.shading_blur),
            "stylization": stylization(body, folder / "smplx"),
            "threads": torch.get_num_threads(),
            **versions(),
        }
    print(json.dumps(line))
    return line


if __name__ == "__main__":
    main()
