"""Options of the portrait edits (`canon-edit edit RUN ... --set KEY=VALUE`, presets/edit/portrait_*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field

from canon_edit.errors import UserError
from canon_edit.guidance.distill import DistillConfig
from canon_edit.guidance.iclight import ICLightConfig
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
    max_edits: int = 0  # edits per keyframe at most (IC-Light: 2, as PortraitGen); 0 = no limit
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
        if self.max_edits < 0:
            raise UserError(f"{prefix}max_edits must be ≥ 0 (0: no limit)")
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


@dataclass
class RelightConfig:
    """`canon-edit relight RUN` / scripts/relight_portrait.py (presets/edit/portrait_relight.yaml)."""

    preset: str = ""  # a light preset (lighting.PRESETS): key-left, key-right, top, rim, sunset, overcast
    azimuth: float | None = None  # a directional light: degrees, 0 = from the camera, 90 = from image right
    elevation: float = 0.0  # degrees above the horizon (from above: positive)
    colour: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    ambient: float = 0.3  # share of the directional light's brightness that comes from everywhere
    intensity: float = 1.0  # mean shading over the surfaces the clip shows; 1 keeps the fit's brightness
    envmap: str = ""  # an equirectangular environment map (PNG, JPG, HDR, EXR) projected to SH
    iclight: str = ""  # IC-Light's offsets (.safetensors): relight by diffusion (IDU) instead of SH
    model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # IC-Light's SD-1.5 base (folder or hub id)
    prompt: str = ""  # IC-Light: the light in words, e.g. "warm sunset light, soft shadows"
    ic: ICLightConfig = field(default_factory=ICLightConfig)
    idu: IDUConfig = field(default_factory=lambda: IDUConfig(steps=400, max_edits=2, face_crop=False))
    device: str = "auto"  # IC-Light's device
    ic_seed: int = 0
    allow_download: bool = False  # IC-Light: fetch an uncached hub model
    rotate: float = 0.0  # degrees the light turns around the head over the clip (a light orbit)
    albedo: str = "refit"  # refit: the decoder refitted to albedo | ratio: the fit's colour ÷ fitted shading
    # the video relights the source frames (× new ÷ fitted shading), keeping their detail and
    # stillness; `albedo` then serves novel views (orbits, the viewer). false: the avatar throughout.
    footage: bool = True
    light_frames: int = 24  # frames (evenly spread) whose pixels fit the clip's light
    refit_steps: int = 300
    # σ of the blur of the rendered shading, as a share of the frame height: a body mesh never fits a
    # real face exactly, and its creases (lips, brows, the jaw line) drew thin dark lines on relit
    # real faces. Measured (bench/RESULTS.md): on the procedural portrait, whose mesh is exact, 0 /
    # 0.01 / 0.02 reach 32.2 / 30.8 / 27.7 dB against the truth; on portrait_lp_d13 the lines show
    # at 0, are faint at 0.01 and gone at 0.02.
    shading_blur: float = 0.01
    lr_features: float = 1e-2
    lr_decoder: float = 1e-3

    def validate(self, prefix: str = "") -> None:
        given = [bool(self.preset), self.azimuth is not None, bool(self.envmap), bool(self.iclight)]
        if sum(given) != 1:
            raise UserError(
                "relighting needs exactly one light: --preset NAME, --azimuth DEG [--elevation DEG], "
                "--envmap FILE or --iclight OFFSETS.safetensors"
            )
        if bool(self.iclight) != bool(self.prompt.strip()):
            raise UserError(
                'IC-Light relighting needs both --iclight OFFSETS and --prompt "the light in words"'
            )
        if len(self.colour) != 3 or min(self.colour) < 0:
            raise UserError(f"{prefix}colour must be three non-negative numbers (R,G,B), got {self.colour}")
        if self.intensity <= 0 or not self.ambient >= 0:
            raise UserError(f"{prefix}intensity must be > 0 and ambient ≥ 0")
        if self.albedo not in ("refit", "ratio"):
            raise UserError(f"{prefix}albedo must be refit or ratio, got '{self.albedo}'")
        if not 0 <= self.shading_blur <= 0.2:
            raise UserError(f"{prefix}shading_blur must be in [0, 0.2] (a share of the frame height)")
        if self.light_frames < 2 or self.refit_steps < 0:
            raise UserError(f"{prefix}light_frames must be ≥ 2 and refit_steps ≥ 0")


@dataclass
class StylizeConfig:
    """`canon-edit stylize RUN --style IMG`, scripts/stylize_portrait.py (preset portrait_stylize)."""

    mode: str = "texture"  # colour (statistics only) | texture (random-filter Grams) | vgg (needs --vgg)
    loss: str = "nnfm"  # with --vgg: nnfm (ARF, VGG-16 block 3) | gatys (Grams of relu1_1..relu5_1)
    steps: int = 300
    lr_features: float = 1e-2
    lr_decoder: float = 1e-3
    style_weight: float = 1.0
    content_weight: float = 1.0  # L1 of the stylised render's luminance structure to the original's
    tv_weight: float = 0.0  # ARF uses 1 on the render
    crop: int = 128  # the person's square, resized to this for the feature losses
    seed: int = 0

    def validate(self, prefix: str = "") -> None:
        if self.mode not in ("colour", "texture", "vgg"):
            raise UserError(f"{prefix}mode must be colour, texture or vgg, got '{self.mode}'")
        if self.loss not in ("nnfm", "gatys"):
            raise UserError(f"{prefix}loss must be nnfm or gatys, got '{self.loss}'")
        if self.steps < 0 or self.crop < 32:
            raise UserError(f"{prefix}steps must be ≥ 0 and crop ≥ 32")
