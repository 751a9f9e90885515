"""PortraitAsset: the baked portrait, everything re-rendering (and later editing) needs, no fit state.

On disk (the run's ``canonical/`` folder)::

    asset.json              kind "portrait", body model spec (name, model_dir, variant, n_shape,
                            n_expression), fps, decoder sizes
    gaussians.ply           3DGS layout at the rest pose + binding (tri_id, bary, offset, lrot) + features
    decoder.safetensors     the neural-texture decoder's weights
    tracking.json           per-frame pose/expression/camera, shared shape (tracking.py's layout)
    background.safetensors  the source frames (uint8), the layer the person is composited over

`render(frames, textures)` has `CanonicalVideo.render`'s call shape, so the spine's finish, eval and
render code drives it (canon_edit.representation.load_bake opens it through `Portrait.bake_class`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from canon_edit.atomic import atomic_path, write_json
from canon_edit.errors import ResumeNeeded, UserError
from canon_edit.files import RESUME_FIX, CorruptFile, MappedTensors, read_json, read_tensors
from canon_edit.run import MappedFrames

from .body import BodyModel, load_body_spec
from .camera import Camera
from .gaussians import read_ply, write_ply
from .render import NeuralDecoder, posed_gaussians, render_frame, render_frames
from .tracking import Tracking, load_tracking

KIND = "portrait"


def spread(T: int, count: int) -> list[int]:
    """At most `count` frame indices spread evenly over 0..T-1, both ends included."""
    return torch.linspace(0, T - 1, min(T, count)).round().long().unique().tolist()


@dataclass
class PortraitAsset:
    gaussians: dict[str, Tensor]  # tri_id, bary, offset, quats_local, log_scales, opacity_logits, features
    decoder_state: dict[str, Tensor]
    feature_dim: int
    decoder_hidden: int
    tracking: Tracking
    body_spec: dict[str, Any]  # what load_body_spec needs: name, model_dir, variant, n_shape, n_expression
    background: MappedFrames  # the source frames the person is composited over
    fps: float
    body: BodyModel | None = field(default=None, repr=False)
    # keep every frame's render once made (a fit's finish renders the clip twice: its person-only
    # metrics, its reconstruction); off for a loaded asset, whose `render` streams a clip once
    keep_renders: bool = field(default=False, repr=False)
    # the frames' (person, alpha) rendered so far (float16, every frame's store, which frames are in it),
    # with the objects they were rendered from (see `render_state`)
    _person: tuple[tuple[Any, ...], Tensor | None, Tensor | None, Tensor] | None = field(
        default=None, repr=False
    )

    @property
    def T(self) -> int:
        return self.tracking.T

    def get_body(self) -> BodyModel:
        if self.body is None:
            self.body = load_body_spec(self.body_spec)
        return self.body

    def decoder(self) -> NeuralDecoder:
        decoder = NeuralDecoder(self.feature_dim, self.decoder_hidden)
        decoder.load_state_dict(self.decoder_state)
        return decoder.eval()

    @torch.no_grad()
    def render(
        self, frames: Tensor | list[int] | None = None, textures: Any = None, background: Tensor | None = None
    ) -> Tensor:
        """Re-render frames (default all) as T×3×H×W, the person composited over `background`.

        `background` is one 3×H×W image for every frame (a new backdrop; black for person-only
        metrics); by default each frame's own source frame. With `keep_renders` (a fit's bake) the
        person and its alpha are rendered once per frame and kept (float16), so the finish step's
        person-only metrics and its reconstruction video, each streamed a chunk at a time, share one
        pass; a frame rendered now comes back at full precision, a kept one as kept.
        """
        if textures is not None:
            raise UserError(
                "portrait runs have no canonical textures to replace; portrait edits are not supported yet"
            )
        ids = list(range(self.T)) if frames is None else [int(t) for t in frames]
        person, alpha = self._kept_person(ids) if self.keep_renders else self.render_person(ids)
        backdrop = self.background[ids] if background is None else background[None]
        return person + backdrop * (1 - alpha)

    def _kept_person(self, ids: list[int]) -> tuple[Tensor, Tensor]:
        """(person, alpha) of frames `ids`: the kept ones from the float16 store, the others rendered
        now, kept, and returned as rendered."""
        state, kept = self.render_state(), self._person
        if kept is None or not all(a is b for a, b in zip(kept[0], state, strict=True)):
            kept = self._person = (state, None, None, torch.zeros(self.T, dtype=torch.bool))
        _, person_store, alpha_store, done = kept
        fresh = sorted({t for t in ids if not done[t]})
        if not fresh:
            assert person_store is not None and alpha_store is not None
            return person_store[ids].float(), alpha_store[ids].float()
        rendered = self.render_person(fresh)
        if person_store is None or alpha_store is None:  # every frame's store, filled as frames render
            person_store = rendered[0].new_empty((self.T, *rendered[0].shape[1:]), dtype=torch.float16)
            alpha_store = rendered[1].new_empty((self.T, *rendered[1].shape[1:]), dtype=torch.float16)
            self._person = (state, person_store, alpha_store, done)
        person_store[fresh], alpha_store[fresh], done[fresh] = rendered[0].half(), rendered[1].half(), True
        if ids == fresh:
            return rendered
        where = {t: i for i, t in enumerate(fresh)}
        person, alpha = (
            torch.stack([new[where[t]] if t in where else store[t].float() for t in ids])
            for new, store in zip(rendered, (person_store, alpha_store), strict=True)
        )
        return person, alpha

    def render_state(self) -> tuple[Any, ...]:
        """What the person's render depends on. The kept render is reused only while these are the very
        same objects, so a copy with other Gaussians, decoder or tracking (`dataclasses.replace`)
        renders afresh."""
        return (self.gaussians, self.decoder_state, self.tracking)

    @torch.no_grad()
    def render_person(self, frames: list[int]) -> tuple[Tensor, Tensor]:
        """The person over black (F×3×H×W, premultiplied) and its alpha (F×1×H×W)."""
        body, decoder, tr = self.get_body(), self.decoder(), self.tracking
        g = {k: v.to(tr.pose.device) for k, v in self.gaussians.items()}
        black = torch.zeros(3, tr.height, tr.width)
        return render_frames(
            lambda t: render_frame(
                body, g, decoder, tr.pose[t], tr.expression[t], tr.shape, tr.camera(t), black
            ),
            frames,
        )

    @torch.no_grad()
    def rest_gaussians(self) -> dict[str, Tensor]:
        """The Gaussians in the body's rest pose, in the PLY's columns (for viewers and editing tools)."""
        body, g = self.get_body(), self.gaussians
        zero_pose = torch.zeros_like(self.tracking.pose[0])
        zero_expr = torch.zeros_like(self.tracking.expression[0])
        means, quats = posed_gaussians(
            body,
            zero_pose,
            zero_expr,
            self.tracking.shape,
            g["tri_id"],
            g["bary"],
            g["offset"],
            g["quats_local"],
        )
        return {**g, "means": means, "quats": quats, "rgb": torch.sigmoid(g["features"][:, :3])}

    def source_camera(self, frame: int) -> Camera:
        """Frame `frame`'s tracked camera: where a viewer starts, and the frustum it shows."""
        return self.tracking.camera(frame)

    @torch.no_grad()
    def render_view(self, frame: int, camera: Camera) -> Tensor:
        """The avatar as posed in frame `frame`, seen from any `camera`, over black (3×H×W).

        Novel views for the viewer: the source frame is not a backdrop here, since it only lines up
        with the tracked camera.
        """
        tr = self.tracking
        g = {k: v.to(tr.pose.device) for k, v in self.gaussians.items()}
        black = torch.zeros(3, camera.height, camera.width)
        image, _ = render_frame(
            self.get_body(), g, self.decoder(), tr.pose[frame], tr.expression[frame], tr.shape, camera, black
        )
        return image

    @torch.no_grad()
    def body_mesh(self, frame: int) -> tuple[Tensor, Tensor]:
        """The tracked body of frame `frame`: vertices V×3 (world) and faces F×3, for a viewer's overlay."""
        tr, body = self.tracking, self.get_body()
        return body(tr.pose[frame][None], tr.expression[frame][None], tr.shape).vertices[0], body.faces

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_ply(folder / "gaussians.ply", self.rest_gaussians())
        with atomic_path(folder / "decoder.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in self.decoder_state.items()}, str(tmp))
        with atomic_path(folder / "background.safetensors") as tmp:
            save_file({"frames": self.background.uint8()}, str(tmp))
        if self.background.storage is not None:
            self.background.storage.release()
        self.tracking.save(folder / "tracking.json")
        write_json(
            folder / "asset.json",
            {
                "kind": KIND,
                "body": self.body_spec,
                "fps": self.fps,
                "feature_dim": self.feature_dim,
                "decoder_hidden": self.decoder_hidden,
            },
        )

    @classmethod
    def load(cls, folder: str | Path, body: BodyModel | None = None) -> PortraitAsset:
        folder = Path(folder)
        meta_path = folder / "asset.json"
        if not meta_path.is_file():
            raise ResumeNeeded(f"{folder} holds no portrait bake (no asset.json)", folder.parent)
        fix = RESUME_FIX
        meta = read_json(meta_path, fix)
        if meta.get("kind") != KIND:
            raise UserError(f"{folder} holds a '{meta.get('kind')}' bake, not a portrait")
        ply = read_ply(folder / "gaussians.ply")
        keys = ("tri_id", "bary", "offset", "quats_local", "log_scales", "opacity_logits", "features")
        stored = MappedTensors(folder / "background.safetensors", fix, ("frames",))
        frames = stored.tensors["frames"]
        if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[1] != 3:
            raise CorruptFile(stored.path, "'frames' is not T×3×H×W uint8", fix)
        background = MappedFrames(frames, stored)
        try:
            return cls(
                gaussians={k: ply[k] for k in keys},
                decoder_state=read_tensors(folder / "decoder.safetensors", fix),
                feature_dim=int(meta["feature_dim"]),
                decoder_hidden=int(meta["decoder_hidden"]),
                tracking=load_tracking(folder / "tracking.json", background.shape[0]),
                body_spec=meta["body"],
                background=background,
                fps=float(meta["fps"]),
                body=body,
            )
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CorruptFile(folder / "asset.json", f"missing or malformed {e}", fix) from None
