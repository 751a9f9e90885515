"""`CanonicalVideo`: the baked 2D form shared by CoDeF and the layered atlas.

Each layer is an editable texture plus, per frame, where every pixel samples it (`uv`), how
opaque the layer is there (`alpha`), an optional multiplicative `shading` residual (light that
changes over time) and an optional additive `detail` residual (dynamic texture no single image
holds: spray, ripples). Both residuals are re-applied to an edited texture; the detail only where
the edit left the texture as it was, so a painted patch does not show the old content's ripples.
Rendering is a pure gather (`grid_sample`) and a back-to-front composite, so re-rendering an
edit never touches the fitted fields. A loaded bake reads its textures at once and its per-frame
fields lazily from a mapping of bake.safetensors, so rendering a long clip a chunk at a time keeps
memory flat.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor

from .atomic import atomic_path, write_json
from .errors import ResumeNeeded, UserError
from .files import RESUME_FIX, CorruptFile, MappedTensors, read_json, read_tensors


@dataclass
class Layer:
    """One canonical layer. uv follows `grid_sample` (x, y in [-1, 1], align_corners=False)."""

    texture: Tensor  # 3×Hc×Wc float32 in [0, 1]
    uv: Tensor  # T×H×W×2 float16
    alpha: Tensor | None = None  # T×H×W float16; None = opaque everywhere
    shading: Tensor | None = None  # T×H×W×3 float16 multiplicative residual; None = 1
    detail: Tensor | None = None  # T×H×W×3 float16 additive residual after shading; None = 0
    fitted_texture: Tensor | None = None  # what `detail` was fitted on, once an edit replaced the texture
    coverage: Tensor | None = None  # Hc×Wc float32: 1 where some frame sees the texel
    name: str = ""


# a texel an edit changed by this much (max over RGB) or more no longer gets the fitted detail
DETAIL_TOLERANCE = 0.1
# frames per gather: a chunk's buffers stay small enough to be reused rather than faulted in afresh
# (bench/render_speed.py, 480p on 2 cores: 4 frames a gather ran 1.5-2x faster than 16)
RENDER_CHUNK = 4
# per-thread buffers that each chunk's float16 fields are converted into (the viewer renders on threads)
_scratch = threading.local()


@dataclass
class CanonicalVideo:
    layers: list[Layer]  # back to front
    fps: float = 30.0
    # the mapping a loaded bake's per-frame fields view: released after each chunk a render reads
    storage: MappedTensors | None = field(default=None, repr=False, compare=False)

    @property
    def T(self) -> int:
        return self.layers[0].uv.shape[0]

    @property
    def H(self) -> int:
        return self.layers[0].uv.shape[1]

    @property
    def W(self) -> int:
        return self.layers[0].uv.shape[2]

    def textures(self) -> list[Tensor]:
        return [layer.texture for layer in self.layers]

    def with_textures(self, textures: list[Tensor]) -> CanonicalVideo:
        if len(textures) != len(self.layers):
            raise ValueError(f"expected {len(self.layers)} textures, got {len(textures)}")
        return replace(
            self,
            layers=[
                replace(la, texture=t, fitted_texture=fitted_texture(la))
                for la, t in zip(self.layers, textures, strict=True)
            ],
        )

    def render(
        self,
        frames: Tensor | list[int] | None = None,
        textures: list[Tensor] | None = None,
        chunk: int = RENDER_CHUNK,
    ) -> Tensor:
        """Frames (all by default) as F×3×H×W; differentiable w.r.t. `textures`."""
        ids = torch.arange(self.T) if frames is None else torch.as_tensor(frames, dtype=torch.long)
        textures = self.textures() if textures is None else textures
        outs = []
        for i in range(0, len(ids), chunk):
            outs.append(render_layers(self.layers, textures, ids[i : i + chunk]))
            if self.storage is not None:
                self.storage.release()
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def layer_weights(self, t: int) -> Tensor:
        """K×H×W: how much each layer contributes to frame t after compositing."""
        return composite_weights([_alpha_of(la, torch.tensor([t]), la.texture)[0, 0] for la in self.layers])

    def save(self, folder: str | Path) -> None:
        """Textures as PNG (RGBA: alpha = coverage) for editing; the per-frame fields in safetensors."""
        from .video import write_image

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, Tensor] = {}
        meta = {"fps": self.fps, "layers": []}
        for k, la in enumerate(self.layers):
            write_image(folder / texture_filename(k), texture_rgba(la))
            tensors[f"{k}.uv"] = la.uv.half().contiguous()
            tensors[f"{k}.texture"] = la.texture.float().contiguous()
            if la.alpha is not None:
                tensors[f"{k}.alpha"] = la.alpha.half().contiguous()
            if la.shading is not None:
                tensors[f"{k}.shading"] = la.shading.half().contiguous()
            if la.detail is not None:
                tensors[f"{k}.detail"] = la.detail.half().contiguous()
            if la.coverage is not None:
                tensors[f"{k}.coverage"] = la.coverage.float().contiguous()
            meta["layers"].append({"name": la.name, "texture": texture_filename(k)})
        with atomic_path(folder / "bake.safetensors") as tmp:
            save_file(tensors, str(tmp))
        write_json(folder / "canonical.json", meta)

    @classmethod
    def load(cls, folder: str | Path) -> CanonicalVideo:
        """Textures read now; uv, alpha, shading and detail mapped, read as frames are rendered."""
        folder = Path(folder)
        path = folder / "bake.safetensors"
        if not path.is_file() or not (folder / "canonical.json").is_file():
            raise ResumeNeeded(f"no baked canonical video in {folder}", folder.parent)
        fix = RESUME_FIX
        meta = read_json(folder / "canonical.json", fix)
        storage = MappedTensors(path, fix)
        t = storage.tensors
        try:
            layers = [
                Layer(
                    texture=t[f"{k}.texture"].clone(),
                    uv=t[f"{k}.uv"],
                    alpha=t.get(f"{k}.alpha"),
                    shading=t.get(f"{k}.shading"),
                    detail=t.get(f"{k}.detail"),
                    coverage=None if f"{k}.coverage" not in t else t[f"{k}.coverage"].clone(),
                    name=str(m.get("name", "")),
                )
                for k, m in enumerate(meta["layers"])
            ]
            fps = float(meta["fps"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CorruptFile(path, f"missing or malformed {e}", fix) from None
        if not layers or not all(_consistent(la, layers[0].uv.shape) for la in layers):
            raise CorruptFile(path, "layers disagree", fix)
        return cls(layers=layers, fps=fps, storage=storage)


def _consistent(layer: Layer, uv_shape: torch.Size) -> bool:
    """Whether a loaded layer's fields have the shapes rendering needs (T×H×W of the first layer)."""
    frames = tuple(uv_shape[:3])
    return (
        layer.uv.ndim == 4
        and tuple(layer.uv.shape) == (*frames, 2)
        and layer.texture.ndim == 3
        and layer.texture.shape[0] == 3
        and (layer.alpha is None or tuple(layer.alpha.shape) == frames)
        and (layer.shading is None or tuple(layer.shading.shape) == (*frames, 3))
        and (layer.detail is None or tuple(layer.detail.shape) == (*frames, 3))
    )


