"""Image-space stylisation losses on feature maps: pure functions of tensors.

Feature maps come from `RandomFeatures` (weight-free texture) or `VGGFeatures` (ARF, Gatys). Every
loss is differentiable in its first argument; references (style, content) are constants.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# ARF (Zhang et al., ECCV 2022, "ARF: Artistic Radiance Fields", Kai-46/ARF-svox2 nnfm_loss.py and
# opt_style.py): nearest-neighbour feature matching on VGG-16 block 3, its three ReLUs concatenated
# along channels; content = MSE on the same features weighted 5e-3; image TV weighted 1. ARF computes
# both feature losses on renders and style downscaled by 2 (bilinear); that is the caller's choice.
ARF_LAYERS = ("relu3_1", "relu3_2", "relu3_3")
ARF_CONTENT_WEIGHT = 5e-3
ARF_TV_WEIGHT = 1.0
# Gatys et al. (CVPR 2016, "Image Style Transfer Using CNNs"): Gram matrices of the first ReLU of
# each VGG-19 block, equally weighted; content on relu4_2 (its weight depends on the Gram scaling)
GATYS_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
GATYS_CONTENT_LAYER = "relu4_2"
# render positions compared with all style positions at once: 2048 × (128×128) cosines = 128 MiB
NNFM_CHUNK = 2048


def gram(features: Tensor) -> Tensor:
    """B×C×H×W → B×C×C channel correlations divided by H·W (the number of positions).

    Dividing by H·W makes a texture's Gram independent of the image size, so a style image of any
    size is a reference. Not dividing by C keeps the loss from shrinking as 1/C² with wider layers
    (tiny gradients stall Adam at its epsilon); with this scaling `gram_loss` of one layer is 4×
    Gatys et al.'s E_l = Σ(G−A)²/(4C²(HW)²).
    """
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (h * w)


def gram_loss(feats: list[Tensor], refs: list[Tensor]) -> Tensor:
    """Mean over layers of the mean squared difference of Gram matrices.

    Each reference is a B'×C×H'×W' feature map or its precomputed B'×C×C `gram` (compute a fixed
    style's Grams once); B' is B or 1 (one style for the whole batch).
    """
    pairs = zip(feats, refs, strict=True)
    losses = [(gram(f) - (r if r.ndim == 3 else gram(r))).square().mean() for f, r in pairs]
    return torch.stack(losses).mean()


def nn_feature_matching_loss(render_feats: Tensor, style_feats: Tensor, chunk: int = NNFM_CHUNK) -> Tensor:
    """ARF's NNFM: mean over render positions of the cosine distance to the nearest style feature.

    render_feats B×C×H×W, style_feats B'×C×H'×W' (all B'·H'·W' style vectors form one pool). As in
    ARF the nearest neighbour is found without gradient, `chunk` render positions at a time so the
    similarity matrix never exceeds chunk×(B'·H'·W'); the gradient flows through the cosine to the
    matched vector, which equals the gradient of the min. Zero vectors have distance 1 to everything.
    """
    c = render_feats.shape[1]
    render = F.normalize(render_feats.permute(0, 2, 3, 1).reshape(-1, c), dim=1, eps=1e-8)
    style = F.normalize(style_feats.detach().permute(0, 2, 3, 1).reshape(-1, c), dim=1, eps=1e-8)
    with torch.no_grad():
        nearest = torch.cat([(part @ style.T).argmax(dim=1) for part in render.detach().split(chunk)])
    return (1.0 - (render * style[nearest]).sum(dim=1)).mean()


def tv_loss(images: Tensor) -> Tensor:
    """ARF's image total variation: mean of the squared horizontal and vertical neighbour differences."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).square().mean()
    dy = (images[..., 1:, :] - images[..., :-1, :]).square().mean()
    return (dx + dy) / 2


def content_loss(feats: Tensor, refs: Tensor) -> Tensor:
    """Mean squared difference of feature maps: keeps the render's structure while its style changes."""
    return F.mse_loss(feats, refs)


def arf_loss(render: dict[str, Tensor], style: dict[str, Tensor], content: dict[str, Tensor]) -> Tensor:
    """ARF's feature loss: NNFM to the style + `ARF_CONTENT_WEIGHT` × content MSE, on `ARF_LAYERS`.

    Dicts map VGG-16 layer names to activations (`VGGFeatures(..., ARF_LAYERS)`); add
    `ARF_TV_WEIGHT * tv_loss(images)` on the render for ARF's full objective.
    """
    render_block = torch.cat([render[name] for name in ARF_LAYERS], dim=1)
    style_block = torch.cat([style[name] for name in ARF_LAYERS], dim=1)
    content_block = torch.cat([content[name] for name in ARF_LAYERS], dim=1)
    nnfm = nn_feature_matching_loss(render_block, style_block)
    return nnfm + ARF_CONTENT_WEIGHT * content_loss(render_block, content_block)


def gatys_loss(render: dict[str, Tensor], style: dict[str, Tensor]) -> Tensor:
    """Gatys' style term: `gram_loss` over `GATYS_STYLE_LAYERS` (style values may be Grams)."""
    return gram_loss([render[k] for k in GATYS_STYLE_LAYERS], [style[k] for k in GATYS_STYLE_LAYERS])
