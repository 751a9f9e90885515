"""Diffusion priors for editing canonical textures.

One file per method: `models` loads Stable-Diffusion-1.5-family components (InstructPix2Pix and
ControlNet too) from a local folder or a hub id; `score` holds the pure SDS/DDS formulas;
`distill` optimises textures through differentiable renders under them; `regenerate` runs
img2img (with an optional Canny ControlNet) and InstructPix2Pix on the texture in overlapping
tiles (`tiles`); `edit` is the `canon-edit edit --prompt/--instruction` entry point.
Nothing here imports CUDA or diffusers at module load.
"""
