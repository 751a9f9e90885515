"""The thin CLI: parse arguments, call library functions, print where results went.

Every user error is one line on stderr and exit code 2; nothing here holds logic of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .allocator import keep_freed_memory
from .config import QUALITY_SECONDS
from .errors import (
    EditResumeRefused,
    EditStopped,
    Interrupted,
    ReplaceRefused,
    ResumeNeeded,
    TrainingDiverged,
    UserError,
)
from .executors import EXECUTORS, TasksFailed
from .files import RESUME_FIX, CorruptFile

if TYPE_CHECKING:  # imported where used: the CLI starts without the edit machinery
    from .edit.commands import EditTarget


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def _port(text: str) -> int:
    """A TCP port number (viser would otherwise try ports past 65535 one after another, forever)."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port; give a number from 1 to 65535")
    return int(text)


def _add_fit_options(p: argparse.ArgumentParser) -> None:
    """The options `fit` and `fit-many` share: method, config, clip shape, device."""
    p.add_argument(
        "--method",
        help="codef (default; one deformed canonical image per mask group), atlas (layered atlas: "
        "a background and one foreground layer per mask label, learned alpha, shading residual) or "
        "portrait (Gaussians on a tracked body model; tracks the face and segments the person itself)",
    )
    p.add_argument("--preset", help="the method's config preset name or a YAML file (default: the method's)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config option, e.g. --set train.steps=2000 (repeatable)",
    )
    p.add_argument("--steps", type=int, help="shorthand for --set train.steps=N")
    p.add_argument(
        "--time-budget",
        type=float,
        help="stop fitting after this many seconds (in all: --resume spends what is left)",
    )
    p.add_argument(
        "--quality",
        choices=list(QUALITY_SECONDS),
        help="fit for a time rather than a step count: draft 2, default 10, best 30 minutes on a 2-core "
        "CPU (the shipped presets' default is 'default'; a faster device takes the same steps sooner)",
    )
    p.add_argument("--max-frames", type=int)
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--size", type=int, help="resize so the short side has this many pixels")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:N")


def _add_executor_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local (default: in this process, one at a time) or ray (one Ray task each; needs .[cluster])",
    )
    p.add_argument(
        "--ray-address",
        metavar="HOST:PORT",
        help="with --executor ray: the running cluster's head (default: $RAY_ADDRESS, else a local instance)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads (and Ray CPUs) per fit; the same number makes local and ray results identical",
    )


def _add_fit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="fit a video into a canonical representation")
    p.add_argument(
        "video",
        nargs="?",
        help="video file, frame folder, or clip folder with frames/ and masks/ (optional with --resume)",
    )
    p.add_argument("-o", "--out", required=True, help="run folder to create (or to continue, with --resume)")
    p.add_argument(
        "--masks", help="folder of mask PNGs, one per frame (a clip folder's masks/ is used by default)"
    )
    _add_fit_options(p)
    p.add_argument("--body", choices=["anny", "smplx"], help="portrait: body model (default anny)")
    p.add_argument("--body-model-dir", help="portrait: folder holding SMPLX_NEUTRAL.npz (with --body smplx)")
    p.add_argument(
        "--tracking",
        help="portrait: tracking of the clip, a canon-edit tracking.json or PortraitGen's smplx_track.pth "
        "(default: track the detected face landmarks)",
    )
    p.add_argument(
        "--detector-python",
        help="portrait: the Python interpreter that has mediapipe (default $CANON_EDIT_DETECTOR_PYTHON)",
    )
    p.add_argument(
        "--fps",
        type=float,
        help="frame rate of a frame folder (default: its fps.txt, else 30); overrides a video's",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint, up to its steps and time budget in all "
        "(may change --time-budget, --steps, --set train.* and learning rates)",
    )
    p.add_argument(
        "--force", action="store_true", help="replace --out if it holds a canon-edit run (and nothing else)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--segment-frames",
        type=int,
        metavar="N",
        help="a long clip: fit it as segments of at most N frames, each with its own canonical (2D methods)",
    )
    p.add_argument(
        "--segments",
        choices=["auto"],
        help="a long clip: cut segments where the camera has travelled a frame's size (at most 200 "
        "frames), moved earlier to where the shared frames show the masked objects",
    )
    p.add_argument(
        "--overlap",
        type=int,
        metavar="K",
        help="with --segment-frames: frames neighbours share, cross-faded (default N/10, at least 2)",
    )
    _add_executor_flags(p)


