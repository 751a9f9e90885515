"""The tracked mesh's surface as a probe of small, flat, opaque Gaussians: where relighting measures.

A fitted avatar places its Gaussians to reproduce colour, not the surface. Where no loss holds them
they grow, turn and overlap across depth edges (nose over cheek, chin over neck), so the normals
they carry, blended per pixel, miss the surface the source shows, and each one's colour in a frame
is the source averaged over a footprint that changes with the view. Relighting needs the surface:
the probe binds one Gaussian per texel, about `TEXEL_PIXELS` wide in the image, flat on the mesh,
over the triangles the avatar covers. It is rebuilt from the body, the tracking and the avatar's
triangles, so nothing of it is stored.

Measured with bench/portrait_relight_truth.py before and after the probe (bench/RESULTS.md): the
light fitted to the fitted Gaussians' colours was 6.6% off, to the probe's 2.3%; the ratio-relit fit
came 23.5 dB, then 26.3 dB, from the true render under a new light.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .body import BodyModel
from .camera import Camera
from .gaussians import texel_binding, texel_sizes
from .raster import rasterize, splat_sums
from .render import posed_gaussians
from .tracking import Tracking

TEXEL_PIXELS = 0.7  # a probe texel's width in the image, at the mesh's median depth in frame 0
MAX_GAUSSIANS = 60_000  # the probe's resolution is lowered to stay under this
_REFERENCE = 128  # the UV resolution texel sizes are measured at before choosing the probe's
OPACITY = 0.99


@torch.no_grad()
def visible_faces(body: BodyModel, tracking: Tracking, max_frames: int = 16) -> Tensor:
    """Triangles facing some tracked camera with their centre inside its image: where Gaussians go."""
    frames = torch.linspace(0, tracking.T - 1, min(tracking.T, max_frames)).round().long().unique()
    seen = torch.zeros(len(body.faces), dtype=torch.bool, device=body.faces.device)
    out = body(tracking.pose[frames], tracking.expression[frames], tracking.shape)
    for i, t in enumerate(frames.tolist()):
        R, tr = tracking.viewmat[t, :3, :3], tracking.viewmat[t, :3, 3]
        cam = out.vertices[i] @ R.T + tr
        tri = cam[body.faces]
        normal = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
        centre = tri.mean(1)
        facing = (normal * centre).sum(-1) < 0
        z = centre[:, 2].clamp(min=1e-6)
        u = tracking.K[0, 0] * centre[:, 0] / z + tracking.K[0, 2]
        v = tracking.K[1, 1] * centre[:, 1] / z + tracking.K[1, 2]
        inside = (
            (centre[:, 2] > 0) & (u > -2) & (u < tracking.width + 2) & (v > -2) & (v < tracking.height + 2)
        )
        seen |= facing & inside
    return seen


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """V×3 unit normals: area-weighted sums of the adjacent faces' normals."""
    tri = vertices[faces]
    face = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    normals = torch.zeros_like(vertices).index_add_(0, faces.reshape(-1), face.repeat_interleave(3, 0))
    return F.normalize(normals, dim=-1)


def camera_vertex_normals(body: BodyModel, tracking: Tracking, t: int) -> Tensor:
    """V×3 unit vertex normals of frame t's posed mesh, in its tracked camera coordinates."""
    vertices = body(tracking.pose[t : t + 1], tracking.expression[t : t + 1], tracking.shape).vertices[0]
    return vertex_normals(vertices, body.faces) @ tracking.viewmat[t, :3, :3].T


def normals_at(normals: Tensor, faces: Tensor, tri_id: Tensor, bary: Tensor) -> Tensor:
    """N×3 unit normals at barycentric points, interpolated from the vertex `normals` (V×3)."""
    return F.normalize((normals[faces[tri_id]] * bary[..., None]).sum(1), dim=-1)


