"""The fast CPU rasterizer against the reference: images, alpha and every gradient, and edge cases.

Tolerances: with early termination off (t_min=0) every path composites exactly the reference's
pairs, so images agree to float32 rounding (2e-5) and gradients to 1e-4 of their largest entry.
With it on (the default), a pixel drops what lies behind transmittance 1e-4: images move by less
than 1e-4 × max |colour| and gradients by less than 1e-2 of their largest entry (α ≤ 0.99 can
amplify a dropped tail by 1/(1 - α) = 100 in ∂/∂α).
"""

from __future__ import annotations

import pytest
import torch

from canon_edit_representations.portrait.camera import Camera
from canon_edit_representations.portrait.raster import rasterize
from canon_edit_representations.portrait.raster_fast import numba_available, rasterize_fast
from canon_edit_representations.portrait.raster_reference import rasterize_torch

NUMBA = pytest.mark.skipif(not numba_available(), reason="numba is not installed")
KERNELS = [pytest.param("scatter", marks=NUMBA), pytest.param("tiles", marks=NUMBA), "torch"]
DIFF = ("means", "quats", "scales", "opacities", "colors")


def _camera(width: int, height: int, f: float = 60.0) -> Camera:
    K = torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])
    return Camera(torch.eye(4), K, width, height)


