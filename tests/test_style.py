"""Stylisation losses: Gram, NNFM, TV and content against hand-computed answers; random features are
deterministic and synthesise a striped texture; a torchvision-layout VGG round-trips through `load_vgg`,
and every bad weight file is one UserError line that runs no code."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from canon_edit.errors import UserError
from canon_edit.style.features import IMAGENET_MEAN, IMAGENET_STD, RandomFeatures
from canon_edit.style.losses import (
    ARF_CONTENT_WEIGHT,
    ARF_LAYERS,
    GATYS_CONTENT_LAYER,
    GATYS_STYLE_LAYERS,
    arf_loss,
    content_loss,
    gatys_loss,
    gram,
    gram_loss,
    nn_feature_matching_loss,
    tv_loss,
)
from canon_edit.style.vgg import VGGFeatures, load_vgg

ROOT = Path(__file__).resolve().parent.parent


def stripes(size: int, period: int) -> torch.Tensor:
    """1×3×size×size vertical magenta stripes: a sine across x with `period` px, constant along y."""
    x = torch.arange(size, dtype=torch.float32)
    image = (0.5 + 0.4 * torch.sin(2 * math.pi * x / period)).view(1, 1, 1, size).repeat(1, 3, size, 1)
    image[:, 1] *= 0.6
    return image


def row_spectrum(image: torch.Tensor) -> torch.Tensor:
    """Power of each horizontal frequency of the grey image, averaged over rows (phase-blind), DC zeroed."""
    grey = image[0].mean(0)
    power = torch.fft.rfft(grey - grey.mean(), dim=1).abs().square().mean(0)
    power[0] = 0
    return power


# ---------------------------------------------------------------- Gram, TV, content


def test_gram_is_the_hand_computed_correlation_over_positions():
    features = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)  # C=2 channels, 2 positions
    expected = torch.tensor([[1 * 1 + 2 * 2, 1 * 3 + 2 * 4], [3 * 1 + 4 * 2, 3 * 3 + 4 * 4]]) / 2.0
    assert torch.allclose(gram(features), expected[None])


def test_gram_does_not_depend_on_image_size():
    """Dividing by H·W: a periodic map tiled 2×2 has exactly the Gram of one tile."""
    tile = torch.rand(2, 5, 6, 7, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(gram(tile.repeat(1, 1, 2, 2)), gram(tile), atol=1e-6)


def test_gram_loss_known_values_and_precomputed_references():
    g = torch.Generator().manual_seed(1)
    feats = [torch.rand(1, 4, 6, 6, generator=g), torch.rand(1, 8, 3, 3, generator=g)]
    assert gram_loss(feats, feats).item() == 0.0
    # doubling the features quadruples the Gram: the loss is mean((G - 4G)²) = 9·mean(G²), per layer
    doubled = [2 * f for f in feats]
    expected = sum(9 * gram(f).square().mean() for f in feats) / len(feats)
    assert gram_loss(feats, doubled).item() == pytest.approx(expected.item(), rel=1e-5)
    # a reference given as its Gram gives the same loss as its feature maps; one style serves a batch
    assert gram_loss(feats, [gram(f) for f in doubled]).item() == pytest.approx(expected.item(), rel=1e-5)
    batch = [f.repeat(3, 1, 1, 1) for f in feats]
    assert gram_loss(batch, doubled).item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError):
        gram_loss(feats, feats[:1])


def test_tv_and_content_known_values():
    columns = torch.tensor([0.0, 1.0, 0.0, 1.0]).view(1, 1, 1, 4).repeat(1, 3, 4, 1)
    # every horizontal difference is 1, every vertical one 0: (1 + 0) / 2
    assert tv_loss(columns).item() == pytest.approx(0.5)
    assert tv_loss(torch.full((1, 3, 5, 5), 0.3)).item() == 0.0
    a = torch.rand(2, 4, 3, 3)
    assert content_loss(a, a + 0.5).item() == pytest.approx(0.25, rel=1e-6)


# ---------------------------------------------------------------- NNFM


def test_nnfm_known_answer():
    render = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)  # vectors (1,0) and (0,1)
    style = torch.tensor([[1.0, 1.0], [0.0, 1.0]]).view(1, 2, 1, 2)  # vectors (1,0) and (1,1)
    # (1,0) matches (1,0) exactly; (0,1)'s nearest is (1,1) at cosine distance 1 - 1/√2
    expected = (0.0 + (1 - 1 / math.sqrt(2))) / 2
    assert nn_feature_matching_loss(render, style).item() == pytest.approx(expected, rel=1e-6)


def test_nnfm_is_zero_for_the_style_itself_and_larger_for_another_image():
    features = RandomFeatures(kernel_sizes=(3, 7), channels=16, seed=0)
    style = torch.cat(features(stripes(32, 6)), dim=1)
    other = torch.cat(features(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))), 1)
    assert nn_feature_matching_loss(style, style).item() < 1e-6
    assert nn_feature_matching_loss(other, style).item() > 0.05


def test_nnfm_chunks_give_the_unchunked_value_and_gradient():
    g = torch.Generator().manual_seed(3)
    render = torch.randn(2, 8, 9, 9, generator=g)
    style = torch.randn(1, 8, 7, 7, generator=g, requires_grad=True)
    results = []
    for chunk in (1, 7, 10**9):
        x = render.clone().requires_grad_()
        loss = nn_feature_matching_loss(x, style, chunk=chunk)
        loss.backward()
        results.append((loss.detach(), x.grad))
    for loss, grad in results[:2]:
        assert torch.allclose(loss, results[2][0], atol=1e-7)
        assert torch.allclose(grad, results[2][1], atol=1e-7)
    assert results[2][1].abs().sum() > 0
    assert style.grad is None  # the style is a constant reference


def test_arf_loss_is_nnfm_plus_weighted_content():
    g = torch.Generator().manual_seed(4)
    render = {name: torch.rand(1, 6, 5, 5, generator=g) for name in ARF_LAYERS}
    shifted = {name: value + 1.0 for name, value in render.items()}
    assert arf_loss(render, render, render).item() == pytest.approx(0.0, abs=1e-6)
    # the style is the render itself (NNFM 0) and the content differs by 1 everywhere (MSE 1)
    assert arf_loss(render, render, shifted).item() == pytest.approx(ARF_CONTENT_WEIGHT, rel=1e-4)


def test_gatys_loss_uses_its_layers_and_accepts_grams():
    g = torch.Generator().manual_seed(5)
    render = {name: torch.rand(1, 4, 6, 6, generator=g) for name in (*GATYS_STYLE_LAYERS, "relu4_2")}
    style = {name: 2 * value for name, value in render.items()}
    style["relu4_2"] = torch.zeros(1, 4, 6, 6)  # not a style layer: must not count
    expected = sum(9 * gram(render[k]).square().mean() for k in GATYS_STYLE_LAYERS) / len(GATYS_STYLE_LAYERS)
    assert gatys_loss(render, style).item() == pytest.approx(expected.item(), rel=1e-5)
    grams = {k: gram(style[k]) for k in GATYS_STYLE_LAYERS}
    assert gatys_loss(render, grams).item() == pytest.approx(expected.item(), rel=1e-5)


def test_layer_constants_name_layers_of_the_cited_networks():
    assert ARF_LAYERS == ("relu3_1", "relu3_2", "relu3_3")  # ARF: VGG-16 block 3
    vgg16, vgg19 = VGGFeatures(16), VGGFeatures(19)
    assert [vgg16.layer_index[k] for k in ARF_LAYERS] == [11, 13, 15]  # ARF's indices into vgg16.features
    assert all(k in vgg19.layer_index for k in (*GATYS_STYLE_LAYERS, GATYS_CONTENT_LAYER))


# ---------------------------------------------------------------- random features


def weights_digest(features: RandomFeatures) -> str:
    return hashlib.sha256(b"".join(b.numpy().tobytes() for b in features.buffers())).hexdigest()


def test_random_features_are_frozen_shaped_and_seeded():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a = RandomFeatures(kernel_sizes=(3, 5), channels=8, seed=7)
    assert torch.equal(torch.get_rng_state(), before)  # a seeded run's global RNG is left alone
    torch.manual_seed(123)  # and does not matter
    b = RandomFeatures(kernel_sizes=(3, 5), channels=8, seed=7)
    c = RandomFeatures(kernel_sizes=(3, 5), channels=8, seed=8)
    assert weights_digest(a) == weights_digest(b) != weights_digest(c)
    assert list(a.parameters()) == [] and a.state_dict() == {}
    assert all(not w.requires_grad for w in a.buffers())
    norms = torch.cat([w.flatten(1).norm(dim=1) for w in a.buffers()])
    assert torch.allclose(norms, torch.ones_like(norms))  # every filter has unit norm
    maps = a(torch.rand(2, 3, 12, 10))
    assert [tuple(m.shape) for m in maps] == [(2, 8, 12, 10), (2, 8, 12, 10)]
    assert all(m.min() >= 0 for m in maps)  # ReLU


def test_random_features_are_the_same_in_another_process():
    code = (
        "import hashlib; from canon_edit.style.features import RandomFeatures; "
        "f = RandomFeatures(kernel_sizes=(3, 5), channels=8, seed=7); "
        "print(hashlib.sha256(b''.join(b.numpy().tobytes() for b in f.buffers())).hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == weights_digest(RandomFeatures(kernel_sizes=(3, 5), channels=8, seed=7))


def test_random_features_of_a_constant_image_are_constant():
    """Reflected borders: a flat colour has flat responses up to the edge (zero padding would not)."""
    maps = RandomFeatures(kernel_sizes=(3, 11), channels=8, seed=0)(torch.full((1, 3, 16, 16), 0.3))
    for m in maps:
        assert torch.allclose(m, m[:, :, :1, :1].expand_as(m), atol=1e-5)
        assert m.max() > 0


def band_share(image: torch.Tensor, cycles: int) -> float:
    """Share of the row spectrum's power within one bin of `cycles` across the image."""
    power = row_spectrum(image)
    return (power[cycles - 1 : cycles + 2].sum() / power.sum()).item()