def gaussian_normals(body: BodyModel, tracking: Tracking, t: int, tri_id: Tensor, bary: Tensor) -> Tensor:
    """N×3 unit normals of the posed mesh at each Gaussian, in frame t's tracked camera coordinates."""
    return normals_at(camera_vertex_normals(body, tracking, t), body.faces, tri_id, bary)


@dataclass(frozen=True)
class SurfaceProbe:
    tri_id: Tensor  # N: the triangle of each probe Gaussian
    bary: Tensor  # N×3: its barycentric point
    scales: Tensor  # N×3: flat on the surface, TEXEL_PIXELS wide

    @classmethod
    def covering(cls, body: BodyModel, tracking: Tracking, triangles: Tensor) -> SurfaceProbe:
        """The probe over the visible triangles and `triangles` (the avatar's tri_id), sized by the camera."""
        faces = visible_faces(body, tracking)  # whole triangles: the avatar's texels miss the small ones
        faces[triangles.unique().long()] = True
        zeros = torch.zeros_like
        rest = body(zeros(tracking.pose[:1]), zeros(tracking.expression[:1]), tracking.shape).vertices[0]
        posed = body(tracking.pose[:1], tracking.expression[:1], tracking.shape).vertices[0]
        R, t = tracking.viewmat[0, :3, :3], tracking.viewmat[0, :3, 3]
        depth = (posed[body.faces[faces]].mean(1) @ R.T + t)[:, 2].median().clamp(min=1e-6)
        tri_id, _ = texel_binding(body.uv, body.uv_faces, _REFERENCE, faces)
        texel = texel_sizes(rest, body.faces, body.uv, body.uv_faces, tri_id, _REFERENCE).median()
        pixels = float(texel * tracking.K[0, 0] / depth)  # one reference texel's width in pixels
        resolution = max(16, round(_REFERENCE * pixels / TEXEL_PIXELS))
        expected = len(tri_id) * (resolution / _REFERENCE) ** 2
        if expected > MAX_GAUSSIANS:
            resolution = int(resolution * (MAX_GAUSSIANS / expected) ** 0.5)
        tri_id, bary = texel_binding(body.uv, body.uv_faces, resolution, faces)
        size = texel_sizes(rest, body.faces, body.uv, body.uv_faces, tri_id, resolution)
        return cls(tri_id, bary, size[:, None] * torch.tensor([0.8, 0.8, 0.3]))

    def __len__(self) -> int:
        return len(self.tri_id)

    def normals(self, body: BodyModel, tracking: Tracking, t: int) -> Tensor:
        """N×3 unit mesh normals at the probe's points, in frame t's tracked camera coordinates."""
        return gaussian_normals(body, tracking, t, self.tri_id, self.bary)

    def _posed(self, body: BodyModel, tracking: Tracking, t: int) -> tuple[Tensor, Tensor]:
        n = len(self)
        flat = torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(n, 4)
        return posed_gaussians(
            body, tracking.pose[t], tracking.expression[t], tracking.shape, self.tri_id, self.bary,
            torch.zeros(n, 3), flat,
        )  # fmt: skip

    def splat(
        self, body: BodyModel, tracking: Tracking, t: int, values: Tensor, camera: Camera
    ) -> tuple[Tensor, Tensor]:
        """Point `values` (N×C) on frame t's surface seen from `camera`: C×H×W premultiplied, 1×H×W alpha."""
        means, quats = self._posed(body, tracking, t)
        image, alpha = rasterize(means, quats, self.scales, torch.full((len(self),), OPACITY), values, camera)
        return image.permute(2, 0, 1), alpha.permute(2, 0, 1)

    def sums(self, body: BodyModel, tracking: Tracking, t: int, images: Tensor) -> Tensor:
        """N×C: per probe point, Σ_pixels w(p)·images_c(p) over frame t in its tracked camera."""
        with torch.no_grad():
            means, quats = self._posed(body, tracking, t)
        opacity = torch.full((len(self),), OPACITY)
        return splat_sums(means, quats, self.scales, opacity, tracking.camera(t), images)
