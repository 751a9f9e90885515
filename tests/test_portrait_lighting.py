"""Order-2 SH portrait lighting: basis, shading, presets, rotation, environment maps and the light fit."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from canon_edit.errors import UserError
from canon_edit_representations.portrait.lighting import (
    PRESETS,
    directional_light,
    envmap_to_sh,
    fit_light,
    front_brightness,
    preset_light,
    read_envmap,
    rotate_light,
    sh_basis,
    shading,
    yaw_rotation,
)

F64 = torch.float64


def _unit(v) -> torch.Tensor:
    v = torch.as_tensor(v, dtype=F64)
    return v / v.norm(dim=-1, keepdim=True)


def _sphere(n: int, seed: int, front: bool = False) -> torch.Tensor:
    """Uniform random unit vectors; `front` keeps the camera-facing hemisphere (z < 0)."""
    v = _unit(torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=F64))
    if front:
        v[:, 2] = -v[:, 2].abs()
    return v


def _rotation(seed: int) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=F64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


def _at(light: torch.Tensor, direction) -> torch.Tensor:
    return shading(_unit(direction).to(light.dtype), light)


# --- basis, shading, directional lights -------------------------------------------------------


def test_sh_basis_has_the_standard_constants_and_is_orthonormal():
    torch.testing.assert_close(
        sh_basis(_unit([0.0, 0.0, 1.0])),
        torch.tensor([0.282095, 0, 0.488603, 0, 0, 0, 2 * 0.315392, 0, 0], dtype=F64),
        atol=1e-6,
        rtol=0,
    )
    s = 0.488603 / math.sqrt(2)
    torch.testing.assert_close(
        sh_basis(_unit([1.0, 1.0, 0.0])),
        torch.tensor([0.282095, s, 0, s, 1.092548 / 2, 0, -0.315392, 0, 0], dtype=F64),
        atol=1e-6,
        rtol=0,
    )
    torch.testing.assert_close(
        sh_basis(_unit([1.0, 0.0, 0.0]))[[3, 6, 8]],
        torch.tensor([0.488603, -0.315392, 0.546274], dtype=F64),
        atol=1e-6,
        rtol=0,
    )
    y = sh_basis(_sphere(100_000, 0))
    gram = 4 * math.pi * y.T @ y / len(y)  # Monte Carlo ∫ Y_i Y_j dω
    assert (gram - torch.eye(9, dtype=F64)).abs().max() < 0.02


def test_a_uniform_environment_shades_its_radiance():
    radiance = torch.tensor([0.3, 1.0, 2.5], dtype=F64)
    normals = _sphere(1000, 1)
    ambient = directional_light(_unit([0.2, -1.0, 0.4]), intensity=0.0, ambient=radiance)
    from_map = envmap_to_sh(radiance.expand(16, 32, 3))
    for light in (ambient, from_map):
        torch.testing.assert_close(shading(normals, light), radiance.expand(1000, 3), atol=1e-9, rtol=0)
    torch.testing.assert_close(ambient[0], radiance * 2 * math.sqrt(math.pi))


def test_directional_light_is_the_clamped_cosine_to_within_three_32nds():
    d = _unit([0.3, -0.5, -0.8])
    colour = torch.tensor([1.0, 0.5, 0.25], dtype=F64)
    light = directional_light(d, colour, intensity=2.0)
    normals = _sphere(200_000, 2)
    exact = 2.0 * colour * (normals @ d).clamp_min(0)[:, None]
    error = (shading(normals, light) - exact) / (2.0 * colour)
    worst = error.abs().max(0)
    # order 2: +3/32 at the terminator, 17/16 at n = d, a dip to -19/480 behind
    assert torch.allclose(worst.values, torch.full((3,), 3 / 32, dtype=F64), atol=1e-4)
    assert (normals[worst.indices] @ d).abs().max() < 0.01
    torch.testing.assert_close(_at(light, d), 2.0 * colour * 17 / 16)
    assert abs(error.min().item() + 19 / 480) < 1e-4


def test_front_brightness_is_the_mean_shading_over_camera_facing_normals():
    front = _sphere(400_000, 3, front=True)
    light = torch.randn(9, 3, generator=torch.Generator().manual_seed(4), dtype=F64)
    torch.testing.assert_close(front_brightness(light), shading(front, light).mean(0), atol=0.01, rtol=0)
    # a light from the front: the mean of max(0, cos) over the hemisphere is 1/2; from behind: 0
    torch.testing.assert_close(
        front_brightness(directional_light(_unit([0, 0, -1.0]))), torch.full((3,), 0.5, dtype=F64)
    )
    torch.testing.assert_close(
        front_brightness(directional_light(_unit([0, 0, 1.0]))), torch.zeros(3, dtype=F64)
    )


# --- presets --------------------------------------------------------------------------------


def test_presets_keep_the_albedo_brightness_and_never_go_black():
    assert list(PRESETS) == ["key-left", "key-right", "top", "rim", "sunset", "overcast"]
    front = _sphere(200_000, 5, front=True).float()
    for name in PRESETS:
        shade = shading(front, preset_light(name))
        assert abs(shade.mean().item() - 1) < 0.01, name
        assert shade.min() > 0.25, name
    light = preset_light("top")
    light += 1
    assert not torch.equal(light, PRESETS["top"])  # a copy, so callers cannot change the preset


def test_presets_light_the_face_from_their_side():
    left, right = preset_light("key-left"), preset_light("key-right")
    assert _at(left, [-1, 0, -1]).min() > 2 * _at(left, [1, 0, -1]).max()  # the image's left side is lit
    normals = _sphere(100, 6).float()
    mirrored = normals * torch.tensor([-1.0, 1.0, 1.0])
    torch.testing.assert_close(shading(normals, right), shading(mirrored, left))
    top = preset_light("top")
    assert _at(top, [0, -1, -0.3]).min() > 2 * _at(top, [0, 1, -0.3]).max()  # forehead above chin
    rim = preset_light("rim")
    assert _at(rim, [0, 0, 1]).min() > 3 * _at(rim, [0, 0, -1]).max()  # from behind
    assert _at(rim, [0, -1, 0]).min() > 1.5 * _at(rim, [0, 0, -1]).max()  # the silhouette outshines the front
    sunset = preset_light("sunset")
    lit = _at(sunset, [1, 0, -1])
    assert lit[0] > lit[1] > lit[2] and lit[0] > 2 * lit[2]  # warm
    assert lit.sum() > 2 * _at(sunset, [-1, 0, -1]).sum()  # from one side
    overcast = shading(_sphere(10_000, 7, front=True).float(), preset_light("overcast"))
    assert (overcast[:, 2] > overcast[:, 0]).all()  # cool
    assert (overcast.max(0).values / overcast.min(0).values).max() < 1.6  # soft


def test_an_unknown_preset_names_the_choices():
    with pytest.raises(UserError) as caught:
        preset_light("disco")
    assert str(caught.value) == (
        "unknown light preset 'disco'; choose one of: key-left, key-right, top, rim, sunset, overcast"
    )


# --- rotation -------------------------------------------------------------------------------


def test_rotate_light_moves_the_shading_with_the_rotation():
    light = torch.randn(9, 3, generator=torch.Generator().manual_seed(8), dtype=F64)
    R = _rotation(9)
    normals = _sphere(500, 10)
    turned = rotate_light(light, R)
    torch.testing.assert_close(shading(normals @ R.T, turned), shading(normals, light), atol=1e-10, rtol=0)
    d = _unit([0.3, -0.4, -0.8])
    colour = torch.tensor([1.0, 0.6, 0.3], dtype=F64)
    torch.testing.assert_close(
        rotate_light(directional_light(d, colour, 1.5, 0.2), R), directional_light(R @ d, colour, 1.5, 0.2)
    )


def test_yaw_turns_the_front_towards_the_image_left():
    quarter = yaw_rotation(math.pi / 2)
    torch.testing.assert_close(quarter @ torch.tensor([0.0, 0.0, -1.0]), torch.tensor([-1.0, 0.0, 0.0]))
    torch.testing.assert_close(quarter @ torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]))
    R = yaw_rotation(torch.tensor(0.7, dtype=F64))
    torch.testing.assert_close(R @ R.T, torch.eye(3, dtype=F64))
    assert abs(torch.det(R).item() - 1) < 1e-12
    # a quarter turn takes the right key light (1, -0.5, -1) to the left one (-1, -0.5, -1)
    torch.testing.assert_close(rotate_light(preset_light("key-right"), quarter), preset_light("key-left"))


# --- environment maps -----------------------------------------------------------------------


def _patch_light(rows: slice, cols: slice, height: int = 64, width: int = 128):
    """A dark map with one bright patch, and the directional light the documented mapping predicts."""
    radiance = torch.tensor([5.0, 4.0, 3.0], dtype=F64)
    image = torch.zeros(height, width, 3, dtype=F64)
    image[rows, cols] = radiance
    i = torch.arange(height, dtype=F64)[rows] + 0.5
    j = torch.arange(width, dtype=F64)[cols] + 0.5
    theta, phi = (i * math.pi / height)[:, None], ((j / width - 0.5) * 2 * math.pi)[None]
    solid_angle = (theta.sin() * (math.pi / height) * (2 * math.pi / width)).expand(-1, len(j))
    direction = torch.stack(
        torch.broadcast_tensors(-theta.sin() * phi.sin(), -theta.cos(), -theta.sin() * phi.cos()), -1
    )
    direction = _unit((direction * solid_angle[..., None]).sum((0, 1)))
    return image, directional_light(direction, radiance, solid_angle.sum().item() / math.pi), direction


def test_a_bright_patch_in_an_envmap_is_a_directional_light_from_its_direction():
    normals = _sphere(5000, 11)
    # column 3W/4 at the horizon: the subject's right, the image's left (-x)
    image, expected, direction = _patch_light(slice(30, 34), slice(94, 98))
    torch.testing.assert_close(direction, _unit([-1.0, 0.0, 0.0]))
    light = envmap_to_sh(image)
    error = shading(normals, light) - shading(normals, expected)
    assert error.abs().max() < 0.01 * shading(normals, expected).max()
    assert (_at(light, [-1, 0, 0]) > 10 * _at(light, [1, 0, 0]).abs()).all()
    # the centre column 45° above the horizon: up (-y) and from the camera's side (-z)
    image, expected, direction = _patch_light(slice(14, 18), slice(62, 66))
    torch.testing.assert_close(direction, _unit([0.0, -1.0, -1.0]), atol=0.01, rtol=0)
    light = envmap_to_sh(image)
    error = shading(normals, light) - shading(normals, expected)
    assert error.abs().max() < 0.01 * shading(normals, expected).max()


def test_read_envmap_round_trips_a_radiance_hdr(tmp_path: Path):
    rgb = np.random.default_rng(12).uniform(0.01, 20.0, (32, 64, 3)).astype(np.float32)
    rgb[5, 7] = (8.0, 0.0, 0.0)  # pure red: BGR must come back as RGB
    assert cv2.imwrite(str(tmp_path / "sky.hdr"), rgb[..., ::-1])
    image = read_envmap(tmp_path / "sky.hdr").numpy()
    assert image.shape == (32, 64, 3) and image.dtype == np.float32
    # RGBE shares one exponent per pixel: 8 bits of mantissa relative to the largest channel
    assert (np.abs(image - rgb) <= rgb.max(-1, keepdims=True) / 128).all()
    np.testing.assert_allclose(image[5, 7], (8.0, 0.0, 0.0), atol=1e-6)


def test_read_envmap_linearises_srgb_png_and_jpg(tmp_path: Path):
    bgr8 = np.zeros((8, 16, 3), np.uint8)
    bgr8[0, 0] = (0, 128, 255)  # RGB (255, 128, 0)
    cv2.imwrite(str(tmp_path / "sky.png"), bgr8)
    np.testing.assert_allclose(
        read_envmap(tmp_path / "sky.png")[0, 0].numpy(), (1.0, 0.2158605, 0.0), atol=1e-6
    )
    bgr16 = np.zeros((8, 16, 3), np.uint16)
    bgr16[0, 0] = (0, 32768, 65535)
    cv2.imwrite(str(tmp_path / "deep.png"), bgr16)
    np.testing.assert_allclose(
        read_envmap(tmp_path / "deep.png")[0, 0].numpy(), (1.0, 0.2140482, 0.0), atol=1e-6
    )
    cv2.imwrite(str(tmp_path / "grey.jpg"), np.full((8, 16, 3), 128, np.uint8))
    np.testing.assert_allclose(read_envmap(tmp_path / "grey.jpg").numpy(), 0.2158605, atol=0.005)


def _message(path: Path) -> str:
    with pytest.raises(UserError) as caught:
        read_envmap(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


def test_read_envmap_errors_name_the_file_the_problem_and_the_fix(tmp_path: Path):
    assert "does not exist; pass an equirectangular" in _message(tmp_path / "missing.hdr")
    cv2.imwrite(str(tmp_path / "square.png"), np.zeros((16, 16, 3), np.uint8))
    assert "is 16x16 (aspect 1.00:1)" in _message(tmp_path / "square.png")
    assert "re-export or crop it to 2:1" in _message(tmp_path / "square.png")
    (tmp_path / "notes.png").write_text("not an image")
    assert "is not a readable .png image (corrupt or another format); re-export it" in _message(
        tmp_path / "notes.png"
    )
    cv2.imwrite(str(tmp_path / "sky.bmp"), np.zeros((16, 32, 3), np.uint8))
    assert "unsupported suffix '.bmp'; convert it to an equirectangular .hdr" in _message(
        tmp_path / "sky.bmp"
    )
    exr = tmp_path / "sky.exr"
    if cv2.haveImageWriter(str(exr)):
        radiance = np.ones((16, 32, 3), np.float32)
        radiance[3, 4, 1] = -1.0
        cv2.imwrite(str(exr), radiance)
        assert "has 1 non-finite or negative values" in _message(exr)
    else:
        exr.write_bytes(b"v/1\x01" + bytes(64))
        assert "this OpenCV build has no OpenEXR support; convert it to Radiance .hdr" in _message(exr)


# --- fitting a light ------------------------------------------------------------------------


def _observations(light: torch.Tensor, noise: float, turn: float = 0.5, seed: int = 13, points: int = 200):
    """Points with known albedo seen in 10 frames by a head turning (yaw, pitch within ±turn) in `light`."""
    frames = 10
    gen = torch.Generator().manual_seed(seed)
    normals = _sphere(points, seed + 1, front=True)
    albedo = 0.2 + 0.7 * torch.rand(points, 3, generator=gen, dtype=F64)
    yaw, pitch = (2 * torch.rand(2, frames, generator=gen, dtype=F64) - 1) * turn
    cp, sp = pitch.cos(), pitch.sin()
    zero, one = torch.zeros_like(pitch), torch.ones_like(pitch)
    rx = torch.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).reshape(frames, 3, 3)
    heads = torch.stack([yaw_rotation(a) for a in yaw]) @ rx
    seen = torch.einsum("fij,pj->fpi", heads, normals).reshape(-1, 3)
    ids = torch.arange(points).repeat(frames)
    visible = seen[:, 2] < -0.1
    seen, ids = seen[visible], ids[visible]
    colours = albedo[ids] * shading(seen, light.to(F64))
    colours = colours * (1 + noise * torch.randn(colours.shape, generator=gen, dtype=F64))
    return colours.float(), seen.float(), ids, albedo


def _normalised_truth(light: torch.Tensor, albedo: torch.Tensor, normals: torch.Tensor):
    """The true light and albedo under fit_light's scale: mean shading over the observations is 1."""
    scale = shading(normals.to(F64), light.to(F64)).mean(0)
    return light.to(F64) / scale, albedo * scale


