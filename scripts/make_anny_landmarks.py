"""Place the 51 iBUG face landmarks (points 17..67) on anny's mesh, so anny can be tracked like SMPL-X.

anny ships no face landmarks. This renders the rest-pose mesh from the front and from a few slightly
turned views (Lambert shading, skin colour, dark irises from anny's own part segmentation), runs the
mediapipe detector on the renders through ``detect_clip``, casts a ray through each detected
landmark onto the mesh, takes the per-landmark median of the hit points over the views (one view's
jitter matters less) and snaps it back onto the surface along the frontal camera's ray. The result
is ``representations/portrait/data/anny_<variant>_landmarks.json``: a triangle and barycentric
coordinates per landmark, which ``AnnyBody`` loads.

    CANON_EDIT_DETECTOR_PYTHON=/tmp/mpvenv/bin/python python scripts/make_anny_landmarks.py \
        --variant all --preview /tmp/anny_landmarks
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from canon_edit.atomic import write_json  # noqa: E402
from canon_edit.errors import UserError  # noqa: E402
from canon_edit_representations.portrait.body import AnnyBody, rotation_matrix  # noqa: E402
from canon_edit_representations.portrait.detect import detect_clip  # noqa: E402
from canon_edit_representations.portrait.tracking import look_at_viewmat  # noqa: E402

SIZE = 512  # render side in pixels
FOCAL = 2.0 * SIZE  # a long portrait lens: little perspective distortion
VIEWS = ((0.0, 0.0), (-12.0, 0.0), (12.0, 0.0), (0.0, -8.0), (0.0, 8.0))  # (yaw, pitch) degrees, front first
SKIN = (0.87, 0.68, 0.57)
PART_COLOURS = {  # anny's body-part segmentation labels that are not skin (eye fronts are painted)
    "eye_cavity.L": (0.35, 0.2, 0.18),
    "eye_cavity.R": (0.35, 0.2, 0.18),
    "mouth_cavity": (0.3, 0.1, 0.1),
    "tongue": (0.6, 0.3, 0.3),
}
IRIS_RGB, SCLERA_RGB = (0.3, 0.18, 0.1), (0.9, 0.88, 0.85)
PUPIL, IRIS = 0.0022, 0.0058  # metres from the front of the eyeball
LIGHT = np.array([-0.3, 0.4, 1.0]) / np.linalg.norm([-0.3, 0.4, 1.0])  # from the camera, above left
BACKGROUND = 0.55


def triangle_parts(body: AnnyBody) -> list[str]:
    """anny's body-part label of each triangle, looked up in its segmentation image at the UV centroid."""
    import anny

    folder = Path(anny.__file__).parent / "data" / "segmentation"
    image = np.asarray(Image.open(folder / "body_parts_segmentation.png").convert("RGB"))
    colours = yaml.safe_load((folder / "body_parts_segmentation.yaml").read_text())["colors"]
    centre = body.uv[body.uv_faces].mean(1).numpy()  # v already points down
    H, W = image.shape[:2]
    px = image[
        np.clip((centre[:, 1] * H).astype(int), 0, H - 1), np.clip((centre[:, 0] * W).astype(int), 0, W - 1)
    ]
    labels = np.full(len(px), "skin", dtype=object)
    for name, rgb in colours.items():
        labels[(px == np.array(rgb)).all(1)] = name
    return labels.tolist()


def eye_pole(points: np.ndarray) -> np.ndarray:
    """The front of an eyeball looking straight ahead (+z), from a least-squares sphere through its front."""
    A = np.concatenate([2 * points, np.ones((len(points), 1))], 1)
    solution = np.linalg.lstsq(A, (points**2).sum(1), rcond=None)[0]
    centre = solution[:3]
    radius = math.sqrt(solution[3] + centre @ centre)
    return centre + np.array([0.0, 0.0, radius])


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    n = np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]])
    out = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(out, faces[:, k], n)
    return out / np.linalg.norm(out, axis=1, keepdims=True).clip(1e-12)


