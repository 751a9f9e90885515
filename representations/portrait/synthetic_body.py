"""A synthetic SMPL-X model file, for tests, benchmarks and the procedural portrait (never for users).

It has the full key set of SMPL-X's files (capsule torso, neck, a head ellipsoid with a nose and a
hinged jaw, eyes; shape, expression and pose blend shapes; a UV map), so the real SMPL-X loading path
runs without the registration-gated model files.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .body import SMPLX_JOINTS, SMPLX_N_DYNAMIC, SMPLX_PARENTS


def _grid(n_u: int, n_v: int, v_range: tuple[float, float], rect: tuple[float, float, float, float]):
    """A closed-in-u, open-in-v parametric grid: (u, v) parameters, faces, UVs placed in `rect`."""
    u = np.linspace(0, 1, n_u + 1)  # the seam column is duplicated so the UV chart is a rectangle
    v = np.linspace(*v_range, n_v)
    uu, vv = np.meshgrid(u, v)  # n_v×(n_u+1)
    idx = np.arange(uu.size).reshape(uu.shape)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3), np.stack([b, c, d], -1).reshape(-1, 3)])
    x0, y0, x1, y1 = rect
    vn = (vv - v_range[0]) / (v_range[1] - v_range[0])
    uv = np.stack([x0 + uu * (x1 - x0), y0 + (1 - vn) * (y1 - y0)], -1).reshape(-1, 2)
    return uu.reshape(-1), vv.reshape(-1), faces, uv


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0, 1)
    return x * x * (3 - 2 * x)


def _hats(y: np.ndarray, knots: list[float]) -> np.ndarray:
    """Piecewise-linear partition of unity over sorted heights `knots`: skinning along a chain."""
    w = np.zeros((len(y), len(knots)))
    yc = np.clip(y, knots[0], knots[-1])
    for i in range(len(knots) - 1):
        inside = (yc >= knots[i]) & (yc <= knots[i + 1])
        t = (yc[inside] - knots[i]) / (knots[i + 1] - knots[i])
        w[inside, i] = 1 - t
        w[inside, i + 1] = t
    return w


HEAD_CENTER = np.array([0.0, 0.20, 0.0])
HEAD_RADII = np.array([0.085, 0.11, 0.095])
EYE_CENTERS = {"left_eye": np.array([0.032, 0.225, 0.080]), "right_eye": np.array([-0.032, 0.225, 0.080])}
EYE_RADIUS = 0.013
MOUTH_Y = 0.155  # below this line (front of the head) the skin follows the jaw


def _head_point(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Ellipsoid head with a nose bump; lon 0 faces +z, lat runs from the crown down."""
    d = np.stack([np.sin(lat) * np.sin(lon), np.cos(lat), np.sin(lat) * np.cos(lon)], -1)
    p = HEAD_CENTER + d * HEAD_RADII
    nose = 0.022 * np.exp(-((lon / 0.22) ** 2) - ((p[:, 1] - 0.19) / 0.025) ** 2)
    return p + nose[:, None] * d


