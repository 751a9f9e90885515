"""torchvision's VGG-16/19 feature stacks, built here so a user's weights load without torchvision.

The layer indices equal those of `torchvision.models.vgg16().features` / `vgg19().features`, so a
torchvision state dict (`features.N.weight`, ...; `classifier.*` is ignored) loads as it is. Weights
are never downloaded: the user gives a file. `.pth/.pt` files are read with `weights_only=True` and
`.safetensors` with safetensors, so loading one can never run code.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from ..errors import UserError
from .features import imagenet_normalise

WIDTHS = (64, 128, 256, 512, 512)  # output channels of the five blocks
CONVS_PER_BLOCK = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}  # torchvision's configurations "D" and "E"
FIX = (
    "give a torchvision VGG-16 or VGG-19 state dict (.pth/.pt saved with torch.save(model.state_dict()), "
    "or .safetensors)"
)


def _convs(depth: int) -> list[tuple[int, str, int, int]]:
    """(index in `features`, name of the ReLU after it, in, out channels) of each 3×3 conv.

    A conv at index i is followed by its ReLU at i + 1; each block ends with a 2×2 max-pool.
    """
    convs, index, channels = [], 0, 3
    for block, (width, count) in enumerate(zip(WIDTHS, CONVS_PER_BLOCK[depth], strict=True), start=1):
        for i in range(1, count + 1):
            convs.append((index, f"relu{block}_{i}", channels, width))
            index, channels = index + 2, width
        index += 1
    return convs


def _shapes(depth: int) -> dict[str, tuple[int, ...]]:
    """The state-dict keys and shapes of torchvision's `vggDEPTH().features`."""
    shapes: dict[str, tuple[int, ...]] = {}
    for index, _, c_in, c_out in _convs(depth):
        shapes[f"features.{index}.weight"] = (c_out, c_in, 3, 3)
        shapes[f"features.{index}.bias"] = (c_out,)
    return shapes


class VGGFeatures(nn.Module):
    """A frozen VGG-16/19 `features` stack returning named ReLU activations of [0,1] images.

    Constructed directly it has random weights (for tests); `load_vgg` gives the user's.
    """

    def __init__(self, depth: int):
        super().__init__()
        if depth not in CONVS_PER_BLOCK:
            raise ValueError(f"VGG depth must be 16 or 19, got {depth}")
        modules: list[nn.Module] = []
        for index, _, c_in, c_out in _convs(depth):
            if len(modules) < index:  # the gap before a block's first conv is the previous block's pool
                modules.append(nn.MaxPool2d(2, 2))
            modules += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]  # not in place: we return them
        modules.append(nn.MaxPool2d(2, 2))
        self.depth = depth
        self.layer_index = {name: index + 1 for index, name, _, _ in _convs(depth)}
        self.features = nn.Sequential(*modules)
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: Tensor, layers: tuple[str, ...]) -> dict[str, Tensor]:
        """B×3×H×W images in [0,1] → {layer: activation}; runs only up to the deepest requested layer."""
        unknown = [name for name in layers if name not in self.layer_index]
        if unknown:
            raise UserError(
                f"VGG-{self.depth} has no layer {unknown[0]!r}; choose from {', '.join(self.layer_index)}"
            )
        wanted = {self.layer_index[name]: name for name in layers}
        x = imagenet_normalise(images)
        out: dict[str, Tensor] = {}
        for index, module in enumerate(self.features[: max(wanted, default=-1) + 1]):
            x = module(x)
            if index in wanted:
                out[wanted[index]] = x
        return out


def _error(path: Path, problem: str) -> UserError:
    return UserError(f"{path}: {problem}; {FIX}")


def _reason(error: Exception) -> str:
    """The informative line of a loader's error (torch's weights-only message puts it after a preamble)."""
    text = str(error).split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:160]


def _read(path: Path) -> object:
    """The object stored in `path`, read without running any code the file could carry."""
    if not path.exists():
        raise _error(path, "no such file")
    if not path.is_file():
        raise _error(path, "not a file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise _error(path, f"unreadable safetensors file ({_reason(e)})") from None
    if suffix in (".pth", ".pt"):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
            if found:
                problem = (
                    f"refused: it holds the Python object {found[1]}, and unpickling objects could run code"
                )
                raise _error(path, problem) from None
            raise _error(path, f"unreadable torch file ({_reason(e)})") from None
        except (RuntimeError, EOFError, OSError, ValueError) as e:
            raise _error(path, f"unreadable torch file ({_reason(e)})") from None
    raise _error(path, f"unknown suffix {path.suffix!r}, not .pth, .pt or .safetensors")


def load_vgg(path: str | Path) -> VGGFeatures:
    """The VGG-16 or VGG-19 (told apart by the conv layers present) whose weights `path` holds.

    Every problem is one `UserError` line naming the file, the problem and the fix. Loading draws
    nothing from the global RNG, so a seeded run stays reproducible.
    """
    path = Path(path)
    state = _read(path)
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise _error(path, "does not hold a state dict (a flat mapping of names to tensors)")
    features = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    depth = next((d for d in CONVS_PER_BLOCK if set(_shapes(d)) == set(features)), None)
    if depth is None:
        raise _error(
            path,
            f"its {len(features)} non-classifier tensors are not torchvision's VGG-16 (features.0-28) "
            "or VGG-19 (features.0-34) layout, e.g. a batch-norm VGG or another network",
        )
    for key, shape in _shapes(depth).items():
        tensor = features[key]
        if tuple(tensor.shape) != shape or not tensor.is_floating_point():
            raise _error(
                path,
                f"{key} is a {tensor.dtype} tensor of shape {tuple(tensor.shape)}, not VGG-{depth}'s "
                f"floating-point {shape}",
            )
    with torch.device("meta"):  # no random initialisation: the file's weights replace it all
        model = VGGFeatures(depth)
    model.load_state_dict({k: v.float() for k, v in features.items()}, assign=True)
    return model
