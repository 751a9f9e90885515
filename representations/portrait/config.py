"""The options of a portrait fit (`--set KEY=VALUE`, presets/portrait.yaml), in a module of their own
so that the model and its `prepare` step both read them without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from canon_edit.train import TrainConfig

from .tracking import TrackerConfig


@dataclass
class PortraitConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=3000, warmup_steps=20))
    body: str = "anny"  # anny (installs from PyPI) | smplx (needs body_model_dir)
    body_model_dir: str | None = None
    body_variant: str = "fullbody"  # anny: fullbody (head and torso: portraits show shoulders) | head
    tracking: str | None = None  # tracking.json (tracking.py) or PortraitGen's smplx_track.pth; None = track
    tracker: TrackerConfig = field(default_factory=TrackerConfig)  # landmark tracking (no tracking file)
    texel_resolution: int = 256  # one Gaussian per covered texel of this UV map
    feature_dim: int = 16  # neural feature per Gaussian; its first 3 channels are a base colour
    decoder_hidden: int = 32
    lr_features: float = 2e-2
    lr_decoder: float = 2e-3
    lr_offset: float = 2e-4
    lr_scale: float = 5e-3
    lr_rotation: float = 2e-3
    lr_opacity: float = 2e-2
    ssim_weight: float = 0.2
    mask_weight: float = 0.5
    offset_weight: float = 1e-2  # on (offset / texel size)²: Gaussians stay near their texel
    scale_weight: float = 1.0  # on scales beyond `max_scale_texels` texels
    max_scale_texels: float = 3.0
    # per-frame corrections of the tracked camera and joints, learned with the Gaussians (refine.py);
    # off in the dataclass so that runs from before resume as they were fitted. A tracking file the
    # user gives is trusted as it is unless `refine_given_tracking`: only canon-edit's own landmark
    # tracking is known to be pixels off (on the procedural portrait, whose given tracking is exact,
    # refining it cost the relit truth 4 dB)
    refine_tracking: bool = False
    refine_given_tracking: bool = False
    lr_refine: float = 3e-4  # radians (and camera distances) per step
    refine_smooth_weight: float = 1.0  # on the corrections' frame-to-frame change
    refine_weight: float = 1e-2  # on their size

    # options older run.json files may hold, dropped on --resume: detector_python named an interpreter
    # to execute, and a run folder (possibly someone else's) must not choose what canon-edit runs
    LEGACY_KEYS: ClassVar[tuple[str, ...]] = ("detector_python",)