def test_random_feature_gram_loss_synthesises_stripes():
    """100 Adam steps from noise under the Gram loss of random features reproduce 6-px vertical stripes."""
    size, period = 48, 6
    cycles = size // period  # the texture's frequency: 8 cycles across the image
    features = RandomFeatures(kernel_sizes=(3, 5, 7, 11), channels=32, seed=0)
    with torch.no_grad():
        refs = [gram(f) for f in features(stripes(size, period))]
    logits = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(10)) * 0.2 - 0.1
    logits.requires_grad_()
    optimiser = torch.optim.Adam([logits], lr=0.05)
    with torch.no_grad():
        start_loss = gram_loss(features(torch.sigmoid(logits)), refs).item()
        start_share = band_share(torch.sigmoid(logits), cycles)
    for _ in range(100):
        optimiser.zero_grad()
        gram_loss(features(torch.sigmoid(logits)), refs).backward()
        optimiser.step()
    image = torch.sigmoid(logits).detach()
    with torch.no_grad():
        end_loss = gram_loss(features(image), refs).item()
    assert start_loss / end_loss > 15  # measured 68×
    # the dominant horizontal frequency is the texture's (to a bin: phase slips move it by one)
    assert abs(row_spectrum(image).argmax().item() - cycles) <= 1  # measured: exactly 8
    assert band_share(image, cycles) > 0.4 and start_share < 0.2  # measured 0.67 (the noise: 0.13)
    # vertical stripes: the strongest 2D frequency has no (or the lowest) vertical component
    grey = image[0].mean(0)
    ky = divmod(torch.fft.fft2(grey - grey.mean()).abs().flatten().argmax().item(), size)[0]
    assert min(ky, size - ky) <= 1  # measured 0