def texture_filename(k: int) -> str:
    return f"layer_{k}.png"


def texture_rgba(layer: Layer) -> Tensor:
    """4×Hc×Wc: RGB with coverage as alpha, so unused texture area is transparent in an editor."""
    cov = layer.coverage if layer.coverage is not None else torch.ones(layer.texture.shape[1:])
    return torch.cat([layer.texture.clamp(0, 1), cov[None].clamp(0, 1)])


def _alpha_of(layer: Layer, ids: Tensor, ref: Tensor) -> Tensor:
    if layer.alpha is None:
        return torch.ones(len(ids), 1, layer.uv.shape[1], layer.uv.shape[2], dtype=ref.dtype)
    return layer.alpha[ids].to(ref.dtype)[:, None]


def sample_texture(texture: Tensor, uv: Tensor) -> Tensor:
    """texture C×Hc×Wc, uv B×H×W×2 → B×C×H×W, one grid_sample over all B frames.

    The CPU kernel parallelises over the batch only, so the texture is expanded (not copied) to one
    image per frame and every thread gathers; the values are the same either way. Where the texture
    needs a gradient the frames go as one tall image, as the expanded form's gradient would hold a
    texture per frame.
    """
    b, h, w, _ = uv.shape
    grid = uv.to(texture.dtype)
    if texture.requires_grad and torch.is_grad_enabled():
        out = F.grid_sample(
            texture[None], grid.reshape(1, b * h, w, 2), padding_mode="border", align_corners=False
        )
        return out.reshape(texture.shape[0], b, h, w).transpose(0, 1)
    return F.grid_sample(texture.expand(b, *texture.shape), grid, padding_mode="border", align_corners=False)


