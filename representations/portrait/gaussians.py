"""Gaussians bound to a mesh: triangle id + barycentric coordinates + a learned offset.

A Gaussian's centre is the barycentric point of its triangle plus its offset expressed in the
triangle's frame (tangent, bitangent, normal), and its rotation is the triangle's frame times its
own local rotation. So any deformation of the mesh (skinning, expression) carries the Gaussians
with it, and an edit of the Gaussians follows the person's motion. Quaternions are w, x, y, z.

The PLY layout is the standard 3DGS one (x y z, nx ny nz, f_dc_0..2, opacity logit, log scales,
rot_0..3) so any 3DGS viewer opens the canonical pose, plus binding columns (tri_id, bary_0..2,
off_0..2) and the neural features (feat_0..).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from canon_edit.atomic import atomic_path
from canon_edit.errors import UserError

SH_C0 = 0.28209479177387814  # degree-0 spherical harmonic: rgb = 0.5 + SH_C0 * f_dc


def triangle_frames(vertices: Tensor, faces: Tensor) -> Tensor:
    """...×V×3 vertices, F×3 faces → ...×F×3×3 orthonormal frames, columns (edge, bitangent, normal)."""
    v0, v1, v2 = (vertices[..., faces[:, k], :] for k in range(3))
    e1 = F.normalize(v1 - v0, dim=-1, eps=1e-12)
    n = F.normalize(torch.cross(v1 - v0, v2 - v0, dim=-1), dim=-1, eps=1e-12)
    e2 = torch.cross(n, e1, dim=-1)
    return torch.stack([e1, e2, n], -1)


def quat_to_matrix(q: Tensor) -> Tensor:
    """...×4 (w, x, y, z), any norm → ...×3×3 rotation."""
    w, x, y, z = F.normalize(q, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        -1,
    ).reshape(*q.shape[:-1], 3, 3)  # fmt: skip


def matrix_to_quat(R: Tensor) -> Tensor:
    """...×3×3 rotation → ...×4 unit quaternion (w ≥ 0), stable for every rotation."""
    m00, m11, m22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    r21, r12, r02, r20, r10, r01 = (
        R[..., 2, 1],
        R[..., 1, 2],
        R[..., 0, 2],
        R[..., 2, 0],
        R[..., 1, 0],
        R[..., 0, 1],
    )
    # four algebraically equal forms (×4·component); the one with the largest pivot is well-conditioned
    diag = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1
    )
    cands = torch.stack(
        [
            torch.stack([diag[..., 0], r21 - r12, r02 - r20, r10 - r01], -1),
            torch.stack([r21 - r12, diag[..., 1], r01 + r10, r02 + r20], -1),
            torch.stack([r02 - r20, r01 + r10, diag[..., 2], r12 + r21], -1),
            torch.stack([r10 - r01, r02 + r20, r12 + r21, diag[..., 3]], -1),
        ],
        -2,
    )
    best = diag.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = F.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def bind(
    vertices: Tensor, faces: Tensor, tri_id: Tensor, bary: Tensor, offset: Tensor, quat: Tensor
) -> tuple[Tensor, Tensor]:
    """Posed mesh ...×V×3 → Gaussian centres ...×N×3 and world quaternions ...×N×4.

    ``tri_id`` (N,), ``bary`` N×3, ``offset`` N×3 in the triangle frame, ``quat`` N×4 local rotation.
    """
    tri = faces[tri_id]  # N×3
    corners = vertices[..., tri, :]  # ...×N×3×3
    base = (corners * bary[..., None]).sum(-2)
    frames = triangle_frames(vertices, faces[tri_id])  # ...×N×3×3
    means = base + (frames @ offset[..., None]).squeeze(-1)
    rot = frames @ quat_to_matrix(quat)
    return means, matrix_to_quat(rot)


def texel_binding(
    uv: Tensor, uv_faces: Tensor, resolution: int, faces_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """One Gaussian per texel of a `resolution`² UV map covered by a UV triangle (PortraitGen).

    Returns ``tri_id`` (N,) and barycentrics N×3 of each covered texel centre in its UV triangle;
    barycentrics are shared by the 3D triangle, so each texel maps to a point of the surface.
    ``faces_mask`` (F,) bool keeps only some triangles (e.g. the visible front).
    """
    tri_uv = uv[uv_faces] * resolution  # F×3×2 in texel units
    ids = torch.arange(len(uv_faces))
    if faces_mask is not None:
        tri_uv, ids = tri_uv[faces_mask], ids[faces_mask]
    lo = (tri_uv.amin(1) - 0.5).ceil().clamp(0, resolution - 1).long()
    hi = (tri_uv.amax(1) - 0.5).floor().clamp(0, resolution - 1).long()
    size = (hi - lo + 1).clamp(min=0)
    count = size[:, 0] * size[:, 1]
    owner = torch.repeat_interleave(torch.arange(len(ids)), count)
    local = torch.arange(int(count.sum())) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
    px = lo[owner, 0] + local % size[owner, 0]
    py = lo[owner, 1] + local // size[owner, 0]
    p = torch.stack([px, py], -1).float() + 0.5
    a, b, c = tri_uv[owner].unbind(1)
    v0, v1, v2 = b - a, c - a, p - a
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    ok_den = den.abs() > 1e-12
    den = torch.where(ok_den, den, torch.ones_like(den))
    w1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
    w2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
    bary = torch.stack([1 - w1 - w2, w1, w2], -1)
    inside = ok_den & (bary >= -1e-6).all(-1)
    texel = (py * resolution + px)[inside]
    owner, bary = owner[inside], bary[inside].clamp(min=0)
    bary = bary / bary.sum(-1, keepdim=True)
    order = torch.argsort(texel, stable=True)  # a texel on a shared edge keeps its first triangle
    texel, owner, bary = texel[order], owner[order], bary[order]
    first = torch.ones_like(texel, dtype=torch.bool)
    first[1:] = texel[1:] != texel[:-1]
    return ids[owner[first]], bary[first]


PLY_BASE = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
PLY_BASE += ["scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
PLY_BINDING = ["bary_0", "bary_1", "bary_2", "off_0", "off_1", "off_2"]


def write_ply(path: str | Path, gaussians: dict[str, Tensor]) -> None:
    """Write Gaussians as a binary 3DGS PLY plus binding and feature columns.

    ``gaussians``: means N×3 (canonical pose), quats N×4 (world), log_scales N×3, opacity_logits (N,),
    rgb N×3 in [0, 1], tri_id (N,), bary N×3, offset N×3, quats_local N×4, features N×C (optional).
    """
    g = {k: v.detach().cpu().float() for k, v in gaussians.items()}
    n = len(g["means"])
    feats = g.get("features", torch.zeros(n, 0))
    f_dc = (g["rgb"] - 0.5) / SH_C0
    columns = [g["means"], torch.zeros(n, 3), f_dc, g["opacity_logits"][:, None], g["log_scales"], g["quats"]]
    columns += [g["bary"], g["offset"], g["quats_local"], feats]
    names = (
        PLY_BASE
        + PLY_BINDING
        + [f"lrot_{i}" for i in range(4)]
        + [f"feat_{i}" for i in range(feats.shape[1])]
    )
    dtype = [(name, "<f4") for name in names] + [("tri_id", "<i4")]
    data = np.empty(n, dtype=dtype)
    flat = torch.cat(columns, 1).numpy()
    for i, name in enumerate(names):
        data[name] = flat[:, i]
    data["tri_id"] = g["tri_id"].numpy().astype(np.int32)
    header = "ply\nformat binary_little_endian 1.0\n" + f"element vertex {n}\n"
    header += "".join(f"property {'int' if t == '<i4' else 'float'} {name}\n" for name, t in dtype)
    header += "end_header\n"
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(data.tobytes())


def read_ply(path: str | Path) -> dict[str, Tensor]:
    """Read a PLY written by `write_ply` (the binding columns are required to animate it)."""
    path = Path(path)
    raw = path.read_bytes()
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply\n") or end < 0:
        raise UserError(f"{path} is not a PLY file; give the gaussians.ply of a portrait bake")
    header = raw[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in header:
        raise UserError(f"{path} is not a binary little-endian PLY; re-export it from canon-edit")
    n = next(int(line.split()[2]) for line in header if line.startswith("element vertex"))
    types = {"float": "<f4", "int": "<i4", "uchar": "u1", "double": "<f8"}
    dtype = [(line.split()[2], types[line.split()[1]]) for line in header if line.startswith("property")]
    names = [d[0] for d in dtype]
    missing = [k for k in ("tri_id", "bary_0", "off_0", "lrot_0") if k not in names]
    if missing:
        raise UserError(
            f"{path} has no binding columns ({', '.join(missing)}); it is not a canon-edit portrait PLY"
        )
    data = np.frombuffer(raw, dtype=dtype, count=n, offset=end + len(b"end_header\n"))

    def cols(*keys: str) -> Tensor:
        return torch.from_numpy(np.stack([data[k].astype(np.float32) for k in keys], -1))

    n_feat = sum(name.startswith("feat_") for name in names)
    return {
        "means": cols("x", "y", "z"),
        "quats": cols("rot_0", "rot_1", "rot_2", "rot_3"),
        "log_scales": cols("scale_0", "scale_1", "scale_2"),
        "opacity_logits": cols("opacity")[:, 0],
        "rgb": cols("f_dc_0", "f_dc_1", "f_dc_2") * SH_C0 + 0.5,
        "tri_id": torch.from_numpy(data["tri_id"].astype(np.int64)),
        "bary": cols("bary_0", "bary_1", "bary_2"),
        "offset": cols("off_0", "off_1", "off_2"),
        "quats_local": cols("lrot_0", "lrot_1", "lrot_2", "lrot_3"),
        "features": cols(*[f"feat_{i}" for i in range(n_feat)]) if n_feat else torch.zeros(n, 0),
    }


def texel_sizes(
    vertices: Tensor, faces: Tensor, uv: Tensor, uv_faces: Tensor, tri_id: Tensor, resolution: int
) -> Tensor:
    """World length of one texel on each Gaussian's triangle: √(3D area / UV area in texels).

    Initial Gaussian scales come from it, so neighbouring texel Gaussians just overlap.
    """
    v = vertices[faces[tri_id]]
    area3d = 0.5 * torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1).norm(dim=-1)
    t = uv[uv_faces[tri_id]] * resolution
    e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    area_uv = 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).abs()
    return (area3d / area_uv.clamp(min=1e-8)).sqrt()