# ---------------------------------------------------------------- VGG


@pytest.fixture(scope="module")
def vggs() -> dict[int, VGGFeatures]:
    torch.manual_seed(0)
    return {16: VGGFeatures(16), 19: VGGFeatures(19)}


def torchvision_state(model: VGGFeatures) -> dict[str, torch.Tensor]:
    """What torch.save(torchvision_vgg.state_dict()) holds: features.* plus (here tiny) classifier.*."""
    state = dict(model.state_dict())
    state["classifier.0.weight"] = torch.zeros(4, 8)
    state["classifier.0.bias"] = torch.zeros(4)
    return state


def _save(path: Path, state: object) -> Path:
    """`state` written as torch.save does (.pth) or as safetensors."""
    if path.suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    return path


def test_vgg_layout_matches_torchvision_indices(vggs):
    # torchvision: vgg16().features has 31 modules, vgg19().features 37; conv at even indices of a block
    assert len(vggs[16].features) == 31 and len(vggs[19].features) == 37
    assert vggs[16].layer_index["relu4_2"] == 20 and vggs[19].layer_index["relu4_2"] == 22
    assert vggs[16].layer_index["relu5_3"] == 29 and vggs[19].layer_index["relu5_4"] == 35
    assert isinstance(vggs[19].features[36], torch.nn.MaxPool2d)
    assert tuple(vggs[19].features[34].weight.shape) == (512, 512, 3, 3)