def _take(values: Tensor, ids: Tensor) -> Tensor:
    """values[ids]: a run of consecutive frames is a slice, so a mapped field is read once, in place."""
    first = int(ids[0]) if len(ids) else -1
    if first >= 0 and torch.equal(ids, torch.arange(first, first + len(ids))):
        return values[first : first + len(ids)]
    return values[ids]


def _converted(values: Tensor, dtype: torch.dtype, slot: str, reuse: bool) -> Tensor:
    """`values` as `dtype`; with `reuse`, in this thread's buffer for `slot`, overwritten next chunk.

    A fresh buffer a chunk is page-faulted in anew each time, which cost more than the conversion
    itself (bench/render_speed.py); a gradient may keep the values, so then they are fresh.
    """
    if values.dtype == dtype or not reuse:
        return values.to(dtype)
    buffer = getattr(_scratch, slot, None)
    if buffer is None or (buffer.shape, buffer.dtype, buffer.device) != (values.shape, dtype, values.device):
        buffer = torch.empty(values.shape, dtype=dtype, device=values.device)
        setattr(_scratch, slot, buffer)
    return buffer.copy_(values)


def render_layers(layers: list[Layer], textures: list[Tensor], ids: Tensor) -> Tensor:
    """Back-to-front `over` composite of every layer for frames `ids` → B×3×H×W.

    Each layer's colour is a fresh tensor, so shading, detail, alpha and the composite are applied in
    place (no gradient needs the values they overwrite); the values are those of the plain expressions.
    """
    fields = [t for la in layers for t in (la.uv, la.alpha, la.shading, la.detail) if t is not None]
    reuse = not torch.is_grad_enabled() or not any(t.requires_grad for t in (*textures, *fields))
    out: Tensor | None = None
    for la, tex in zip(layers, textures, strict=True):
        uv = _converted(_take(la.uv, ids), tex.dtype, "uv", reuse)
        color = sample_texture(tex, uv)
        if la.shading is not None:
            shading = _converted(_take(la.shading, ids), color.dtype, "shading", reuse)
            color = color.mul_(shading.permute(0, 3, 1, 2))
        if la.detail is not None:
            detail = _converted(_take(la.detail, ids), color.dtype, "detail", reuse).permute(0, 3, 1, 2)
            fitted = fitted_texture(la)
            if tex is not fitted:
                detail = detail * kept_detail(sample_texture(tex, uv), sample_texture(fitted.to(tex), uv))
            color = color.add_(detail)
        if la.alpha is None:
            out = color
        else:
            a = _converted(_take(la.alpha, ids), color.dtype, "alpha", reuse)[:, None]
            out = color.mul_(a) if out is None else out.lerp_(color, a)
    assert out is not None
    return out


def fitted_texture(layer: Layer) -> Tensor:
    """The texture the layer's residuals were fitted on: the edit's starting point, not the edit."""
    return layer.texture if layer.fitted_texture is None else layer.fitted_texture


def kept_detail(edited: Tensor, original: Tensor) -> Tensor:
    """B×1×H×W in [0, 1]: how much of the fitted detail an edited texture sample keeps.

    All where the edit left the texel as it was, none where it changed it by `DETAIL_TOLERANCE` or
    more: ripples stay on unedited water and do not show through a patch painted over it.
    """
    change = (edited.detach() - original).abs().amax(1, keepdim=True)
    return (1 - change / DETAIL_TOLERANCE).clamp(0, 1)


def composite_weights(alphas: list[Tensor]) -> Tensor:
    """Per-layer contribution of a back-to-front `over` composite: a_k · Π_{j>k} (1 − a_j)."""
    weights = []
    transmit = torch.ones_like(alphas[0])
    for a in reversed(alphas):
        weights.append(a * transmit)
        transmit = transmit * (1 - a)
    return torch.stack(weights[::-1])


