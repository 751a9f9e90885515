"""Fixed random shallow multi-scale convolution features: a texture descriptor that needs no weights.

Ustyuzhaninov et al. (ICLR 2017) showed that Gram matrices of a single layer of random filters at
several scales, followed by a ReLU, already synthesise textures close to VGG's; so stylisation works
with nothing downloaded. The filters come from a seeded generator, never from the global RNG, so
every process (and every resume) builds the same features for a seed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ImageNet statistics of torchvision models; the random features use them too, so both feature kinds
# see the same input scale and a style's loss weights transfer between them
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# one layer per kernel size, as the paper's multi-scale model (it adds 23..55 px kernels: too slow
# for video-sized renders); 128 filters per scale as in the paper
KERNEL_SIZES = (3, 5, 7, 11, 15)
CHANNELS = 128


def imagenet_normalise(images: Tensor) -> Tensor:
    """B×3×H×W images in [0,1] → the input scale ImageNet-trained filters expect."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


class RandomFeatures(nn.Module):
    """ReLU responses of frozen random filters, one single-layer map per kernel size.

    Weights are standard Gaussian (zero-mean) and each filter is scaled to unit L2 norm, so every
    scale responds with the same magnitude and no scale dominates a Gram loss. Borders are reflected
    so a texture's statistics are not diluted by zero padding; images must exceed half the largest
    kernel in each dimension.
    """

    def __init__(self, kernel_sizes: tuple[int, ...] = KERNEL_SIZES, channels: int = CHANNELS, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.kernel_sizes = tuple(kernel_sizes)
        for k in self.kernel_sizes:
            if k < 1 or k % 2 == 0:
                raise ValueError(f"kernel sizes must be odd and positive (same-size maps), got {k}")
            weight = torch.randn(channels, 3, k, k, generator=generator)
            weight /= weight.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            # buffers: frozen, move with .to(device), and stay out of the state dict (the seed rebuilds them)
            self.register_buffer(f"weight_{k}", weight, persistent=False)

    def forward(self, images: Tensor) -> list[Tensor]:
        """B×3×H×W images in [0,1] → one B×channels×H×W map per kernel size, in `kernel_sizes` order."""
        x = imagenet_normalise(images)
        maps = []
        for k in self.kernel_sizes:
            padded = F.pad(x, (k // 2,) * 4, mode="reflect")
            maps.append(F.relu(F.conv2d(padded, getattr(self, f"weight_{k}"))))
        return maps
