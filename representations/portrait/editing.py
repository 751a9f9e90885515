"""EditablePortrait: the baked portrait as the core's `EditableBake`, and its novel-view renders.

The core's `canon-edit edit`, `relight`, `render --edit/--orbit/--view` and `eval --edit` reach the
portrait's edits only through these methods. An edit folder holds the edited `gaussians.ply` (rest
pose, the asset's layout), `decoder.safetensors` and, when relit, `lighting.json`; everything else
(tracking, body, background) is the run's.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from canon_edit.atomic import atomic_path
from canon_edit.config import load_config, to_dict
from canon_edit.edit.checkpoint import Checkpoints, EditCheckpoint
from canon_edit.errors import UserError
from canon_edit.files import read_json, read_tensors

from .appearance import transfer_appearance
from .asset import PortraitAsset
from .avatar import EditableAvatar
from .camera import Camera
from .edit_config import IDUConfig, LiftConfig, PortraitDistillConfig, RelightConfig, StylizeConfig
from .gaussians import read_ply, write_ply
from .orbit import head_centre, orbit_angles, turned_camera
from .render import NeuralDecoder, render_frame, render_frames
from .shading import Relighting, render_relit
from .surface import SurfaceProbe
from .tracking import Tracking

PRESETS = "canon_edit_representations.presets"
MODES: dict[str, type] = {"ip2p": IDUConfig, "sds": PortraitDistillConfig, "dds": PortraitDistillConfig}
GAUSSIAN_KEYS = ("tri_id", "bary", "offset", "quats_local", "log_scales", "opacity_logits", "features")


def edit_config(cls: type, preset: str | None, default: str, overrides: dict[str, Any] | None) -> Any:
    return load_config(cls, preset or default, overrides, group="edit", package=PRESETS)


@dataclass
class EditablePortrait(PortraitAsset):
    relighting: Relighting | None = field(default=None, repr=False)  # a relit edit's lights
    # the surface probe relit frames are shaded through, with the tracking and triangles it covers
    _probe: tuple[Tracking, Tensor, SurfaceProbe] | None = field(default=None, repr=False)

    def surface_probe(self) -> SurfaceProbe:
        """The mesh's surface probe (surface.py), built once per tracking and set of triangles."""
        kept, tri_id = self._probe, self.gaussians["tri_id"]
        if kept is None or kept[0] is not self.tracking or not torch.equal(kept[1], tri_id):
            probe = SurfaceProbe.covering(self.get_body(), self.tracking, tri_id)
            self._probe = (self.tracking, tri_id, probe)
        return self._probe[2]

    def frame(
        self,
        t: int,
        camera: Camera,
        background: Tensor,
        decoder: NeuralDecoder | None = None,
        tracked: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Frame t (as posed then) seen from `camera` over `background`, relit when the edit says so.

        `tracked`: `camera` is frame t's tracked camera, so an edit relighting the footage may use it.
        """
        tr, body, decoder = self.tracking, self.get_body(), decoder or self.decoder()
        if self.relighting is not None:
            lit, probe = self.relighting, self.surface_probe()
            footage = self.background[t] if tracked and lit.footage else None
            return render_relit(body, self.gaussians, decoder, tr, t, camera, background, lit, probe, footage)
        g = self.gaussians
        return render_frame(body, g, decoder, tr.pose[t], tr.expression[t], tr.shape, camera, background)

    def render_state(self) -> tuple[Any, ...]:
        return (*super().render_state(), self.relighting)

    @torch.no_grad()
    def render_person(self, frames: list[int]) -> tuple[Tensor, Tensor]:
        if self.relighting is None:
            return super().render_person(frames)
        black, decoder = torch.zeros(3, self.tracking.height, self.tracking.width), self.decoder()
        return render_frames(
            lambda t: self.frame(t, self.tracking.camera(t), black, decoder, tracked=True), frames
        )

    @torch.no_grad()
    def render_view(self, frame: int, camera: Camera) -> Tensor:
        return self.frame(frame, camera, torch.zeros(3, camera.height, camera.width))[0]

    def _edited(self, gaussians: dict[str, Tensor], decoder_state: dict[str, Tensor]) -> EditablePortrait:
        return dataclasses.replace(self, gaussians=gaussians, decoder_state=decoder_state, _person=None)

    def _from(self, avatar: EditableAvatar) -> EditablePortrait:
        edited = avatar.to_asset()
        return self._edited(edited.gaussians, edited.decoder_state)

    def lift_keyframe(
        self,
        frame: int,
        edited: Tensor,
        source: Tensor,
        mask: Tensor | None,
        overrides: dict[str, Any] | None,
        progress: bool,
    ) -> tuple[EditablePortrait, dict[str, Any]]:
        """Paint on frame `frame` lifted into the features of the Gaussians it sees (lift.py).

        `source` is the frame as fitted (the asset's background holds the same pixels).
        """
        from .lift import lift_keyframe

        cfg = edit_config(LiftConfig, None, "portrait_keyframe", overrides)
        avatar = EditableAvatar(self)
        stats = lift_keyframe(avatar, frame, edited, mask, cfg, progress)
        return self._from(avatar), {**stats, "config": to_dict(cfg)}

    def diffusion_edit(
        self, request: Any, progress: bool, checkpoints: Checkpoints | None = None
    ) -> tuple[EditablePortrait, dict[str, Any]]:
        """IDU with InstructPix2Pix (mode ip2p) or SDS/DDS through renders (modes sds, dds);
        `checkpoints(mode)` opens the edit's checkpoint, which either loop resumes from."""
        from canon_edit.guidance.edit import edit_text
        from canon_edit.guidance.models import load_model

        mode = request.mode or ("ip2p" if request.instruction else "sds")
        if mode not in MODES:
            raise UserError(f"mode {mode} does not apply to a portrait; use one of {', '.join(MODES)}")
        if request.layers or request.mask or request.controlnet:
            raise UserError("--layers, --mask and --controlnet apply to 2D runs; a portrait edits its person")
        if request.source_prompt and mode != "dds":
            raise UserError("a source prompt is for mode dds")
        text = edit_text(request, mode)
        cfg = edit_config(MODES[mode], request.preset, f"portrait_{mode}", request.overrides)
        checkpoint = checkpoints(mode) if checkpoints is not None else None
        model_id = request.model or cfg.model
        model = load_model(
            model_id, device=request.device, options=cfg.load, allow_download=request.allow_download
        )
        if model.instruct != (mode == "ip2p"):
            need = "an InstructPix2Pix model" if mode == "ip2p" else "a text-to-image model"
            raise UserError(f"'{model_id}' is not {need}, which mode {mode} needs; give one with --model")
        avatar = EditableAvatar(self)
        if mode == "ip2p":
            from .idu import face_boxes, ip2p_editor, iterative_dataset_update

            boxes = face_boxes(avatar, cfg.face_scale) if cfg.face_crop else None
            editor = ip2p_editor(model, text, cfg, boxes, request.seed)
            stats = iterative_dataset_update(
                avatar, editor, cfg, request.seed, progress, checkpoint, draws_on=model.device
            )
        else:
            from .distill import distill_portrait

            stats = distill_portrait(
                avatar, EditableAvatar(self), model, mode, text, cfg,
                source_prompt=request.source_prompt, seed=request.seed, progress=progress,
                checkpoint=checkpoint,
            )  # fmt: skip
        meta = {
            "mode": mode,
            "prompt": text,
            "model": model_id,
            "source_prompt": request.source_prompt if mode == "dds" else None,
            "seed": request.seed,
            "device": str(model.device),
            "config": to_dict(cfg),
            **stats,
        }
        return self._from(avatar), meta

    def transfer_appearance(self, reference: Tensor) -> tuple[EditablePortrait, dict[str, Any]]:
        """A reference image's colour mean and covariance inside the person (appearance.py)."""
        decoder_state, meta = transfer_appearance(self, reference)
        return self._edited(self.gaussians, decoder_state), meta

    def relight(
        self, options: dict[str, Any], progress: bool, checkpoints: Checkpoints | None = None
    ) -> tuple[EditablePortrait, dict[str, Any]]:
        """A new light (a preset, a directional light or an environment map), fitted light replaced;
        or IC-Light's, through an iterative dataset update that resumes from `checkpoints("relight")`."""
        from .relight import relight

        cfg = edit_config(RelightConfig, None, "portrait_relight", options)
        checkpoint = checkpoints("relight") if checkpoints is not None else None
        avatar = EditableAvatar(self)
        if cfg.iclight:
            return self._relight_iclight(avatar, cfg, progress, checkpoint)
        lit, meta = relight(avatar, cfg, self.surface_probe, progress, checkpoint)
        return dataclasses.replace(self._from(avatar), relighting=lit), {**meta, "config": to_dict(cfg)}

    def _relight_iclight(
        self, avatar: EditableAvatar, cfg: RelightConfig, progress: bool, checkpoint: EditCheckpoint | None
    ) -> tuple[EditablePortrait, dict[str, Any]]:
        """IC-Light edits keyframes (each at most `idu.max_edits` times) and IDU trains the avatar on them."""
        from canon_edit.guidance.iclight import load_iclight

        from .idu import iclight_editor, iterative_dataset_update

        model = load_iclight(cfg.model, cfg.iclight, cfg.device, cfg.ic.load, cfg.allow_download)
        editor = iclight_editor(model, cfg.prompt, cfg.ic, cfg.ic_seed)
        stats = iterative_dataset_update(
            avatar, editor, cfg.idu, cfg.ic_seed, progress, checkpoint, draws_on=model.device
        )
        meta = {"light": "iclight", "prompt": cfg.prompt, "device": str(model.device), **stats}
        return self._from(avatar), {**meta, "config": to_dict(cfg)}

    def stylize(
        self,
        style: Tensor,
        options: dict[str, Any] | None,
        vgg: str | None,
        progress: bool,
        checkpoints: Checkpoints | None = None,
    ) -> tuple[EditablePortrait, dict[str, Any]]:
        """The style image's colours, then (modes texture, vgg) its texture (stylize.py), whose loop
        resumes from `checkpoints("stylize")`."""
        cfg = edit_config(StylizeConfig, None, "portrait_stylize", options)
        if vgg and cfg.mode != "vgg":
            cfg = dataclasses.replace(cfg, mode="vgg")
        if cfg.mode == "vgg" and not vgg:
            raise UserError("mode vgg needs VGG weights: --vgg FILE (a torchvision VGG-16/19 state dict)")
        checkpoint = checkpoints("stylize") if checkpoints is not None else None
        decoder_state, meta = transfer_appearance(self, style)
        coloured = self._edited(self.gaussians, decoder_state)
        if cfg.mode != "colour":
            from .stylize import stylize_texture

            avatar = EditableAvatar(coloured)
            meta |= stylize_texture(avatar, EditableAvatar(coloured), style, cfg, vgg, progress, checkpoint)
            coloured = coloured._from(avatar)
        return coloured, {**meta, "config": to_dict(cfg)}

    def save_edit(self, folder: Path) -> None:
        write_ply(folder / "gaussians.ply", self.rest_gaussians())
        with atomic_path(folder / "decoder.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in self.decoder_state.items()}, str(tmp))
        if self.relighting is not None:
            (folder / "lighting.json").write_text(json.dumps(self.relighting.to_json()))

    def load_edit(self, folder: Path) -> EditablePortrait:
        fix = f"make the edit '{folder.name}' again, replacing it"
        path = folder / "gaussians.ply"
        if not path.is_file():
            raise UserError(
                f"edit '{folder.name}' holds no gaussians.ply (it was made on another kind of run)"
            )
        ply = read_ply(path)
        gaussians = {k: ply[k] for k in GAUSSIAN_KEYS if k in ply}
        same = all(k in gaussians for k in GAUSSIAN_KEYS) and all(
            torch.equal(gaussians[k], self.gaussians[k]) for k in ("tri_id",)
        )
        if not same or gaussians["features"].shape != self.gaussians["features"].shape:
            raise UserError(f"edit '{folder.name}' does not match this run's Gaussians; {fix}")
        edited = self._edited(gaussians, read_tensors(folder / "decoder.safetensors", fix))
        lighting = folder / "lighting.json"
        if lighting.is_file():
            data = read_json(lighting, fix)
            edited = dataclasses.replace(edited, relighting=Relighting.from_json(data, str(lighting)))
        return edited

    @torch.no_grad()
    def turned_person(self, frames: list[int], angles: list[tuple[float, float]]) -> tuple[Tensor, Tensor]:
        """Frames seen from cameras swung by (yaw, pitch) degrees around the head: the person, alpha."""
        body, tr, decoder = self.get_body(), self.tracking, self.decoder()
        black = torch.zeros(3, tr.height, tr.width)
        out = [
            self.frame(t, turned_camera(tr.camera(t), head_centre(body, tr, t), yaw, pitch), black, decoder)
            for t, (yaw, pitch) in zip(frames, angles, strict=True)
        ]
        return torch.stack([o[0] for o in out]), torch.stack([o[1] for o in out])

    def render_turned(
        self,
        frames: list[int] | None = None,
        orbit: float | None = None,
        view: tuple[float, float] | None = None,
    ) -> Tensor:
        """Frames (default all) from cameras swung around the head, over black.

        `orbit` swings yaw to ±orbit and pitch to ±orbit/2 over the clip (orbit.py); `view` holds one
        (yaw, pitch) offset in degrees.
        """
        ids = list(range(self.T)) if frames is None else [int(t) for t in frames]
        if orbit is not None:
            every = orbit_angles(self.T, orbit)
            angles = [every[t] for t in ids]
        else:
            angles = [view or (0.0, 0.0)] * len(ids)
        return self.turned_person(ids, angles)[0]