def _scene(n: int, seed: int, channels: int = 5) -> dict[str, torch.Tensor]:
    """Random Gaussians in front of the camera, some partly or wholly off screen, a few behind it."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=gen) * torch.tensor([0.6, 0.4, 0.3]) + torch.tensor([0.0, 0.0, 2.0])
    means[:3, 2] = -1.0  # behind the camera
    return {
        "means": means,
        "quats": torch.randn(n, 4, generator=gen),
        "scales": torch.rand(n, 3, generator=gen) * 0.08 + 0.01,
        "opacities": torch.rand(n, generator=gen) * 0.98 + 0.01,
        "colors": torch.randn(n, channels, generator=gen),
    }


def _render(fn, scene: dict[str, torch.Tensor], width: int, height: int, **kw):
    """Image, alpha and the gradients of a fixed random loss on both w.r.t. every differentiable input."""
    inputs = {k: v.clone().requires_grad_(k in DIFF) for k, v in scene.items()}
    image, alpha = fn(**inputs, camera=_camera(width, height), **kw)
    weights = torch.randn(*image.shape[:2], image.shape[2] + 1, generator=torch.Generator().manual_seed(7))
    (torch.cat([image, alpha], -1) * weights).sum().backward()
    return image.detach(), alpha.detach(), {k: inputs[k].grad for k in DIFF}


def _assert_grads_close(got: dict, want: dict, rel: float) -> None:
    for key in DIFF:
        scale = float(want[key].abs().max())
        assert scale > 0, key
        torch.testing.assert_close(got[key], want[key], atol=rel * scale, rtol=0, msg=key)


@pytest.mark.parametrize("kernel", KERNELS)
def test_fast_paths_match_the_reference_exactly_without_early_termination(kernel):
    scene = _scene(150, seed=0)
    ref_img, ref_alpha, ref_grads = _render(rasterize_torch, scene, 40, 24)
    img, alpha, grads = _render(rasterize_fast, scene, 40, 24, kernel=kernel, t_min=0.0)
    assert float(ref_alpha.max()) > 0.9  # the scene overlaps: compositing order matters
    torch.testing.assert_close(img, ref_img, atol=2e-5, rtol=0)
    torch.testing.assert_close(alpha, ref_alpha, atol=2e-5, rtol=0)
    _assert_grads_close(grads, ref_grads, 1e-4)


@pytest.mark.parametrize("kernel", KERNELS)
def test_default_fast_path_is_within_the_early_termination_tolerance(kernel):
    scene = _scene(300, seed=1)
    scene["opacities"] = torch.full((300,), 0.97)  # dense and opaque: most pixels terminate early
    ref_img, ref_alpha, ref_grads = _render(rasterize_torch, scene, 40, 24)
    img, alpha, grads = _render(rasterize_fast, scene, 40, 24, kernel=kernel)
    max_colour = float(scene["colors"].abs().max())
    torch.testing.assert_close(img, ref_img, atol=1e-4 * max_colour, rtol=0)
    torch.testing.assert_close(alpha, ref_alpha, atol=1e-4, rtol=0)
    _assert_grads_close(grads, ref_grads, 1e-2)


def _stack(front_opacity: float) -> dict[str, torch.Tensor]:
    """Three wide Gaussians in front (green) and one behind (red), all centred on the image."""
    means = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.1], [0.0, 0.0, 1.2], [0.0, 0.0, 2.0]])
    colors = torch.tensor([[0.0, 1.0, 0.0]] * 3 + [[1.0, 0.0, 0.0]])
    return {
        "means": means,
        "quats": torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 4),
        "scales": torch.full((4, 3), 0.2),
        "opacities": torch.tensor([front_opacity] * 3 + [1.0]),
        "colors": colors,
    }


@pytest.mark.parametrize("kernel", [pytest.param("scatter", marks=NUMBA), pytest.param("tiles", marks=NUMBA)])
def test_an_opaque_front_hides_what_lies_behind(kernel):
    # three layers at α 0.99 leave T = 1e-6 < 1e-4 at the centre: the red one behind is never touched
    img, alpha, grads = _render(rasterize_fast, _stack(1.0), 16, 16, kernel=kernel)
    ref_img, ref_alpha, _ = _render(rasterize_torch, _stack(1.0), 16, 16)
    assert float(ref_img[8, 8, 0]) > 0  # the reference still adds a trace of red
    assert float(img[8, 8, 0]) == 0.0 and float(alpha[8, 8, 0]) == pytest.approx(1 - 1e-6, abs=1e-7)
    torch.testing.assert_close(img, ref_img, atol=1e-4, rtol=0)
    torch.testing.assert_close(alpha, ref_alpha, atol=1e-4, rtol=0)
    # semi-transparent front layers: the red one shows through and gets gradients again
    see_through, _, grads_through = _render(rasterize_fast, _stack(0.5), 16, 16, kernel=kernel)
    assert float(see_through[8, 8, 0]) > 0.05 and float(grads_through["colors"][3].abs().sum()) > 0


def test_off_screen_and_behind_the_camera_render_nothing():
    scene = _scene(6, seed=2)
    scene["means"] = torch.tensor(
        [
            [0.0, 0.0, -1.0],
            [0.0, 0.0, 0.005],
            [5.0, 0.0, 2.0],
            [-5.0, 0.0, 2.0],
            [0.0, 4.0, 2.0],
            [0.0, -4.0, 2.0],
        ]
    )  # behind, nearer than the near plane, and far off each side
    for kernel in ("scatter", "tiles", "torch") if numba_available() else ("torch",):
        img, alpha, grads = _render(rasterize_fast, scene, 32, 24, kernel=kernel)
        assert img.abs().max() == 0 and alpha.abs().max() == 0
        assert all(float(g.abs().max()) == 0 for g in grads.values())


@pytest.mark.parametrize("kernel", KERNELS)
def test_an_empty_scene_is_transparent(kernel):
    scene = {k: v[:0] for k, v in _scene(4, seed=3).items()}
    img, alpha, grads = _render(rasterize_fast, scene, 20, 12, kernel=kernel)
    assert img.shape == (12, 20, 5) and alpha.shape == (12, 20, 1)
    assert img.abs().max() == 0 and alpha.abs().max() == 0
    assert grads["colors"].shape == (0, 5)


@pytest.mark.parametrize("kernel", KERNELS)
def test_gaussians_across_tile_borders(kernel):
    # centres on the 16-pixel tile corners and edges of a 40×24 image (its last tile column is partial)
    pixels = torch.tensor([[16.0, 16.0], [32.0, 16.0], [16.0, 8.0], [39.5, 23.5], [0.0, 0.0]])
    z = torch.tensor([2.0, 2.2, 2.4, 2.6, 2.8])
    means = torch.stack([(pixels[:, 0] - 20) * z / 60, (pixels[:, 1] - 12) * z / 60, z], -1)
    scene = {
        "means": means,
        "quats": torch.tensor([[0.9, 0.1, 0.2, 0.3]] * 5),
        "scales": torch.tensor([[0.15, 0.1, 0.05]] * 5),
        "opacities": torch.full((5,), 0.8),
        "colors": torch.eye(5),
    }
    ref_img, ref_alpha, ref_grads = _render(rasterize_torch, scene, 40, 24)
    img, alpha, grads = _render(rasterize_fast, scene, 40, 24, kernel=kernel, t_min=0.0)
    torch.testing.assert_close(img, ref_img, atol=2e-5, rtol=0)
    torch.testing.assert_close(alpha, ref_alpha, atol=2e-5, rtol=0)
    _assert_grads_close(grads, ref_grads, 1e-4)


def test_dispatcher_takes_the_fast_path_on_the_cpu_and_keeps_the_reference():
    scene = _scene(60, seed=4, channels=3)
    args = (*scene.values(), _camera(32, 24))
    background = torch.tensor([0.2, 0.5, 0.9])
    fast, fast_alpha = rasterize(*args, background=background)
    want, want_alpha = rasterize_fast(*args, background=background)
    assert torch.equal(fast, want) and torch.equal(fast_alpha, want_alpha)
    ref, _ = rasterize(*args, background=background, backend="torch")
    assert torch.equal(ref, rasterize_torch(*args, background=background)[0])
    torch.testing.assert_close(fast, ref, atol=1e-4, rtol=0)


def test_a_camera_that_needs_gradients_gets_them():
    scene = _scene(40, seed=5)
    camera = _camera(24, 16)
    grads = []
    for fn in (rasterize_torch, rasterize_fast):
        view = camera.viewmat.clone().requires_grad_()
        image, alpha = fn(**scene, camera=Camera(view, camera.K, 24, 16))
        (image.sum() + alpha.sum()).backward()
        grads.append(view.grad)
    assert float(grads[0].abs().max()) > 0
    torch.testing.assert_close(grads[1], grads[0], atol=1e-2 * float(grads[0].abs().max()), rtol=0)