def synthetic_smplx_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Every array ``smplx.SMPLX`` reads, for a ~10.5k-vertex upper body with a posable head and jaw."""
    rng = np.random.default_rng(seed)
    parts: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # name, xyz, faces, uv, u

    u, v, f, uv = _grid(96, 56, (0.0, 1.0), (0.6, 0.0, 1.0, 1.0))
    shrink = np.where(v < 0.8, 1.0, 0.3 + 0.7 * np.cos((v - 0.8) / 0.2 * math.pi / 2))
    ang = 2 * math.pi * u
    torso = np.stack([0.17 * shrink * np.sin(ang), -0.60 + 0.63 * v, 0.10 * shrink * np.cos(ang)], -1)
    parts.append(("torso", torso, f[:, [0, 2, 1]], uv, u))  # v runs up here: wind outward like the head

    u, v, f, uv = _grid(64, 16, (0.0, 1.0), (0.0, 0.6, 0.6, 0.8))
    ang = 2 * math.pi * u
    neck = np.stack([0.05 * np.sin(ang), -0.02 + 0.14 * v, 0.05 * np.cos(ang)], -1)
    parts.append(("neck", neck, f[:, [0, 2, 1]], uv, u))

    u, v, f, uv = _grid(96, 40, (0.05, 0.95), (0.0, 0.0, 0.6, 0.6))
    head = _head_point(2 * math.pi * u - math.pi, math.pi * v)
    parts.append(("head", head, f, uv, u))

    for k, (eye, center) in enumerate(EYE_CENTERS.items()):
        u, v, f, uv = _grid(16, 10, (0.1, 0.9), (0.3 * k, 0.8, 0.3 * k + 0.3, 1.0))
        lon, lat = 2 * math.pi * u, math.pi * v
        d = np.stack([np.sin(lat) * np.sin(lon), np.cos(lat), np.sin(lat) * np.cos(lon)], -1)
        parts.append((eye, center + EYE_RADIUS * d, f, uv, u))

    verts, faces, uvs, labels, seams, offset = [], [], [], [], [], 0
    for name, xyz, f, uv, u in parts:
        verts.append(xyz)
        seams.append(u == 1.0)
        faces.append(f + offset)
        uvs.append(uv)
        labels += [name] * len(xyz)
        offset += len(xyz)
    v_template = np.concatenate(verts).astype(np.float32)
    f_all = np.concatenate(faces).astype(np.int64)
    vt = np.concatenate(uvs).astype(np.float32)
    vt[:, 1] = 1 - vt[:, 1]  # stored OBJ-style (v up), like the real file
    label = np.array(labels)
    seam = np.concatenate(seams)  # duplicated seam column: left out of ring centroids
    V, J = len(v_template), len(SMPLX_JOINTS)
    jid = {n: i for i, n in enumerate(SMPLX_JOINTS)}
    x, y, z = v_template.T

    weights = np.zeros((V, J))
    sel = label == "torso"
    chain = [jid[n] for n in ("pelvis", "spine1", "spine2", "spine3", "neck")]
    weights[np.ix_(sel, chain)] = _hats(y[sel], [-0.55, -0.40, -0.25, -0.10, 0.02])
    sel = label == "neck"
    weights[np.ix_(sel, [jid["spine3"], jid["neck"], jid["head"]])] = _hats(y[sel], [-0.10, 0.02, 0.12])
    sel = label == "head"
    jaw = _smoothstep((MOUTH_Y - y) / 0.02) * _smoothstep((z - 0.0) / 0.04) * sel
    weights[:, jid["jaw"]] += jaw
    weights[:, jid["head"]] += sel * (1 - jaw)
    for eye in EYE_CENTERS:
        weights[label == eye, jid[eye]] = 1.0

    # joints regress as centroids of rings/patches, so they sit where the skinning expects them
    targets = {
        "pelvis": [0, -0.55, 0], "spine1": [0, -0.40, 0], "spine2": [0, -0.25, 0], "spine3": [0, -0.10, 0],
        "neck": [0, 0.02, 0], "head": [0, 0.12, 0],
        "left_hip": [0.09, -0.58, 0], "right_hip": [-0.09, -0.58, 0],
        "left_collar": [0.06, 0.0, 0], "right_collar": [-0.06, 0.0, 0],
        "left_shoulder": [0.16, -0.05, 0], "right_shoulder": [-0.16, -0.05, 0],
    }  # fmt: skip
    J_regressor = np.zeros((J, V))
    for j, name in enumerate(SMPLX_JOINTS):
        if name in EYE_CENTERS:
            J_regressor[j, label == name] = 1.0
            continue
        if name == "jaw":  # the hinge: midway between the two ears
            cand = np.nonzero(label == "head")[0]
            for side in (-1, 1):
                d = np.linalg.norm(v_template[cand] - [side * HEAD_RADII[0], 0.165, -0.01], axis=1)
                J_regressor[j, cand[np.argsort(d)[:8]]] = 1.0
            continue
        target = np.array(targets.get(name, targets["left_hip" if "left" in name else "right_hip"]))
        if "hand" in name or "elbow" in name or "wrist" in name:
            target = np.array(targets["left_shoulder" if "left" in name else "right_shoulder"])
        if "knee" in name or "ankle" in name or "foot" in name:
            target = np.array(targets["left_hip" if "left" in name else "right_hip"])
        part = "neck" if name in ("neck", "head") else ("head" if name == "jaw" else "torso")
        cand = np.nonzero(label == part)[0]
        if target[0] == 0:  # on the axis: the grid ring nearest the target height
            row_y = y[cand][np.argmin(np.abs(y[cand] - target[1]))]
            J_regressor[j, cand[(np.abs(y[cand] - row_y) < 1e-6) & ~seam[cand]]] = 1.0
        else:
            d = np.linalg.norm(v_template[cand] - target, axis=1)
            J_regressor[j, cand[np.argsort(d)[:8]]] = 1.0
    J_regressor /= J_regressor.sum(1, keepdims=True)

    # shape: global scale, head size, torso width, neck length, then smooth random fields
    n_shape, n_expr = 10, 10
    shapedirs = np.zeros((V, 3, n_shape + n_expr))
    shapedirs[:, :, 0] = 0.03 * v_template
    shapedirs[:, :, 1] = 0.05 * (v_template - HEAD_CENTER) * (label == "head")[:, None]
    shapedirs[:, 0, 2] = 0.05 * x * (label == "torso")
    shapedirs[:, 1, 3] = 0.02 * (y > 0.0)
    for k in range(4, n_shape):
        c = rng.normal(size=(3, 3))
        shapedirs[:, :, k] = 0.004 * np.tanh(v_template @ c * 5)
    # expression: mouth open (lower lip down), smile (corners up/out), brows up, then local bumps
    front = _smoothstep((z - 0.04) / 0.03) * (label == "head")
    lip = np.exp(-(((y - MOUTH_Y) / 0.012) ** 2) - (x / 0.03) ** 2) * front
    shapedirs[:, 1, n_shape + 0] = -0.008 * lip * (y < MOUTH_Y)
    corner = np.exp(-(((y - MOUTH_Y) / 0.012) ** 2) - ((np.abs(x) - 0.03) / 0.012) ** 2) * front
    shapedirs[:, 0, n_shape + 1] = 0.005 * corner * np.sign(x)
    shapedirs[:, 1, n_shape + 1] = 0.004 * corner
    brow = np.exp(-(((y - 0.245) / 0.01) ** 2) - ((np.abs(x) - 0.032) / 0.02) ** 2) * front
    shapedirs[:, 1, n_shape + 2] = 0.006 * brow
    for k in range(3, n_expr):
        cx, cy = rng.uniform(-0.05, 0.05), rng.uniform(0.14, 0.26)
        bump = np.exp(-(((x - cx) / 0.02) ** 2) - ((y - cy) / 0.02) ** 2) * front
        shapedirs[:, 2, n_shape + k] = 0.003 * bump

    # landmarks: 51 points on the face (brows 10, nose 9, eyes 12, mouth 20), each on a triangle
    lm = []
    lm += [(sx * (0.012 + 0.011 * i), 0.245 + 0.004 * (2 - abs(i - 2))) for sx in (-1, 1) for i in range(5)]
    lm += [(0.0, 0.225 - 0.01 * i) for i in range(4)] + [(0.012 * i, 0.182) for i in range(-2, 3)]
    lm += [
        (sx * (0.018 + 0.014 * np.cos(a)), 0.225 + 0.006 * np.sin(a))
        for sx in (-1, 1)
        for a in np.linspace(0, 2 * np.pi, 7)[:-1]
    ]
    lm += [(0.028 * np.cos(a), MOUTH_Y + 0.012 * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 13)[:-1]]
    lm += [(0.016 * np.cos(a), MOUTH_Y + 0.004 * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 9)[:-1]]
    head_idx = np.nonzero(label == "head")[0]
    front_idx = head_idx[v_template[head_idx, 2] > 0.03]
    lmk_faces, lmk_bary = [], []
    vert_to_face = {}
    for fi, tri in enumerate(f_all):
        for vi in tri:
            vert_to_face.setdefault(int(vi), fi)
    for px, py in lm:
        d = (v_template[front_idx, 0] - px) ** 2 + (v_template[front_idx, 1] - py) ** 2
        vi = int(front_idx[np.argmin(d)])
        fi = vert_to_face[vi]
        lmk_faces.append(fi)
        lmk_bary.append((f_all[fi] == vi).astype(np.float32))
    head_faces = np.nonzero(np.isin(f_all[:, 0], front_idx))[0]

    parents = np.array(SMPLX_PARENTS)
    parents[0] = 2**32 - 1  # the real files store the root's parent as uint32 max
    return {
        "v_template": v_template,
        "f": f_all.astype(np.uint32),
        "vt": vt,
        "ft": f_all.astype(np.uint32),
        "shapedirs": shapedirs.astype(np.float32),
        "posedirs": np.zeros((V, 3, (J - 1) * 9), dtype=np.float32),
        "J_regressor": J_regressor.astype(np.float32),
        "weights": weights.astype(np.float32),
        "kintree_table": np.stack([parents, np.arange(J)]).astype(np.int64),
        "hands_componentsl": np.eye(45, dtype=np.float32),
        "hands_componentsr": np.eye(45, dtype=np.float32),
        "hands_meanl": np.zeros(45, dtype=np.float32),
        "hands_meanr": np.zeros(45, dtype=np.float32),
        "lmk_faces_idx": np.array(lmk_faces, dtype=np.int64),
        "lmk_bary_coords": np.array(lmk_bary, dtype=np.float32),
        "dynamic_lmk_faces_idx": np.resize(head_faces, (SMPLX_N_DYNAMIC, 17)).astype(np.int64),
        "dynamic_lmk_bary_coords": np.full((SMPLX_N_DYNAMIC, 17, 3), 1 / 3, dtype=np.float32),
    }


def write_synthetic_smplx(folder: str | Path, seed: int = 0) -> Path:
    """Write ``folder/SMPLX_NEUTRAL.npz`` (the layout ``--body-model-dir`` expects); returns its path."""
    path = Path(folder) / "SMPLX_NEUTRAL.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **synthetic_smplx_arrays(seed))
    return path