def _add_fit_many(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit-many", help="fit several clips, each into RUNS/<clip name>, locally or on Ray")
    p.add_argument("clips", nargs="+", metavar="CLIP", help="video files, frame folders or clip folders")
    p.add_argument("-o", "--out", required=True, metavar="RUNS", help="folder of the runs (one per clip)")
    _add_fit_options(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip the runs that are done, continue those with checkpoints, start the others",
    )
    p.add_argument(
        "--force", action="store_true", help="replace runs already in RUNS (canon-edit runs, nothing else)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_executor_flags(p)


def _add_edit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("edit", help="edit the canonical asset of a finished run and re-render every frame")
    p.add_argument("run")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--canonical", help="edited canonical image (RGB replaces, RGBA composites)")
    src.add_argument("--keyframe", type=int, help="index of the frame you edited (use with --image)")
    src.add_argument("--prompt", help="text prompt for a diffusion edit (img2img, sds, dds)")
    src.add_argument("--instruction", help="instruction for an InstructPix2Pix edit (mode ip2p)")
    src.add_argument(
        "--appearance",
        help="portrait: a reference image whose colours (mean and covariance) the person takes",
    )
    p.add_argument("--image", help="the edited frame, with --keyframe")
    p.add_argument(
        "--change-mask", help="with --keyframe: PNG of the pixels to lift (default: those that differ)"
    )
    p.add_argument("--layer", type=int, default=0, help="layer to edit with --canonical (0 = background)")
    p.add_argument(
        "--segment",
        type=int,
        help="with --canonical on a segmented run: the segment whose canonical you painted",
    )
    p.add_argument("--from-edit", help="start from the textures of an earlier edit")
    p.add_argument("--name", help="edit folder name under RUN/edits/ (default: derived from the kind)")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace the existing edit called --name (a stopped one is started over)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue a stopped sds/dds (or portrait ip2p) edit from its checkpoint: the same command",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--mode", help="diffusion edit mode: img2img, ip2p, sds, dds (a portrait: ip2p, sds, dds)")
    p.add_argument("--model", help="local folder or hub id of the diffusion model")
    p.add_argument(
        "--allow-download",
        action="store_true",
        help="fetch a hub model that is not in the local cache (default: never download)",
    )
    p.add_argument("--controlnet", help="local folder or hub id of a ControlNet (img2img)")
    p.add_argument("--source-prompt", default="", help="dds: prompt describing the unedited video")
    p.add_argument("--layers", help="diffusion edits: comma-separated layers to edit (default: all)")
    p.add_argument("--mask", help="diffusion edits: PNG in texture space; only white pixels may change")
    p.add_argument(
        "--preset", help="edit preset (img2img, ip2p, sds, dds) or a YAML file (default: the mode's)"
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")


def _add_render(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("render", help="render the reconstruction or an edit to a video or PNG")
    p.add_argument("run")
    p.add_argument(
        "-o", "--out", required=True, help=".mp4 for a video, .png for one frame (--frame), or a folder"
    )
    p.add_argument("--edit", help="render this edit instead of the reconstruction")
    p.add_argument(
        "--force", action="store_true", help="replace an output an earlier canon-edit render wrote there"
    )
    p.add_argument("--compare", action="store_true", help="source and result side by side")
    p.add_argument("--frame", type=int, help="write only this frame as a PNG (e.g. to edit it)")
    p.add_argument("--source", action="store_true", help="with --frame: the source frame, not the render")
    p.add_argument(
        "--orbit",
        type=float,
        metavar="DEG",
        help="portrait: swing the camera around the head by ±DEG (yaw, and pitch half as far) over the clip",
    )
    p.add_argument(
        "--view", metavar="YAW,PITCH", help="portrait: render from the camera turned by YAW,PITCH degrees"
    )
    p.add_argument("--crf", type=int, help="a video's x264 CRF: lower is larger and closer (default 16)")
    p.add_argument("--x264-preset", help="a video's x264 preset: slower is smaller (default veryfast)")


def _add_edit_target(p: argparse.ArgumentParser, kind: str) -> None:
    p.add_argument("run", help="a finished portrait run")
    p.add_argument("--name", help=f"edit folder name under RUN/edits/ (default: {kind}, {kind}_2, ...)")
    p.add_argument("--force", action="store_true", help="replace the existing edit called --name")
    p.add_argument("--from-edit", help="start from an earlier edit of the run")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_relight(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "relight",
        help="portrait: relight the avatar (weight-free SH shading: the clip's light is fitted and replaced)",
    )
    _add_edit_target(p, "relight")
    light = p.add_mutually_exclusive_group(required=True)
    light.add_argument("--preset", help="key-left, key-right, top, rim, sunset or overcast")
    light.add_argument(
        "--azimuth",
        type=float,
        help="a directional light: degrees, 0 = from the camera, 90 = from the image's right",
    )
    light.add_argument(
        "--envmap", help="an equirectangular environment map (PNG, JPG, HDR, EXR), as the subject sees it"
    )
    light.add_argument(
        "--iclight",
        help="IC-Light's offsets (.safetensors): relight by diffusion with --prompt (needs --model)",
    )
    p.add_argument("--elevation", type=float, help="with --azimuth: degrees above the horizon")
    p.add_argument("--color", help="with --azimuth: the light's colour as R,G,B (e.g. 1,0.8,0.6)")
    p.add_argument("--ambient", type=float, help="with --azimuth: ambient share (default 0.3)")
    p.add_argument("--intensity", type=float, help="brightness of a face-on surface (default 1: the fit's)")
    p.add_argument(
        "--rotate-light",
        type=float,
        metavar="DEG",
        help="turn the light around the head by DEG over the clip",
    )
    p.add_argument(
        "--from-avatar",
        action="store_true",
        help="render the relit video from the avatar (default: relight the source frames themselves, "
        "keeping their detail; the avatar serves novel views)",
    )
    p.add_argument("--prompt", help="with --iclight: the light in words, e.g. 'warm sunset light'")
    p.add_argument(
        "--direction", help="with --iclight: where the light comes from: left, right, top, bottom, none"
    )
    p.add_argument("--model", help="with --iclight: the SD-1.5 base, a local folder or cached hub id")
    p.add_argument(
        "--allow-download", action="store_true", help="with --iclight: fetch an uncached hub model"
    )
    p.add_argument("--device", help="with --iclight: auto, cpu, cuda:N")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the stopped relight (--iclight, or the albedo refit) of the same command",
    )


def _add_stylize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stylize",
        help="portrait: give the avatar a style image's colours and texture, or an instruction's look",
    )
    _add_edit_target(p, "stylize")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--style", help="the style image (its colours, then its texture)")
    src.add_argument(
        "--instruction", help="an InstructPix2Pix instruction (iterative dataset update; needs --model)"
    )
    p.add_argument("--mode", help="with --style: colour, texture (default; weight-free) or vgg (needs --vgg)")
    p.add_argument(
        "--vgg", help="a local torchvision VGG-16/19 state dict (.pth/.safetensors): ARF's feature matching"
    )
    p.add_argument("--model", help="with --instruction: a local folder or cached hub id of InstructPix2Pix")
    p.add_argument("--allow-download", action="store_true", help="fetch a hub model that is not cached")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the stopped stylization (texture, vgg, --instruction) of the same command",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")