def rasterize(cam: np.ndarray, faces: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """z-buffer: camera-space vertices → the triangle id (-1 = none) and screen barycentrics per pixel."""
    uv = cam[:, :2] / cam[:, 2:] * K[[0, 1], [0, 1]] + K[:2, 2]
    depth = np.full((SIZE, SIZE), np.inf)
    tri_id = np.full((SIZE, SIZE), -1)
    bary = np.zeros((SIZE, SIZE, 3))
    tri = uv[faces]  # F×3×2
    lo = np.floor(tri.min(1) - 0.5).astype(int).clip(0, SIZE)
    hi = np.ceil(tri.max(1) - 0.5).astype(int).clip(-1, SIZE - 1) + 1
    for f in np.nonzero((hi > lo).all(1) & (cam[faces, 2] > 0).all(1))[0]:
        (x0, y0), (x1, y1) = lo[f], hi[f]
        ys, xs = np.mgrid[y0:y1, x0:x1] + 0.5
        a, b, c = tri[f]
        area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        if abs(area) < 1e-12:
            continue
        w1 = ((xs - a[0]) * (c[1] - a[1]) - (ys - a[1]) * (c[0] - a[0])) / area
        w2 = ((b[0] - a[0]) * (ys - a[1]) - (b[1] - a[1]) * (xs - a[0])) / area
        w = np.stack([1 - w1 - w2, w1, w2], -1)
        z = 1 / (w / cam[faces[f], 2]).sum(-1)  # 1/z is linear in screen space
        hit = (w >= 0).all(-1) & (z < depth[y0:y1, x0:x1])
        depth[y0:y1, x0:x1][hit] = z[hit]
        tri_id[y0:y1, x0:x1][hit] = f
        bary[y0:y1, x0:x1][hit] = w[hit]
    return tri_id, bary


def render(vertices: np.ndarray, faces: np.ndarray, colours: np.ndarray, eyes: np.ndarray, poles: np.ndarray,
           viewmat: np.ndarray, K: np.ndarray) -> torch.Tensor:  # fmt: skip
    """A Lambert-shaded 3×SIZE×SIZE image in [0, 1] of the mesh seen through `viewmat`, `K`.

    Triangles get `colours` (F×3), except the eyeballs' fronts (`eyes`, F bools): painted per pixel by
    the distance to their front-most points (`poles`, 2×3) as pupil, iris and sclera, so mediapipe
    sees eyes and not two dark holes.
    """
    cam = vertices @ viewmat[:3, :3].T + viewmat[:3, 3]
    tri_id, bary = rasterize(cam, faces, K)
    normals = vertex_normals(vertices, faces) @ viewmat[:3, :3].T * np.array([1, -1, -1])  # → y up, z to eye
    inside = tri_id >= 0
    n = (normals[faces[tri_id[inside]]] * bary[inside][..., None]).sum(1)
    n /= np.linalg.norm(n, axis=1, keepdims=True).clip(1e-12)
    shade = 0.3 + 0.7 * (n @ LIGHT).clip(0, None)
    albedo = colours[tri_id[inside]]
    on_eye = eyes[tri_id[inside]]
    points = (vertices[faces[tri_id[inside][on_eye]]] * bary[inside][on_eye][..., None]).sum(1)
    r = np.linalg.norm(points[:, None] - poles[None], axis=-1).min(1)
    albedo[on_eye] = np.where((r < PUPIL)[:, None], 0.03, np.where((r < IRIS)[:, None], IRIS_RGB, SCLERA_RGB))
    image = np.full((SIZE, SIZE, 3), BACKGROUND)
    image[inside] = albedo * shade[:, None]
    return torch.from_numpy(image.clip(0, 1)).permute(2, 0, 1).float()


def ray_cast(vertices: np.ndarray, faces: np.ndarray, origin: np.ndarray, dirs: np.ndarray):
    """Möller-Trumbore against every triangle: the nearest hit's triangle and barycentrics (NaN: missed)."""
    v0, v1, v2 = (vertices[faces[:, k]] for k in range(3))
    e1, e2 = v1 - v0, v2 - v0
    p = np.cross(dirs[:, None], e2[None])  # R×F×3
    det = (e1[None] * p).sum(-1)
    inv = 1 / np.where(np.abs(det) < 1e-15, np.nan, det)
    s = origin - v0
    u = (s[None] * p).sum(-1) * inv
    q = np.cross(s, e1)
    v = (dirs @ q.T) * inv
    t = (e2 * q).sum(-1)[None] * inv
    ok = (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
    t = np.where(ok, t, np.inf)
    f = t.argmin(1)
    r = np.arange(len(dirs))
    bary = np.stack([1 - u[r, f] - v[r, f], u[r, f], v[r, f]], -1)
    bary[~np.isfinite(t[r, f])] = np.nan  # the ray slipped through a seam between skin and eyeball
    return f, bary


def pixel_rays(points: np.ndarray, viewmat: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera centre and world-space ray directions through pixel positions (N×2)."""
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    d = np.concatenate([(points - K[:2, 2]) / K[[0, 1], [0, 1]], np.ones((len(points), 1))], 1)
    return -R.T @ t, d @ R


def place_landmarks(variant: str, python: str | None, preview: Path | None) -> dict:
    body = AnnyBody(variant)
    with torch.no_grad():
        rest = body(**body.zero_params(1)).vertices[0].double().numpy()
    faces = body.faces.numpy()
    parts = triangle_parts(body)
    colours = np.array([PART_COLOURS.get(p, SKIN) for p in parts])
    eyes = np.array([p.startswith("eye_front") for p in parts])
    poles = np.stack([eye_pole(rest[np.unique(faces[[p == f"eye_front.{s}" for p in parts]])]) for s in "LR"])
    head = np.unique(faces[[p == "head" for p in parts]])
    centre = poles.mean(0) - np.array([0.0, 0.03, 0.0])  # between the eyes and the mouth
    width = np.ptp(rest[head, 0])  # ear to ear: frame the whole head
    distance = FOCAL * 1.15 * width / SIZE
    viewmat = look_at_viewmat(torch.tensor(centre + [0.0, 0.0, distance]), torch.tensor(centre)).numpy()
    K = np.array([[FOCAL, 0, SIZE / 2], [0, FOCAL, SIZE / 2], [0, 0, 1]])

    posed, posed_poles = [], []
    for yaw, pitch in VIEWS:
        R = rotation_matrix(torch.tensor([[0.0, math.radians(yaw), 0.0], [math.radians(pitch), 0.0, 0.0]]))
        R = (R[0] @ R[1]).double().numpy()
        posed.append((rest - centre) @ R.T + centre)
        posed_poles.append((poles - centre) @ R.T + centre)
    views = zip(posed, posed_poles, strict=True)
    images = torch.stack([render(v, faces, colours, eyes, p, viewmat, K) for v, p in views])
    detections = detect_clip(images, python=python, show_progress=False)
    found = torch.isfinite(detections.face).flatten(1).all(1).numpy()
    if not found[0]:
        raise UserError(
            f"mediapipe found no face on the frontal anny {variant} render; cannot place landmarks"
        )
    points = []
    for k in np.nonzero(found)[0]:
        origin, dirs = pixel_rays(detections.face[k].double().numpy(), viewmat, K)
        f, bary = ray_cast(posed[k], faces, origin, dirs)
        points.append((rest[faces[f]] * bary[..., None]).sum(1))  # the same surface point at rest
    median = np.nanmedian(np.stack(points), 0)
    cam = median @ viewmat[:3, :3].T + viewmat[:3, 3]
    origin, dirs = pixel_rays(cam[:, :2] / cam[:, 2:] * FOCAL + SIZE / 2, viewmat, K)
    f, bary = ray_cast(rest, faces, origin, dirs)
    if np.isnan(bary).any():
        raise UserError(
            f"landmarks {np.nonzero(np.isnan(bary).any(1))[0] + 17} of anny {variant} fell off its mesh"
        )
    if preview is not None:
        placed = (rest[faces[f]] * bary[..., None]).sum(1)
        write_preview(
            preview / f"anny_{variant}_landmarks.png",
            images[0],
            placed,
            detections.face[0].numpy(),
            viewmat,
            K,
        )
    print(f"anny {variant}: face found in {int(found.sum())}/{len(VIEWS)} views", file=sys.stderr)
    return {
        "format": "canon-edit-anny-landmarks",
        "version": 1,
        "variant": variant,
        "anny_version": version("anny"),
        "convention": "iBUG-68 points 17..67 (brows 10, nose 9, eyes 12, mouth 20), as SMPL-X's landmarks",
        "command": "python scripts/make_anny_landmarks.py " + shlex.join(sys.argv[1:]),
        "n_vertices": body.n_vertices,
        "n_faces": len(faces),
        "views_deg": [list(v) for v in VIEWS],
        "views_with_face": int(found.sum()),
        "landmark_faces": f.tolist(),
        "landmark_bary": np.round(bary, 6).tolist(),
    }


def write_preview(
    path: Path,
    image: torch.Tensor,
    points: np.ndarray,
    detected: np.ndarray,
    viewmat: np.ndarray,
    K: np.ndarray,
) -> None:
    """The frontal render at 2× size: mediapipe's detections (red rings), placed landmarks (green)."""
    cam = points @ viewmat[:3, :3].T + viewmat[:3, 3]
    placed = cam[:, :2] / cam[:, 2:] * K[[0, 1], [0, 1]] + K[:2, 2]
    pil = Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    pil = pil.resize((2 * SIZE, 2 * SIZE))
    draw = ImageDraw.Draw(pil)
    for x, y in 2 * detected:
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], outline=(255, 0, 0))
    for x, y in 2 * placed:
        draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(0, 255, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    pil.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", choices=("head", "fullbody", "all"), default="all")
    parser.add_argument("--python", help="the mediapipe interpreter (default: $CANON_EDIT_DETECTOR_PYTHON)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "representations" / "portrait" / "data")
    parser.add_argument("--preview", type=Path, help="write the frontal render with the landmarks here")
    args = parser.parse_args()
    for variant in ("head", "fullbody") if args.variant == "all" else (args.variant,):
        result = place_landmarks(variant, args.python, args.preview)
        write_json(args.out_dir / f"anny_{variant}_landmarks.json", result)


if __name__ == "__main__":
    main()