def over(texture: Tensor, rgba: Tensor) -> Tensor:
    """Composite an RGBA edit (4×Hc×Wc, straight alpha) over an RGB texture."""
    a = rgba[3:4]
    return texture * (1 - a) + rgba[:3] * a


def fit_to_texture(image: Tensor, texture: Tensor, what: str) -> Tensor:
    """Resize a user image to the texture's size, refusing a different aspect ratio."""
    _, h, w = texture.shape
    ih, iw = image.shape[1:]
    if abs(ih / iw - h / w) > 0.02 * (h / w):
        raise UserError(
            f"{what} is {iw}×{ih} but the canonical texture is {w}×{h}; "
            "edit the exported layer PNG at its own size (or the same aspect ratio)"
        )
    if (ih, iw) == (h, w):
        return image
    return F.interpolate(image[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]


def apply_canonical_edit(texture: Tensor, image: Tensor) -> Tensor:
    """RGB replaces the texture; RGBA composites over it."""
    image = fit_to_texture(image, texture, "the edited canonical image")
    return image[:3].clone() if image.shape[0] == 3 else over(texture, image)


def changed_mask(edited: Tensor, original: Tensor, tol: float = 3 / 255) -> Tensor:
    """H×W float: pixels the user changed (any channel differs by more than `tol`)."""
    return ((edited[:3] - original[:3]).abs().amax(0) > tol).float()


def splat(values: Tensor, uv: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear splat of N×C `values` at grid_sample coords N×2 into C×Hc×Wc (adjoint of sampling)."""
    hc, wc = size
    x = (uv[:, 0] + 1) * wc / 2 - 0.5
    y = (uv[:, 1] + 1) * hc / 2 - 0.5
    x0, y0 = x.floor(), y.floor()
    out = values.new_zeros(values.shape[1], hc * wc)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            w = (1 - (x - xi).abs()) * (1 - (y - yi).abs())
            ok = (xi >= 0) & (xi < wc) & (yi >= 0) & (yi < hc) & (w > 0)
            idx = (yi[ok] * wc + xi[ok]).long()
            out.index_add_(1, idx, (values[ok] * w[ok, None]).T)
    return out.reshape(-1, hc, wc)


def supersample_factor(uv: Tensor, weight: Tensor, tex_hw: tuple[int, int]) -> int:
    """How finely to resample frame t so splatting leaves no holes where the texture is magnified."""
    hc, wc = tex_hw
    du = (uv[:, 1:, :] - uv[:, :-1, :]) * torch.tensor([wc / 2, hc / 2])
    dv = (uv[1:, :, :] - uv[:-1, :, :]) * torch.tensor([wc / 2, hc / 2])
    step = torch.maximum(du.norm(dim=-1)[:-1, :], dv.norm(dim=-1)[:, :-1])
    sel = step[weight[:-1, :-1] > 0]
    if sel.numel() == 0:
        return 1
    return int(min(4, max(1, math.ceil(float(torch.quantile(sel.float(), 0.95)) * 1.2))))


def lift_keyframe(
    cv: CanonicalVideo,
    t: int,
    edited: Tensor,
    original: Tensor,
    mask: Tensor | None = None,
    refine_iters: int = 20,
) -> list[Tensor]:
    """Lift the changed pixels of an edited frame t into every layer's texture.

    Each changed pixel is splatted into layer k at `uv_k[t]` with its composite weight in that
    frame, divided by the layer's shading so the shading is re-applied on render; the frame is
    supersampled where the texture is magnified so the splat leaves no holes. Splatting then
    sampling blurs, so iterative back-projection (Irani & Peleg) then refines the edited texels
    until frame t re-renders as the user painted it.
    """
    if not 0 <= t < cv.T:
        raise UserError(f"keyframe {t} is out of range; the video has frames 0..{cv.T - 1}")
    if edited.shape[1:] != (cv.H, cv.W):
        raise UserError(
            f"the edited frame is {edited.shape[2]}×{edited.shape[1]} but the run's frames are "
            f"{cv.W}×{cv.H}; edit a frame exported by 'canon-edit render --frame' at its own size"
        )
    edited = edited[:3].float()
    change = changed_mask(edited, original) if mask is None else mask.float()
    weights = cv.layer_weights(t)
    textures, regions, norms = [], [], []
    uvs = [la.uv[t].float() for la in cv.layers]
    for k, la in enumerate(cv.layers):
        tex = la.texture
        w_all = weights[k]
        s = supersample_factor(uvs[k], w_all * change, tuple(tex.shape[1:]))
        fields = torch.cat([uvs[k].permute(2, 0, 1), _unshade(la, t, edited), w_all[None], change[None]])
        if s > 1:
            fields = F.interpolate(fields[None], scale_factor=s, mode="bilinear", align_corners=False)[0]
        uv_s, color_s, w_s, ch_s = fields[:2], fields[2:5], fields[5], fields[6]
        wc = (w_s * ch_s).reshape(-1, 1)
        vals = torch.cat([color_s.reshape(3, -1).T * wc, wc, w_s.reshape(-1, 1)], 1)
        acc = splat(vals, uv_s.permute(1, 2, 0).reshape(-1, 2), tex.shape[1:])
        edit_w, seen_w = acc[3], acc[4]
        a = (edit_w / seen_w.clamp_min(1e-6)).clamp(0, 1) * (seen_w > 1e-4)
        edit_rgb = acc[:3] / edit_w.clamp_min(1e-6)
        textures.append(torch.where(a[None] > 0, tex * (1 - a) + edit_rgb.clamp(0, 1) * a, tex))
        regions.append(a > 0)
        norms.append(splat(w_all.reshape(-1, 1) ** 2, uvs[k].reshape(-1, 2), tex.shape[1:])[0])
    ids = torch.tensor([t])
    for _ in range(refine_iters):
        resid = (edited - render_layers(cv.layers, textures, ids)[0]) * change
        for k, la in enumerate(cv.layers):
            r = (_unshade(la, t, resid) * weights[k]).reshape(3, -1).T
            delta = splat(r, uvs[k].reshape(-1, 2), textures[k].shape[1:]) / norms[k].clamp_min(1e-3)
            textures[k] = torch.where(regions[k][None], (textures[k] + delta).clamp(0, 1), textures[k])
    return textures


def _unshade(layer: Layer, t: int, color: Tensor) -> Tensor:
    """Divide out the layer's shading at frame t, so the shading is re-applied on render."""
    if layer.shading is None:
        return color
    return color / layer.shading[t].float().permute(2, 0, 1).clamp_min(1e-3)


def keyframe_textures(
    cv: CanonicalVideo, source_frame: Tensor, t: int, edited: Tensor, mask: Tensor | None = None
) -> list[Tensor]:
    """Lift an edited frame t whether the user started from the source frame or from the render.

    A pixel counts as changed only if it differs from both, so reconstruction error is never
    mistaken for an edit.
    """
    if mask is None:
        render = cv.render([t])[0].clamp(0, 1)
        mask = changed_mask(edited, source_frame) * changed_mask(edited, render)
    return lift_keyframe(cv, t, edited, source_frame, mask=mask)


TEXTURES = "textures.safetensors"


def write_textures(folder: Path, textures: list[Tensor]) -> None:
    """Edited textures twice: exact (textures.safetensors) and as layer_K.png for an image editor."""
    from .video import write_image

    folder.mkdir(parents=True, exist_ok=True)
    save_file({f"{k}": t.float().contiguous() for k, t in enumerate(textures)}, str(folder / TEXTURES))
    for k, tex in enumerate(textures):
        write_image(folder / texture_filename(k), tex.clamp(0, 1))


def read_textures(folder: Path, name: str) -> list[Tensor]:
    """The textures `write_textures` wrote in `folder`, for edit `name`."""
    path = folder / TEXTURES
    if not path.is_file():
        raise UserError(f"edit '{name}' holds no textures (it was made on another kind of run)")
    t = read_tensors(path, f"make edit '{name}' again, replacing it")
    try:
        return [t[str(k)] for k in range(len(t))]
    except KeyError:
        raise UserError(f"{path} is corrupt (layers missing); make the edit again") from None
