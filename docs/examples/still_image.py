"""A complete canon-edit representation in one file: the clip as one still image (a static camera).

It is the worked example of docs/ARCHITECTURE.md ("Adding a representation") and is fitted through
the real CLI by tests/test_architecture.py. It imports only the core (`canon_edit`), as every
representation must. Register it without packaging it:

    CANON_EDIT_REPRESENTATIONS=still=still_image:StillImage canon-edit fit clip/ -o run --method still

(with this folder on PYTHONPATH), or from a package's pyproject.toml:

    [project.entry-points."canon_edit.representations"]
    still = "still_image:StillImage"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from canon_edit.canonical import CanonicalVideo, Layer
from canon_edit.flow import Flow
from canon_edit.representation import Representation
from canon_edit.train import TrainConfig
from canon_edit.video import Clip


@dataclass
class StillImageConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=200, warmup_steps=10))
    lr: float = 0.05
    batch: int = 1024  # pixels per step, each in every frame


class StillImage(Representation):
    """One canonical image seen through the identity map in every frame: the clip's per-pixel mean."""

    name = "still"
    config_class = StillImageConfig
    bake_class = CanonicalVideo
    needs_flow = False  # nothing moves, so the fit needs no optical flow

    def __init__(self, clip: Clip, flow: Flow | None, cfg: StillImageConfig):
        super().__init__()
        self.cfg, self.fps = cfg, clip.fps
        self.register_buffer("frames", clip.frames, persistent=False)  # T×3×H×W
        self.image = nn.Parameter(torch.full_like(clip.frames[0], 0.5))

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [self.image], "lr": self.cfg.lr}]

    def sample(self, step: int, generator: torch.Generator) -> dict[str, Tensor]:
        """Random pixels, each in every frame (so the target's mean over time is exact)."""
        _, _, H, W = self.frames.shape
        idx = torch.randint(0, H * W, (self.cfg.batch,), generator=generator)
        return {"y": idx // W, "x": idx % W}

    def losses(self, batch: dict[str, Tensor], step: int) -> tuple[dict[str, Tensor], dict[str, float]]:
        target = self.frames[:, :, batch["y"], batch["x"]]  # T×3×B
        mse = (self.image[None, :, batch["y"], batch["x"]] - target).square().mean()
        return {"rgb": mse}, {"mse": float(mse.detach())}

    @torch.no_grad()
    def bake(self) -> CanonicalVideo:
        T, _, H, W = self.frames.shape
        ys = (torch.arange(H) + 0.5) / H * 2 - 1
        xs = (torch.arange(W) + 0.5) / W * 2 - 1
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # H×W×2, grid_sample's (x, y)
        uv = grid.expand(T, H, W, 2).half().contiguous()
        return CanonicalVideo([Layer(texture=self.image.clamp(0, 1).cpu(), uv=uv, name="still")], self.fps)
