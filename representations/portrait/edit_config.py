"""Options of the portrait edits (`canon-edit edit RUN ... --set KEY=VALUE`, presets/edit/portrait_*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field

from canon_edit.errors import UserError
from canon_edit.guidance.distill import DistillConfig
from canon_edit.guidance.models import LoadOptions


@dataclass
class LiftConfig:
    """`--keyframe T --image PNG` on a portrait: the painted pixels lifted into the features."""

    steps: int = 200
    lr: float = 0.1  # Adam on the features (logits) of the Gaussians the keyframe sees
    seen_threshold: float = 0.05  # a Gaussian is seen if it makes this much of a pixel in the keyframe
    hold_frames: int = 6  # other frames (evenly spaced) held to their previous renders
    hold_weight: float = 1.0

    def validate(self, prefix: str = "") -> None:
        if self.steps < 1 or self.lr <= 0 or self.seen_threshold <= 0 or self.hold_frames < 0:
            raise UserError(f"{prefix}steps ≥ 1, lr > 0, seen_threshold > 0 and hold_frames ≥ 0 are needed")


@dataclass
class IDUConfig:
    """Iterative dataset update (PortraitGen, Instruct-NeRF2NeRF): `--instruction ... --mode ip2p`."""

    model: str = "timbrooks/instruct-pix2pix"
    steps: int = 600  # optimisation steps in all
    keyframe_every: int = 12  # every N-th frame is edited and trained on; the others are held out
    reedit_every: int = 4  # one keyframe is re-edited from the current render every this many steps
    t_min: float = 0.5  # the render is noised to t ~ U[t_min, t_max]·T ...
    t_max: float = 0.8
    denoise_steps: int = 10  # ... and denoised in this many DDIM steps
    guidance_scale: float = 12.0  # text: uncond + s_t·(text − image) + s_i·(image − uncond)
    image_guidance_scale: float = 2.0
    negative_prompt: str = ""
    face_crop: bool = True  # also edit a square around the head at `face_resolution`, pasted back
    face_scale: float = 1.7  # the square's side, in units of the face landmarks' extent
    face_resolution: int = 512
    tile_overlap: float = 0.25
    tile_batch: int = 4
    lr_features: float = 1e-2
    lr_decoder: float = 1e-3
    lr_offset: float = 0.0  # > 0 lets offsets move, under offset_weight
    l1_weight: float = 3.0
    ssim_weight: float = 0.5
    feature_weight: float = 0.5  # L1 of the first 3 feature channels to the original frame
    offset_weight: float = 1.0
    load: LoadOptions = field(default_factory=LoadOptions)

    def validate(self, prefix: str = "") -> None:
        if self.steps < 1 or self.keyframe_every < 1 or self.reedit_every < 1 or self.denoise_steps < 1:
            raise UserError(f"{prefix}steps, keyframe_every, reedit_every and denoise_steps must be ≥ 1")
        if not 0 < self.t_min <= self.t_max <= 1:
            raise UserError(f"{prefix}t_min and t_max must satisfy 0 < t_min ≤ t_max ≤ 1")
        if self.face_scale <= 0 or self.face_resolution < 8:
            raise UserError(f"{prefix}face_scale must be > 0 and face_resolution ≥ 8")


@dataclass
class PortraitDistillConfig(DistillConfig):
    """`--mode sds|dds` on a portrait: scores of random frames and novel views into features and decoder."""

    steps: int = 400
    lr: float = 1e-2  # Adam on the neural features
    lr_decoder: float = 1e-3
    view_chance: float = 0.3  # share of steps rendered from a novel view ...
    view_degrees: float = 30.0  # ... at a yaw and pitch drawn in ±this
    crop_margin: float = 1.15  # the crop is the person's bounding square grown by this factor

    def validate(self, prefix: str = "") -> None:
        if not 0 <= self.view_chance <= 1 or not 0 <= self.view_degrees <= 90 or self.crop_margin < 1:
            raise UserError(f"{prefix}view_chance in [0, 1], view_degrees in [0, 90], crop_margin ≥ 1")