def test_fit_light_recovers_a_known_light_and_albedo():
    truth = preset_light("sunset")  # coloured, so each channel's scale is fixed separately
    colours, normals, ids, albedo = _observations(truth, noise=0.0)
    light, fitted = fit_light(colours, normals, ids, n_points=201)  # point 200 is never seen
    true_light, true_albedo = _normalised_truth(truth, albedo, normals)
    sphere = _sphere(5000, 14).float()
    expected = shading(sphere, true_light.float())
    assert (shading(sphere, light) - expected).abs().max() < 0.01 * expected.abs().max()
    assert (light.double() - true_light).norm() < 0.02 * true_light.norm()
    assert ((fitted[:200].double() - true_albedo).abs() / true_albedo).max() < 0.01
    assert fitted[200].eq(0).all()
    torch.testing.assert_close(shading(normals, light).mean(0), torch.ones(3))  # the stated normalisation


def test_fit_light_with_two_percent_noise_stays_within_five_percent():
    truth = preset_light("key-left")
    colours, normals, ids, albedo = _observations(truth, noise=0.02)
    light, fitted = fit_light(colours, normals, ids, n_points=200)
    true_light, true_albedo = _normalised_truth(truth, albedo, normals)
    sphere = _sphere(5000, 15).float()
    expected = shading(sphere, true_light.float())
    assert (shading(sphere, light) - expected).abs().max() < 0.05 * expected.abs().max()
    relative = (fitted.double() - true_albedo).abs() / true_albedo
    assert relative.mean() < 0.015 and relative.max() < 0.05