def _add_view(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("view", help="open a run (finished or being fitted) in the browser viewer")
    p.add_argument("run")
    p.add_argument("--port", type=_port, default=8080, help="port to listen on (default 8080)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="canon-edit",
        description="Edit a video by editing one canonical image and re-rendering it to every frame.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    d = sub.add_parser("demo", help="fit and edit the embedded procedural clip")
    d.add_argument("-o", "--out", help="output folder (default canon-edit-demo, or canon-edit-portrait-demo)")
    d.add_argument(
        "--portrait",
        action="store_true",
        help="fit, relight and stylise a procedural portrait instead (needs the portrait extra)",
    )
    d.add_argument("--force", action="store_true", help="replace an output folder an earlier demo wrote")
    d.add_argument("--quick", action="store_true", help="a short fit (about a minute): checks the install")
    d.add_argument("--quiet", action="store_true")
    _add_fit(sub)
    _add_fit_many(sub)
    _add_edit(sub)
    _add_render(sub)
    _add_relight(sub)
    _add_stylize(sub)
    _add_view(sub)
    e = sub.add_parser("eval", help="print PSNR, SSIM and warping error of a run or an edit as JSON")
    e.add_argument("run")
    e.add_argument("--edit")
    return parser


def _fit_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """--set, then its shorthands --steps, --time-budget and --quality."""
    from .config import deep_merge, parse_overrides

    train = {k: v for k, v in (("steps", args.steps), ("time_budget", args.time_budget)) if v is not None}
    if args.quality is not None:
        if train:
            raise UserError("--quality sets the steps and time budget; give it or --steps/--time-budget")
        train["quality"] = args.quality
    overrides = parse_overrides(args.overrides)
    return deep_merge(overrides, {"train": train}) if train else overrides


def _cmd_fit(args: argparse.Namespace) -> None:
    from .config import deep_merge
    from .executors import check_executor
    from .fitting import ClipOptions, fit_video, fps_origin, resume_fit

    portrait = {"body": args.body, "body_model_dir": args.body_model_dir, "tracking": args.tracking}
    portrait = {k: v for k, v in portrait.items() if v is not None}
    if (portrait or args.detector_python) and (args.method or "codef") != "portrait" and not args.resume:
        raise UserError(
            "--body, --body-model-dir, --tracking and --detector-python apply to --method portrait"
        )
    if args.detector_python:
        os.environ["CANON_EDIT_DETECTOR_PYTHON"] = args.detector_python
    overrides = deep_merge(_fit_overrides(args), portrait)
    options = None
    if args.video is not None:
        options = ClipOptions(
            source=args.video,
            masks=args.masks,
            max_frames=args.max_frames,
            stride=args.stride,
            size=args.size,
            fps=args.fps,
        )
    common = {"overrides": overrides or None, "device": args.device, "show_progress": not args.quiet}
    clip_flags = {
        "--masks": args.masks,
        "--max-frames": args.max_frames,
        "--size": args.size,
        "--fps": args.fps,
    }
    given = [flag for flag, value in clip_flags.items() if value is not None] + (
        ["--stride"] * (args.stride != 1)
    )
    if args.resume and options is None and given:
        raise UserError(
            f"{given[0]} shapes the clip, which a resumed fit keeps; drop it (or fit a new folder)"
        )
    executor = {"executor": args.executor, "address": args.ray_address, "threads": args.threads}
    segmented = args.segment_frames is not None or args.segments is not None
    if args.segment_frames is not None and args.segments is not None:
        raise UserError(
            "--segment-frames N fixes the segments' length and --segments auto chooses it; give one"
        )
    if args.overlap is not None and not segmented:
        raise UserError(
            "--overlap goes with --segment-frames N or --segments auto; add one, or drop --overlap"
        )
    if not segmented and not args.resume and (args.executor != "local" or args.ray_address):
        raise UserError(
            "--executor ray runs the segments of --segment-frames (or the clips of fit-many) as tasks; "
            "a single fit runs here: drop --executor/--ray-address"
        )
    check_executor(args.executor, args.ray_address, args.threads)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    if args.resume:
        if segmented:
            raise UserError("a resumed fit keeps its segments; drop --segment-frames/--segments/--overlap")
        run = resume_fit(
            args.out, method=args.method, preset=args.preset, source=options, **common, **executor
        )
    elif options is None:
        raise UserError("give the video to fit (or --resume to continue the run in --out)")
    elif segmented:
        from .segmented_fit import fit_segmented_video

        run = fit_segmented_video(
            options, args.out, args.method or "codef", length=args.segment_frames, overlap=args.overlap,
            preset=args.preset, force=args.force, **common, **executor,
        )  # fmt: skip
    else:
        run = fit_video(
            options, args.out, args.method or "codef", preset=args.preset, force=args.force, **common
        )
    info = run.info()
    origin = fps_origin(options) if options is not None and not args.resume else "the run's"
    print(json.dumps(json.loads(run.metrics.read_text())))
    print(
        f"clip: {info['frames']} frames of {info['width']}x{info['height']} at {info['fps']:g} fps ({origin})"
    )
    print(
        f"run: {run.path}\ncanonical: {run.canonical}\nreconstruction: {run.renders / 'reconstruction.mp4'}"
    )


def _cmd_fit_many(args: argparse.Namespace) -> None:
    from .fit_many import fit_many
    from .run import RunFolder

    result = fit_many(
        args.clips,
        args.out,
        method=args.method or "codef",
        preset=args.preset,
        overrides=_fit_overrides(args) or None,
        max_frames=args.max_frames,
        stride=args.stride,
        size=args.size,
        executor=args.executor,
        address=args.ray_address,
        threads=args.threads,
        resume=args.resume,
        force=args.force,
        device=args.device,
        show_progress=not args.quiet,
    )
    for run in result.runs.values():
        print(json.dumps(json.loads(RunFolder(run).metrics.read_text())))
    print(f"fit-many: {len(result.runs)} runs in {args.out} ({len(result.skipped)} skipped)")


def _edit_target(args: argparse.Namespace) -> EditTarget:
    """The `EditTarget` of an edit, relight or stylize command's flags."""
    from .edit.commands import EditTarget

    return EditTarget(
        run=args.run, name=args.name, replace=args.force, from_edit=args.from_edit, resume=args.resume,
        progress=not args.quiet,
    )  # fmt: skip


def _cmd_edit(args: argparse.Namespace) -> None:
    from .config import parse_overrides
    from .edit.commands import edit_appearance, edit_canonical, edit_diffusion, edit_keyframe

    target = _edit_target(args)
    if args.force and not args.name:
        raise UserError("--force replaces the edit named by --name; give --name")
    if args.resume and not (args.prompt or args.instruction):
        raise UserError("--resume continues a stopped sds, dds or portrait ip2p edit: repeat that command")
    if args.canonical:
        folder = edit_canonical(target, args.canonical, args.layer, args.segment)
    elif args.appearance:
        folder = edit_appearance(target, args.appearance)
    elif args.keyframe is not None:
        if not args.image:
            raise UserError("--keyframe needs --image EDITED_FRAME.png (the frame you edited)")
        overrides = parse_overrides(args.overrides)
        folder = edit_keyframe(target, args.keyframe, args.image, args.change_mask, overrides or None)
    else:
        from .guidance.edit import DiffusionRequest, parse_layers

        request = DiffusionRequest(
            mode=args.mode,
            prompt=args.prompt,
            instruction=args.instruction,
            model=args.model,
            controlnet=args.controlnet,
            source_prompt=args.source_prompt or "",
            layers=parse_layers(args.layers),
            mask=args.mask,
            preset=args.preset,
            overrides=parse_overrides(args.overrides),
            seed=args.seed,
            device=args.device,
            allow_download=args.allow_download,
        )
        folder = edit_diffusion(target, request)
    print(f"edit: {folder}\nvideo: {folder / 'video.mp4'}")


def _cmd_relight(args: argparse.Namespace) -> None:
    from .config import deep_merge, parse_overrides
    from .edit.commands import edit_relight

    if args.force and not args.name:
        raise UserError("--force replaces the edit named by --name; give --name")
    if args.azimuth is None and any(v is not None for v in (args.elevation, args.color, args.ambient)):
        raise UserError("--elevation, --color and --ambient shape a directional light; add --azimuth DEG")
    diffusion = (args.prompt, args.direction, args.model, args.device, args.allow_download or None)
    if not args.iclight and any(v is not None for v in diffusion):
        raise UserError("--prompt, --direction, --model, --device and --allow-download are for --iclight")
    options = parse_overrides(args.overrides)
    given = {
        "preset": args.preset,
        "azimuth": args.azimuth,
        "elevation": args.elevation,
        "ambient": args.ambient,
        "intensity": args.intensity,
        "envmap": args.envmap,
        "rotate": args.rotate_light,
        "footage": False if args.from_avatar else None,
        "iclight": args.iclight,
        "prompt": args.prompt,
        "model": args.model,
        "device": args.device,
        "allow_download": args.allow_download or None,
    }
    options |= {k: v for k, v in given.items() if v is not None}
    if args.direction is not None:
        options = deep_merge(options, {"ic": {"direction": args.direction}})
    if args.color is not None:
        try:
            options["colour"] = [float(v) for v in args.color.split(",")]
        except ValueError:
            raise UserError(f"--color expects R,G,B numbers (e.g. 1,0.8,0.6), got '{args.color}'") from None
    target = _edit_target(args)
    folder = edit_relight(target, options)
    print(f"edit: {folder}\nvideo: {folder / 'video.mp4'}")


def _cmd_stylize(args: argparse.Namespace) -> None:
    from .config import parse_overrides
    from .edit.commands import edit_diffusion, edit_stylize

    if args.force and not args.name:
        raise UserError("--force replaces the edit named by --name; give --name")
    options = parse_overrides(args.overrides)
    target = _edit_target(args)
    if args.instruction:
        if args.mode or args.vgg:
            raise UserError("--mode and --vgg apply to --style; an instruction edits through InstructPix2Pix")
        from .guidance.edit import DiffusionRequest

        request = DiffusionRequest(
            mode="ip2p",
            instruction=args.instruction,
            model=args.model,
            overrides=options,
            seed=args.seed,
            device=args.device,
            allow_download=args.allow_download,
        )
        folder = edit_diffusion(target, request)
    else:
        if args.model:
            raise UserError("--model applies to --instruction; a style image needs no model")
        if args.mode:
            options["mode"] = args.mode
        folder = edit_stylize(target, args.style, options or None, args.vgg)
    print(f"edit: {folder}\nvideo: {folder / 'video.mp4'}")


def _cmd_render(args: argparse.Namespace) -> None:
    from .edit.commands import render_run

    if args.source and args.frame is None:
        raise UserError("--source writes one source frame: add --frame N")
    view = None
    if args.view is not None:
        try:
            yaw, pitch = (float(v) for v in args.view.split(","))
        except ValueError:
            raise UserError(f"--view expects YAW,PITCH in degrees (e.g. 30,0), got '{args.view}'") from None
        view = (yaw, pitch)
    from .video import X264

    given = {"crf": args.crf, "preset": args.x264_preset}
    x264 = X264(**{k: v for k, v in given.items() if v is not None})
    out = render_run(
        args.run,
        args.out,
        edit=args.edit,
        compare=args.compare,
        frame=args.frame,
        source=args.source,
        orbit=args.orbit,
        view=view,
        force=args.force,
        x264=x264,
    )
    print(f"wrote {out}")


def _cmd_eval(args: argparse.Namespace) -> None:
    from .edit.commands import evaluate_run

    print(json.dumps(evaluate_run(args.run, edit=args.edit)))


def _cmd_demo(args: argparse.Namespace) -> None:
    progress = not args.quiet
    if args.portrait:
        from .representation import get_representation

        out = Path(args.out or "canon-edit-portrait-demo")
        get_representation("portrait").demo(out, force=args.force, quick=args.quick, show_progress=progress)
        return
    from .demo import run_demo

    run_demo(Path(args.out or "canon-edit-demo"), force=args.force, quick=args.quick, show_progress=progress)


def _cmd_view(args: argparse.Namespace) -> None:
    from .viewer.app import serve

    serve(args.run, host=args.host, port=args.port)


COMMANDS = {
    "fit": _cmd_fit,
    "fit-many": _cmd_fit_many,
    "edit": _cmd_edit,
    "render": _cmd_render,
    "eval": _cmd_eval,
    "demo": _cmd_demo,
    "view": _cmd_view,
    "relight": _cmd_relight,
    "stylize": _cmd_stylize,
}


# the CLI's words for what a library error asks the user to do
REPLACE_WITH = {"output folder": "-o", "output path": "-o", "edit name": "--name"}


def _resume(run: Path) -> str:
    return f"'canon-edit fit --resume -o {run}'"


def phrase(e: UserError) -> str:
    """The error as one line, its fix worded as flags and commands (the library's words otherwise)."""
    if isinstance(e, TrainingDiverged):
        return (
            f"{e.problem}; lower the learning rates (--set lr_...=VALUE) and continue with {_resume(e.run)}"
        )
    if isinstance(e, Interrupted):
        return f"{e.problem}; continue with {_resume(e.run)}"
    if isinstance(e, ResumeNeeded):
        return f"{e.problem}; finish or rebuild it with {_resume(e.run)}"
    if isinstance(e, EditStopped):
        restart = f", or start it over with --name {e.name} --force" if e.can_restart else ""
        return f"{e.problem}; continue it with the same command and --resume{restart}"
    if isinstance(e, EditResumeRefused):
        return (
            f"{e.problem}; resume it with the command that started it, or start it over with "
            f"--name {e.name} --force"
        )
    if isinstance(e, TasksFailed):
        return f"{e.problem}; {e.kept}: run the same command with --resume to finish the rest"
    if isinstance(e, ReplaceRefused):
        return (
            f"{e.problem}; pass --force to replace it, or choose another {REPLACE_WITH.get(e.what, e.what)}"
        )
    if isinstance(e, CorruptFile) and e.fix == RESUME_FIX:
        run = next((p for p in e.path.parents if (p / "run.json").is_file()), e.path.parent)
        return f"{e.path} is corrupt ({e.reason}); rebuild it with {_resume(run)}"
    return str(e)


def out_of_memory(error: BaseException) -> bool:
    """Python's MemoryError, torch's CUDA OutOfMemoryError, or the CPU allocator's refusal."""
    return (
        isinstance(error, MemoryError)
        or type(error).__name__ == "OutOfMemoryError"
        or "can't allocate memory" in str(error)
    )


def memory_advice(command: str, error: BaseException) -> str:
    """One line for a command that ran out of memory: which memory, and what holds less at once."""
    where = "GPU" if type(error).__name__ == "OutOfMemoryError" else "CPU"
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:120]
    fix = (
        "fit it as segments (--segment-frames N) or at a smaller --size, into a new folder or with --force"
        if command in ("fit", "fit-many")
        else "free memory (other programs) or run on a device with more"
    )
    return f"{command} ran out of {where} memory ({first}); {fix}; nothing half-written was left"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    try:
        COMMANDS[args.command](args)
    except UserError as e:
        sys.stderr.write(f"canon-edit: error: {phrase(e)}\n")
        return 2
    except OSError as e:  # the system refused a read or write (disk full, permissions): say which
        where = f" ({e.filename})" if e.filename else ""
        sys.stderr.write(f"canon-edit: error: {e.strerror or e}{where}; free space or fix the permissions\n")
        return 2
    except (MemoryError, RuntimeError) as e:
        if not out_of_memory(e):
            raise
        sys.stderr.write(f"canon-edit: error: {memory_advice(args.command, e)}\n")
        return 2
    except KeyboardInterrupt:  # outputs are written atomically: what was stopped left nothing behind
        sys.stderr.write(f"\ncanon-edit: {args.command} stopped (Ctrl-C); nothing half-written was left\n")
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
