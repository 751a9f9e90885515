"""Portrait representation: 3D Gaussians bound to a parametric body mesh (PortraitGen-style).

Modules: ``body`` (body models behind one protocol: SMPL-X, anny, a synthetic SMPL-X file),
``gaussians`` (mesh binding, texel sampling, PLY), ``raster`` (Gaussian rasterizer: PyTorch
reference, gsplat on CUDA), ``detect`` (mediapipe landmarks, keypoints and person masks, run in
its own interpreter by ``detector_worker``), ``tracking`` (per-frame parameters, tracking files,
landmark fitting), ``import_tracking`` (PortraitGen's smplx_track.pth), ``prepare`` (detection,
tracking and masks of a clip, cached in the run folder), ``model`` (the fitted representation),
``asset`` (the baked PortraitAsset), ``procedural`` (a portrait clip with known truth for tests).
"""