@pytest.mark.parametrize("depth", [16, 19])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_vgg_round_trips_a_torchvision_state_dict(vggs, tmp_path, depth, suffix):
    model = vggs[depth]
    path = tmp_path / f"vgg{depth}{suffix}"
    _save(path, torchvision_state(model))
    before = torch.get_rng_state()
    loaded = load_vgg(path)
    assert torch.equal(torch.get_rng_state(), before)  # no random initialisation is drawn
    assert loaded.depth == depth and not loaded.training
    assert all(not p.requires_grad for p in loaded.parameters())
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(depth))
    layers = tuple(model.layer_index)
    expected, got = model(images, layers), loaded(images, layers)
    assert set(got) == set(layers)
    assert all(torch.equal(got[k], expected[k]) for k in layers)


def test_vgg_normalises_inputs_and_passes_gradients_to_them(vggs):
    model = vggs[16]
    images = torch.rand(1, 3, 16, 16, requires_grad=True)
    out = model(images, ("relu1_1", "relu2_1"))
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    conv = model.features[0]
    expected = F.relu(F.conv2d((images - mean) / std, conv.weight, conv.bias, padding=1))
    assert torch.allclose(out["relu1_1"], expected, atol=1e-5)
    assert out["relu2_1"].shape == (1, 128, 8, 8)
    out["relu2_1"].sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_vgg_stops_at_the_deepest_requested_layer(vggs):
    model = vggs[16]

    def refuse(*_):
        raise AssertionError("a layer past relu1_2 ran")

    handle = model.features[4].register_forward_pre_hook(refuse)  # the first max-pool
    try:
        assert set(model(torch.rand(1, 3, 8, 8), ("relu1_2", "relu1_1"))) == {"relu1_1", "relu1_2"}
    finally:
        handle.remove()


def test_vgg_unknown_layer_is_a_user_error(vggs):
    with pytest.raises(UserError, match="VGG-16 has no layer 'relu3_4'"):
        vggs[16](torch.rand(1, 3, 8, 8), ("relu3_4",))


class _WritesMarker:
    """Unpickling this calls open(marker, "w"): a stand-in for any code a .pth could run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def assert_one_line(error: pytest.ExceptionInfo, path: Path, *needles: str) -> None:
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "torchvision VGG-16 or VGG-19" in message
    for needle in needles:
        assert needle in message, message


def test_a_pickled_object_is_refused_without_running_it(vggs, tmp_path):
    path, marker = tmp_path / "evil.pth", tmp_path / "ran"
    state = torchvision_state(vggs[16])
    state["payload"] = _WritesMarker(marker)
    torch.save(state, path)
    with pytest.raises(UserError) as error:
        load_vgg(path)
    assert_one_line(error, path, "refused: it holds the Python object io.open")
    assert not marker.exists()
    # control: an unrestricted unpickle of the same file does run the payload
    torch.load(path, weights_only=False)["payload"].close()
    assert marker.exists()


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("missing", "no such file"),
        ("directory", "not a file"),
        ("suffix", "unknown suffix '.bin'"),
        ("not_a_dict", "does not hold a state dict"),
        ("wrong_shape", "features.10.weight"),
        ("missing_key", "layout"),
        ("batch_norm", "layout"),
        ("garbage_pth", "unreadable torch file"),
        ("garbage_safetensors", "unreadable safetensors file"),
        ("empty_pth", "unreadable torch file (EOFError)"),
    ],
)
def test_bad_weight_files_are_one_line_user_errors(vggs, tmp_path, case, needle):
    state = torchvision_state(vggs[16])
    if case == "missing":
        path = tmp_path / "absent.pth"
    elif case == "directory":
        path = tmp_path / "folder.pth"
        path.mkdir()
    elif case == "suffix":
        path = _save(tmp_path / "vgg.pth", state).rename(tmp_path / "vgg.bin")
    elif case == "not_a_dict":
        path = _save(tmp_path / "list.pth", [torch.zeros(3)])
    elif case == "wrong_shape":
        state["features.10.weight"] = torch.zeros(256, 128, 5, 5)
        path = _save(tmp_path / "shape.safetensors", state)
    elif case == "missing_key":
        del state["features.28.bias"]
        path = _save(tmp_path / "short.pth", state)
    elif case == "batch_norm":
        state["features.1.running_mean"] = torch.zeros(64)
        path = _save(tmp_path / "bn.safetensors", state)
    elif case == "empty_pth":
        path = tmp_path / "empty.pth"
        path.write_bytes(b"")
    else:
        path = tmp_path / ("garbage.pth" if case == "garbage_pth" else "garbage.safetensors")
        path.write_bytes(b"not a weight file at all" * 10)
    with pytest.raises(UserError) as error:
        load_vgg(path)
    assert_one_line(error, path, needle)
