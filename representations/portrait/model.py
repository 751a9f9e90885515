"""The portrait representation: Gaussians on a tracked body mesh, decoded by a neural texture.

PortraitGen's recipe: one Gaussian per texel of the body's UV map (restricted to triangles the
tracked cameras see), bound by triangle + barycentrics + a learned offset, so the body's skinning
moves it; free scale, rotation and opacity; a feature vector per Gaussian is rasterised and a small
conv net decodes the feature image to RGB. The person is composited over the source frame with the
rendered alpha, so the background never needs modelling and the mask supervises the silhouette.
Losses: L1 + SSIM on the composite, L1 between alpha and the person mask, offset and scale priors.
No optical flow: the tracked body carries the motion. `prepare` (prepare.py) supplies the body, the
tracking (a tracking file, or detected face landmarks tracked per frame) and, for a clip without
masks, the detector's person segmentation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from kornia.losses import ssim_loss
from torch import Tensor, nn

from canon_edit.errors import UserError
from canon_edit.flow import Flow
from canon_edit.memory import FitCost
from canon_edit.metrics import SSIM_BATCH, psnr_ssim
from canon_edit.representation import Bake, Representation
from canon_edit.run import MappedFrames, RunFolder
from canon_edit.video import Clip, frame_chunks

from .body import BodyModel, body_spec, load_body
from .camera import Camera
from .config import PortraitConfig
from .editing import EditablePortrait
from .gaussians import texel_binding, texel_sizes
from .prepare import DETECTIONS, TRACKING, TRACKING_ERROR, prepare_portrait
from .refine import corrected_pose, corrected_viewmat, correction_size, trajectory_roughness
from .render import NeuralDecoder, render_frame, render_frames
from .surface import visible_faces
from .tracking import Tracking
from .trajectory_filter import filter_trajectory

GAUSSIAN_KEYS = ("tri_id", "bary", "offset", "quats_local", "log_scales", "opacity_logits", "features")


class Portrait(Representation):
    name = "portrait"
    config_class = PortraitConfig
    bake_class = EditablePortrait
    presets = "canon_edit_representations.presets"
    needs_flow = False
    run_files = frozenset({DETECTIONS, TRACKING, TRACKING_ERROR})
    # a fit's peak, fitted to the procedural portrait (the synthetic SMPL-X body) at 256² and 512², 30 to
    # 240 frames, within -6% to +6% (bench/RESULTS.md, "Fit memory: portraits"): the clip's frames and
    # masks, and the finish step's float16 render of every frame, 43 bytes a pixel of the clip. Each mask
    # label more is only the read's channel (the fit takes their union)
    fit_memory = FitCost(629e6, 2633.0, 43.0, label_clip_pixel=4.0)

    @classmethod
    def demo(cls, out: Path, force: bool, quick: bool, show_progress: bool) -> dict[str, Any]:
        """`canon-edit demo --portrait`: fit, relight and stylise the procedural portrait (demo.py)."""
        from .demo import run_portrait_demo

        return run_portrait_demo(out, force=force, quick=quick, show_progress=show_progress)

    @classmethod
    def prepare(
        cls, clip: Clip, cfg: PortraitConfig, run: RunFolder, show_progress: bool
    ) -> tuple[Clip, dict[str, Any]]:
        """Body model, tracking and (for a clip without them) masks; see prepare.py."""

        return prepare_portrait(clip, cfg, run, show_progress)

    def __init__(
        self,
        clip: Clip,
        flow: Flow | None,
        cfg: PortraitConfig,
        *,
        body: BodyModel | None = None,
        tracking: Tracking | None = None,
        landmark_error_px: float | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        self.T, self.H, self.W, self.fps = clip.T, clip.H, clip.W, clip.fps
        self.landmark_error_px = landmark_error_px
        if clip.masks is None:
            raise UserError(
                "portrait fitting needs a person mask per frame; pass --masks DIR (one PNG per frame) "
                "or fit with 'canon-edit fit --method portrait', which segments the person"
            )
        if tracking is None:
            raise UserError(
                "portrait fitting needs tracking; fit with 'canon-edit fit --method portrait', which tracks "
                "the face, or pass --tracking FILE (tracking.json or PortraitGen's smplx_track.pth)"
            )
        # the body is not a submodule: its (large, fixed) buffers stay out of every checkpoint
        object.__setattr__(self, "body", body or load_body(cfg.body, cfg.body_model_dir, cfg.body_variant))
        if tracking.T != clip.T:
            raise UserError(
                f"tracking has {tracking.T} frames but the clip has {clip.T}; track the same frames"
            )
        if (tracking.width, tracking.height) != (clip.W, clip.H):
            tracking = tracking.rescaled(clip.W, clip.H)
        self.body_name = tracking.body
        # the clip's own frames, not a copy (nothing writes into them): a long clip is held once fewer
        self.register_buffer("frames", clip.frames, persistent=False)
        self.register_buffer("masks", clip.masks[:, :1].amax(1, keepdim=True), persistent=False)
        for key in ("pose", "expression", "shape", "viewmat", "K"):
            self.register_buffer(key, getattr(tracking, key).float().clone())

        res = cfg.texel_resolution
        tri_id, bary = texel_binding(
            self.body.uv, self.body.uv_faces, res, visible_faces(self.body, tracking)
        )
        if len(tri_id) == 0:
            raise UserError("no body triangle is visible in the tracked cameras; check the tracking file")
        rest = self.body(torch.zeros_like(self.pose[:1]), torch.zeros_like(self.expression[:1]), self.shape)
        size = texel_sizes(rest.vertices[0], self.body.faces, self.body.uv, self.body.uv_faces, tri_id, res)
        n = len(tri_id)
        self.register_buffer("tri_id", tri_id)
        self.register_buffer("bary", bary)
        self.register_buffer("texel_size", size)
        self.offset = nn.Parameter(torch.zeros(n, 3))
        self.log_scales = nn.Parameter(torch.log(size[:, None] * torch.tensor([0.7, 0.7, 0.3])))
        self.quats_local = nn.Parameter(torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1))
        self.opacity_logits = nn.Parameter(torch.full((n,), math.log(0.9 / 0.1)))
        mean_colour = (clip.frames * self.masks).sum((0, 2, 3)) / self.masks.sum().clamp(min=1)
        features = 0.1 * torch.randn(n, cfg.feature_dim, generator=torch.Generator().manual_seed(0))
        features[:, :3] = torch.logit(mean_colour.clamp(0.05, 0.95))
        self.features = nn.Parameter(features)
        self.decoder = NeuralDecoder(cfg.feature_dim, cfg.decoder_hidden)
        self.refining = cfg.refine_tracking and (cfg.tracking is None or cfg.refine_given_tracking)
        if self.refining:
            names = [
                n
                for n in (*cfg.tracker.tracked_joints, *cfg.tracker.arm_joints)
                if n in self.body.joint_names
            ]
            joints = torch.tensor([self.body.joint_index(n) for n in names], dtype=torch.long)
            self.register_buffer("refined_joints", joints, persistent=False)
            steadied = [self.body.joint_index(n) for n in names if n in cfg.tracker.trajectory_joints]
            steadied_joints = torch.tensor(steadied, dtype=torch.long)
            self.register_buffer("steadied_joints", steadied_joints, persistent=False)
            self.pose_delta = nn.Parameter(torch.zeros(self.T, len(names), 3))
            self.camera_delta = nn.Parameter(torch.zeros(self.T, 6))
            self.depth = float(self.viewmat[:, 2, 3].abs().mean().clamp(min=0.1))

    def _apply(self, fn: Any, recurse: bool = True) -> Portrait:
        self.body._apply(fn)
        return super()._apply(fn, recurse)

    def param_groups(self) -> list[dict[str, Any]]:
        c = self.cfg
        return [
            {"params": [self.features], "lr": c.lr_features},
            {"params": list(self.decoder.parameters()), "lr": c.lr_decoder},
            {"params": [self.offset], "lr": c.lr_offset},
            {"params": [self.log_scales], "lr": c.lr_scale},
            {"params": [self.quats_local], "lr": c.lr_rotation},
            {"params": [self.opacity_logits], "lr": c.lr_opacity},
        ] + ([{"params": [self.pose_delta, self.camera_delta], "lr": c.lr_refine}] if self.refining else [])

    def frame_tracking(self, t: int) -> tuple[Tensor, Tensor]:
        """Frame t's pose and world→camera matrix, corrected where the fit refines the tracking."""
        if not self.refining:
            return self.pose[t], self.viewmat[t]
        return (
            corrected_pose(self.pose[t], self.refined_joints, self.pose_delta[t]),
            corrected_viewmat(self.viewmat[t], self.camera_delta[t], self.depth),
        )

    def tracking(self) -> Tracking:
        """The tracking the fit ends with: the corrections folded in, so an edit renders what was fitted.

        Corrected, the trajectory is one-euro filtered as the tracker filters its own solve
        (`tracker.trajectory_*`): a frame's correction is learned from the few steps that drew it, and
        that noise shimmers. On portrait_lp_d13 filtering the corrected trajectory took the avatar's
        warping error from 3.2x the source's to 0.95x, with 0.4 dB more inside the mask, on the
        same Gaussians (bench/RESULTS.md).
        """
        frames = [self.frame_tracking(t) for t in range(self.T)]
        pose = torch.stack([p for p, _ in frames]).detach()
        viewmat = torch.stack([v for _, v in frames]).detach()
        if self.refining:
            tr = self.cfg.tracker
            pose, viewmat = filter_trajectory(
                pose, viewmat, self.steadied_joints, self.fps, tr.trajectory_min_cutoff, tr.trajectory_beta
            )
        return Tracking(pose, self.expression, self.shape, viewmat, self.K, self.W, self.H, self.body_name)

    def gaussian_params(self) -> dict[str, Tensor]:
        return {key: getattr(self, key) for key in GAUSSIAN_KEYS}

    def render(self, t: int, background: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Frame t composited over `background` (default: the source frame) and its alpha."""
        pose, viewmat = self.frame_tracking(t)
        return render_frame(
            self.body, self.gaussian_params(), self.decoder, pose, self.expression[t], self.shape,
            Camera(viewmat, self.K, self.W, self.H), self.frames[t] if background is None else background,
        )  # fmt: skip

    def sample(self, step: int, generator: torch.Generator) -> dict[str, Tensor]:
        return {"t": torch.randint(self.T, (1,), generator=generator)}

    def losses(self, batch: dict[str, Tensor], step: int) -> tuple[dict[str, Tensor], dict[str, float]]:
        c = self.cfg
        t = int(batch["t"][0])
        pred, alpha = self.render(t)
        target, mask = self.frames[t], self.masks[t]
        l1 = (pred - target).abs().mean()
        terms = {
            "l1": l1,
            "ssim": c.ssim_weight * ssim_loss(pred[None], target[None], 11),
            "mask": c.mask_weight * (alpha - mask).abs().mean(),
            "offset": c.offset_weight * ((self.offset.norm(dim=-1) / self.texel_size) ** 2).mean(),
            "scale": c.scale_weight
            * F.relu(self.log_scales.exp() / self.texel_size[:, None] - c.max_scale_texels).mean(),
        }
        if self.refining:
            deltas = (self.pose_delta, self.camera_delta)
            terms["refine_smooth"] = c.refine_smooth_weight * sum(trajectory_roughness(d) for d in deltas)
            terms["refine"] = c.refine_weight * sum(correction_size(d) for d in deltas)
        with torch.no_grad():
            mse = float(((pred - target) ** 2 * mask).sum() / (3 * mask.sum()).clamp(min=1))
        return terms, {"mse": mse}

    @torch.no_grad()
    def extra_metrics(self, clip: Clip, cv: Bake) -> dict[str, Any]:
        """PSNR/SSIM over the person mask, of the person rendered over BLACK, and the landmark error.

        Full-frame figures flatter the fit (its background is the source frame); inside the mask the
        person is rendered over black, so a part of the person the Gaussians do not cover (hair, a
        torso beyond a head-only body) counts as an error instead of showing the source through.
        """
        figures: dict[str, Any] = {}
        mask = self.masks.cpu()
        if mask.any():  # a chunk at a time: the clip over black is never held whole
            black = torch.zeros(3, self.H, self.W)
            chunks = (
                (cv.render(ids, background=black).clamp(0, 1), clip.frames[ids], mask[ids])
                for ids in frame_chunks(self.T, SSIM_BATCH)
            )
            masked_psnr, masked_ssim = psnr_ssim(chunks)
            figures["masked_psnr"] = round(masked_psnr, 3)
            figures["masked_ssim"] = round(masked_ssim, 4)
        if self.landmark_error_px is not None:
            figures["landmark_error_px"] = round(self.landmark_error_px, 3)
        return figures

    @torch.no_grad()
    def bake(self) -> EditablePortrait:
        tracking = self.tracking()
        return EditablePortrait(
            gaussians={k: v.detach().cpu().clone() for k, v in self.gaussian_params().items()},
            decoder_state={k: v.detach().cpu().clone() for k, v in self.decoder.state_dict().items()},
            feature_dim=self.cfg.feature_dim,
            decoder_hidden=self.cfg.decoder_hidden,
            tracking=tracking.to("cpu"),
            body_spec=body_spec(self.body, self.cfg.body_model_dir, self.cfg.body_variant),
            background=MappedFrames(self.frames.cpu()),  # read only, as the fit's frames: shared, not copied
            fps=self.fps,
            body=self.body,
            keep_renders=True,
        )

    @torch.no_grad()
    def render_all(self) -> tuple[Tensor, Tensor]:
        """Every frame: T×3×H×W composites and T×1×H×W alphas."""
        return render_frames(self.render, list(range(self.T)))
