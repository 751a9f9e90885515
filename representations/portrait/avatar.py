"""EditableAvatar: a baked portrait's appearance as parameters, what every portrait edit optimises.

Geometry stays bound to the tracked mesh: the binding (triangle, barycentrics), rotations, scales
and opacities are fixed, so pose and expressions are kept by construction. The neural features and
the decoder are free. Offsets move only when an edit gives them a learning rate, and then under a
regulariser towards the fitted ones (`offset_penalty`); `shift` measures how far they went.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from .asset import PortraitAsset
from .camera import Camera
from .raster import splat_sums
from .render import decode, posed_gaussians, render_features

FIXED = ("tri_id", "bary", "quats_local", "log_scales", "opacity_logits")


class EditableAvatar(nn.Module):
    def __init__(self, asset: PortraitAsset):
        super().__init__()
        object.__setattr__(self, "asset", asset)  # plain data, not a submodule
        object.__setattr__(self, "body", asset.get_body())
        g = asset.gaussians
        self.features = nn.Parameter(g["features"].clone().float())
        self.offset = nn.Parameter(g["offset"].clone().float())
        self.register_buffer("offset_fitted", g["offset"].clone().float())
        for key in FIXED:
            self.register_buffer(key, g[key].clone())
        self.decoder = asset.decoder()
        self.tracking = asset.tracking
        self.T, self.H, self.W = asset.T, self.tracking.height, self.tracking.width

    def gaussians(self) -> dict[str, Tensor]:
        return {
            "features": self.features,
            "offset": self.offset,
            **{key: getattr(self, key) for key in FIXED},
        }

    def camera(self, t: int) -> Camera:
        return self.tracking.camera(t)

    def render(
        self, t: int, camera: Camera | None = None, background: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Frame t's composite (over `background`, default the source frame), alpha, and raw features.

        The features (C×H×W, un-premultiplied) let an edit hold the base colour channels to the
        source while the decoder carries the new look, as PortraitGen does.
        """
        tr = self.tracking
        cam = camera or self.camera(t)
        feats, alpha = render_features(
            self.body, self.gaussians(), tr.pose[t], tr.expression[t], tr.shape, cam
        )
        if background is None:
            background = self.asset.background[t]
        return decode(self.decoder, feats, alpha, background), alpha, feats / alpha.clamp(min=1e-3)

    def splat_sums(self, t: int, images: Tensor) -> Tensor:
        """N×C: per Gaussian, Σ_pixels w_i(p)·images_c(p) over frame t (raster.splat_sums)."""
        tr, g = self.tracking, self.gaussians()
        with torch.no_grad():
            means, quats = posed_gaussians(
                self.body, tr.pose[t], tr.expression[t], tr.shape, g["tri_id"], g["bary"], g["offset"],
                g["quats_local"],
            )  # fmt: skip
        opacity = torch.sigmoid(g["opacity_logits"])
        return splat_sums(means, quats, g["log_scales"].exp(), opacity, self.camera(t), images)

    def visibility(self, t: int, weights: Tensor) -> Tensor:
        """(N,): how much of the `weights`-weighted pixels (H×W) of frame t each Gaussian makes."""
        return self.splat_sums(t, weights[None])[:, 0]

    def offset_penalty(self) -> Tensor:
        """Mean squared offset change in units of each Gaussian's own largest scale."""
        size = self.log_scales.exp().amax(-1).detach()
        return (((self.offset - self.offset_fitted).norm(dim=-1) / size) ** 2).mean()

    @torch.no_grad()
    def shift(self) -> dict[str, float]:
        """How far the edit moved the Gaussians: mean and max, in mm and in their own sizes."""
        moved = (self.offset - self.offset_fitted).norm(dim=-1)
        size = self.log_scales.exp().amax(-1)
        return {
            "gaussian_shift_mean_mm": round(float(moved.mean()) * 1000, 4),
            "gaussian_shift_max_mm": round(float(moved.max()) * 1000, 4),
            "gaussian_shift_max_sizes": round(float((moved / size).max()), 4),
        }

    @torch.no_grad()
    def to_asset(self) -> PortraitAsset:
        """The edited asset: the fitted one with these features, offsets and decoder."""
        gaussians = {**self.asset.gaussians, "features": self.features.detach().clone()}
        gaussians["offset"] = self.offset.detach().clone()
        decoder_state = {k: v.detach().clone() for k, v in self.decoder.state_dict().items()}
        return dataclasses.replace(self.asset, gaussians=gaussians, decoder_state=decoder_state, _person=None)