def test_fit_light_recovers_the_light_from_small_head_turns():
    # ±0.1 rad barely changes the shading: descent from the flat light stalls far from the truth
    # (noise-free), and steps that ignore how the albedos move with the light crawl (2% noise)
    truth = preset_light("sunset")
    sphere = _sphere(5000, 20).float()
    for noise, tolerance in ((0.0, 0.005), (0.02, 0.12)):
        colours, normals, ids, albedo = _observations(truth, noise=noise, turn=0.1)
        light, _ = fit_light(colours, normals, ids, n_points=200)
        true_light, _ = _normalised_truth(truth, albedo, normals)
        expected = shading(sphere, true_light.float())
        assert (shading(sphere, light) - expected).abs().max() < tolerance * expected.abs().max()


def test_fit_light_ignores_zero_weight_outliers():
    truth = preset_light("top")
    colours, normals, ids, albedo = _observations(truth, noise=0.0)
    outliers = torch.rand(len(colours), generator=torch.Generator().manual_seed(16)) < 0.1
    corrupted = torch.where(outliers[:, None], 3 * colours, colours)
    true_light, _ = _normalised_truth(truth, albedo, normals[~outliers])  # the weighted mean shading is 1
    sphere = _sphere(2000, 17).float()
    expected = shading(sphere, true_light.float())
    weighted, _ = fit_light(corrupted, normals, ids, 200, weights=(~outliers).float())
    assert (shading(sphere, weighted) - expected).abs().max() < 0.01 * expected.abs().max()
    unweighted, _ = fit_light(corrupted, normals, ids, 200)
    assert (shading(sphere, unweighted) - expected).abs().max() > 0.05 * expected.abs().max()


def test_fit_light_without_motion_returns_the_flat_light_and_the_mean_colours():
    gen = torch.Generator().manual_seed(18)
    normals = _sphere(100, 19, front=True).float().repeat(6, 1)  # every frame sees the same normals
    ids = torch.arange(100).repeat(6)
    albedo = 0.2 + 0.7 * torch.rand(100, 3, generator=gen)
    colours = (
        albedo[ids]
        * shading(normals, preset_light("key-left"))
        * (1 + 0.02 * torch.randn(600, 3, generator=gen))
    )
    light, fitted = fit_light(colours, normals, ids, n_points=100)
    flat = torch.zeros(9, 3)
    flat[0] = 2 * math.sqrt(math.pi)
    torch.testing.assert_close(light, flat, atol=1e-5, rtol=0)
    mean_colours = torch.zeros(100, 3).index_add_(0, ids, colours) / 6
    torch.testing.assert_close(fitted, mean_colours, atol=1e-5, rtol=0)
    light, fitted = fit_light(torch.zeros(600, 3), normals, ids, n_points=100)  # nothing to see: still finite
    torch.testing.assert_close(light, flat, atol=1e-5, rtol=0)
    assert fitted.eq(0).all()
