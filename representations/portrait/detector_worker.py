"""Run mediapipe's face mesh, pose and selfie segmentation over a clip; run by ``detect.py``.

A standalone script for a separate interpreter: mediapipe 0.10.21 (the last release whose legacy
solutions carry their models inside the wheel, so it runs offline) pins numpy<2 and opencv-contrib,
which clash with canon-edit's own install. It therefore imports only numpy, cv2, mediapipe and the
standard library, never torch or canon_edit.

Protocol::

    python detector_worker.py FRAMES.npy OUT.npz [--selfie-model 0|1]

FRAMES.npy is T×H×W×3 uint8 RGB. OUT.npz holds ``face`` T×478×2 float32 (face-mesh points in
pixels, NaN rows where no face was found), ``pose`` T×33×3 float32 (pose landmarks in pixels and
their visibility, NaN rows where no person was found) and ``mask`` T×H×W uint8 (person
segmentation, 0-255). Stdout carries ``progress i/T`` lines; exit code 3 means mediapipe is missing.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

N_MESH = 478  # 468 face-mesh points + 10 iris points (refine_landmarks=True)
N_POSE = 33


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("frames", help="T×H×W×3 uint8 RGB .npy")
    parser.add_argument("output", help=".npz to write")
    parser.add_argument("--selfie-model", type=int, default=0, choices=(0, 1))
    args = parser.parse_args(argv)
    try:
        from mediapipe.python import solutions
    except ImportError as e:
        print(e, file=sys.stderr)
        return 3

    frames = np.load(args.frames, mmap_mode="r")
    T, H, W = frames.shape[:3]
    face = np.full((T, N_MESH, 2), np.nan, dtype=np.float32)
    pose = np.full((T, N_POSE, 3), np.nan, dtype=np.float32)
    mask = np.zeros((T, H, W), dtype=np.uint8)
    scale = np.array([W, H], dtype=np.float32)
    with (
        solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True) as mesh,
        solutions.pose.Pose(static_image_mode=False, model_complexity=1) as body,
        solutions.selfie_segmentation.SelfieSegmentation(model_selection=args.selfie_model) as selfie,
    ):
        for t in range(T):
            image = np.ascontiguousarray(frames[t])
            found = mesh.process(image).multi_face_landmarks
            if found:
                points = found[0].landmark
                face[t] = np.array([(p.x, p.y) for p in points], dtype=np.float32) * scale
            person = body.process(image).pose_landmarks
            if person:
                points = person.landmark
                pose[t] = np.array([(p.x * W, p.y * H, p.visibility) for p in points], dtype=np.float32)
            segmentation = selfie.process(image).segmentation_mask
            mask[t] = np.clip(segmentation * 255 + 0.5, 0, 255).astype(np.uint8)
            print(f"progress {t + 1}/{T}", flush=True)
    np.savez(args.output, face=face, pose=pose, mask=mask)
    return 0


if __name__ == "__main__":
    sys.exit(main())
