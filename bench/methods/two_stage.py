"""The paper's two-stage pipeline: a coarse fill at 512 px, refinement at full resolution.

Pipeline (the published inference code, step by step; see
``../shared/reference/ARCHITECTURES.md``), on an image already zero-padded on the
bottom/right to a multiple of 256 (the shared wrapper does that, ``pad_multiple = 256``):

1. Coarse stage (:func:`dfnet_coarse`): OpenCV ``INTER_NEAREST`` resize so the long side
   is 512 (short side ``short * 512 // long``), centred in a 512×512 zero canvas; DFNet
   on BGR in [0, 1] with mask 1 = known; composite; ×255 and truncation to uint8; crop
   the centred region back. Any other registered method can stand in for DFNet
   (:func:`method_coarse`, used by ``two-stage:<base>``).
2. :func:`upscale_coarse`: OpenCV bilinear resize of the uint8 coarse result to the padded
   size; :func:`matched_image` puts it into the hole.
3. :func:`shifted_stack`: the 20-channel refinement input — the hole mask, the matched
   image, and four copies shifted up, down, right and left by :func:`refine_shift` pixels,
   each followed by its shifted mask; pixels shifted in are image 1/255 and mask 1.
4. :func:`refine`: the refinement network, ×255 and truncation to uint8.

Refinement networks. Any ``torch.nn.Module`` can serve as the refinement stage if
``net(image19, mask)`` maps ``image19`` float[B, 19, H, W] (stack channels 1–19, values in
[0, 1]) and ``mask`` float[B, 1, H, W] (1 = hole) to float[B, 3, H, W] RGB in [0, 1] and
leaves the known region equal to ``image19[:, :3]`` (output = mask·pred + (1 − mask)·input).
A module may also define ``forward_stack(stack20)`` taking the whole [B, 20, H, W] stack
(mask first); :func:`refine` prefers it because it avoids re-concatenating a full-size
tensor. H and W are multiples of 256.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import ClassVar

import cv2
import numpy as np

from ..devices import resolve_device
from ..errors import UserError
from . import weights
from .base import Inpainter, MethodContext, create, register
from .base import unavailable_reason as method_unavailable_reason

COARSE_SIZE = 512  # the coarse network's working size (pixels, square)
PAD_MULTIPLE = 256  # both networks see sides divisible by this
SHIFT_NUMERATOR, SHIFT_DENOMINATOR = 100, 512  # shift = 100/512 of the padded height


# -- geometry ---------------------------------------------------------------------------------
def refine_shift(height: int) -> int:
    """Shift in pixels for the refinement copies: 100/512 × ``height`` (padded height).

    ``height`` is a multiple of 256 in the pipeline, so the product is whole; for other
    heights (e.g. training patches) the published code's float shift is truncated the way
    ``scipy.ndimage.shift(order=0)`` would not, so those are refused rather than guessed.
    """
    num = SHIFT_NUMERATOR * int(height)
    if num % SHIFT_DENOMINATOR:
        raise ValueError(
            f"refine_shift: height {height} gives a fractional shift; use a multiple of 128"
        )
    return num // SHIFT_DENOMINATOR


def fit_geometry(height: int, width: int, size: int = COARSE_SIZE) -> tuple[int, int, int, int]:
    """Where an image of ``height``×``width`` goes in a ``size``×``size`` canvas.

    Returns ``(new_h, new_w, top, left)``: the long side becomes ``size``, the short side
    ``short * size // long`` (rounded down), centred at offset ``(size - new) // 2`` (an odd
    margin's extra pixel goes after). Equal sides count as "width is the long side",
    as in the published code (no effect on the result).
    """
    if height > width:
        new_w = width * size // height
        return size, new_w, 0, (size - new_w) // 2
    new_h = height * size // width
    return new_h, size, (size - new_h) // 2, 0


def resize_to_fit(arr: np.ndarray, size: int = COARSE_SIZE) -> np.ndarray:
    """OpenCV ``INTER_NEAREST`` resize of ``arr`` (uint8, H×W or H×W×C) to the fitted size.

    OpenCV's legacy nearest (source index ``floor(i * in / out)``) is what the published
    pipeline uses; it differs from :func:`bench.resize.resize_nearest` on purpose.
    """
    new_h, new_w, _, _ = fit_geometry(arr.shape[0], arr.shape[1], size)
    out = cv2.resize(arr, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
    if arr.ndim == 3 and out.ndim == 2:  # OpenCV drops a single channel axis
        out = out[..., None]
    return out


def upscale_coarse(coarse: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear (OpenCV default ``INTER_LINEAR``, fixed-point on uint8) resize to H×W."""
    if coarse.dtype != np.uint8:
        raise TypeError(f"upscale_coarse: expected uint8, got {coarse.dtype}")
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)


def matched_image(image: np.ndarray, hole: np.ndarray, coarse_up: np.ndarray) -> np.ndarray:
    """uint8[H, W, 3]: ``image`` with the hole (bool[H, W], True = hole) from ``coarse_up``."""
    return np.where(hole[..., None], coarse_up, image)


# -- the 20-channel refinement input --------------------------------------------------------------
def shifted_stack(matched, hole, shift: int, no_shift: bool = False):
    """Build the refinement input float[B, 20, H, W] from tensors.

    ``matched``: float[B, 3, H, W] in [0, 1], the image with the coarse fill in the hole
    (for exact conformance: uint8 values divided by 255 in float32). ``hole``: float[B, 1,
    H, W], 1 = hole. ``shift``: pixels (:func:`refine_shift`). Channel order:
    ``[mask, matched, up, mask-up, down, mask-down, right, mask-right, left, mask-left]``
    where up means ``out[y] = in[y + s]``, down ``out[y] = in[y - s]``, right
    ``out[x] = in[x - s]``, left ``out[x] = in[x + s]``; pixels shifted in from outside get
    image value 1/255 and mask 1. ``no_shift=True`` (the ablation) puts plain copies in the
    four shifted slots. The output is the only full-size allocation; it has ``matched``'s
    dtype and device.
    """
    import torch

    if matched.ndim != 4 or matched.shape[1] != 3:
        raise ValueError(f"shifted_stack: matched must be [B,3,H,W], got {tuple(matched.shape)}")
    b, _, h, w = matched.shape
    if tuple(hole.shape) != (b, 1, h, w):
        raise ValueError(f"shifted_stack: hole must be [{b},1,{h},{w}], got {tuple(hole.shape)}")
    if shift < 0:
        raise ValueError(f"shifted_stack: shift must be >= 0, got {shift}")
    out = matched.new_empty((b, 20, h, w))
    out[:, 0:1] = hole
    out[:, 1:4] = matched
    # 1/255 computed in the working dtype, as the published code's uint8 1 / 255 is.
    fill_img = torch.ones((), dtype=matched.dtype, device=matched.device) / 255
    for k in range(4):
        img_ch = slice(4 + 4 * k, 7 + 4 * k)
        mask_ch = slice(7 + 4 * k, 8 + 4 * k)
        if no_shift:
            out[:, img_ch] = matched
            out[:, mask_ch] = hole
            continue
        sh = min(shift, h if k < 2 else w)
        dst, src, fill = _shift_slices(k, sh, h, w)
        out[:, img_ch][dst] = matched[src]
        out[:, mask_ch][dst] = hole[src]
        out[:, img_ch][fill] = fill_img
        out[:, mask_ch][fill] = 1
    return out


def _shift_slices(direction: int, s: int, h: int, w: int):
    """(destination, source, fill) index tuples over [B, C, H, W] for one direction.

    direction 0 = up, 1 = down, 2 = right, 3 = left (the order of the stack).
    """
    all_ = slice(None)
    if direction == 0:  # up: out[y] = in[y + s]
        return ((all_, all_, slice(0, h - s)), (all_, all_, slice(s, h)),
                (all_, all_, slice(h - s, h)))
    if direction == 1:  # down: out[y] = in[y - s]
        return ((all_, all_, slice(s, h)), (all_, all_, slice(0, h - s)),
                (all_, all_, slice(0, s)))
    if direction == 2:  # right: out[x] = in[x - s]
        return ((all_, all_, all_, slice(s, w)), (all_, all_, all_, slice(0, w - s)),
                (all_, all_, all_, slice(0, s)))
    # left: out[x] = in[x + s]
    return ((all_, all_, all_, slice(0, w - s)), (all_, all_, all_, slice(s, w)),
            (all_, all_, all_, slice(w - s, w)))


# -- stage 1: coarse fill at 512 ---------------------------------------------------------------
def dfnet_coarse(net, image: np.ndarray, hole: np.ndarray, device: str = "cpu",
                 native_conv: bool = True) -> np.ndarray:
    """The published coarse stage: uint8 RGB [new_h, new_w, 3] (see :func:`fit_geometry`).

    ``net``: a DFNet-like module, ``net(masked_bgr, known)`` returning a list whose first
    item is float[1, 3, 512, 512] BGR in [0, 1]; its ``first_output(masked_bgr, known)``
    is used instead when present (it skips work whose result the composite discards).
    ``image``: uint8[H, W, 3] RGB (padded, hole zeroed); ``hole``: bool[H, W]. The float
    steps follow the published code's order
    (float32 ``/255``, ``1 - mask``, composite, ``×255``, truncation) so the result matches
    its output bit for bit when the convolutions do. ``native_conv`` runs the CPU
    convolutions with PyTorch's own (im2col + GEMM) kernels instead of oneDNN: that is
    what reproduces the reference ``coarse512.png`` exactly (oneDNN flips 1–2 truncations
    per image); it costs little at 512 px.
    """
    new_h, new_w, top, left = fit_geometry(*hole.shape)
    canvas = np.zeros((COARSE_SIZE, COARSE_SIZE, 4), dtype=np.uint8)
    canvas[top : top + new_h, left : left + new_w, :3] = resize_to_fit(image[..., ::-1])  # BGR
    canvas[top : top + new_h, left : left + new_w, 3] = resize_to_fit(hole.view(np.uint8)) * 255
    with _conv_backend(native_conv and device == "cpu"):
        out = _dfnet_canvas(net, canvas, device)
    return np.ascontiguousarray(out[top : top + new_h, left : left + new_w, ::-1])  # BGR->RGB


def dfnet_full(net, image: np.ndarray, hole: np.ndarray, device: str = "cpu") -> np.ndarray:
    """DFNet at the image's own (padded) size, no resizing: uint8 RGB [H, W, 3]."""
    canvas = np.concatenate([image[..., ::-1], hole.view(np.uint8)[..., None] * 255], axis=2)
    with _conv_backend():
        out = _dfnet_canvas(net, canvas, device)
    return np.ascontiguousarray(out[..., ::-1])


def _dfnet_canvas(net, canvas: np.ndarray, device: str) -> np.ndarray:
    """DFNet on uint8[H, W, 4] (BGR + mask 255 = hole) → composited uint8 BGR [H, W, 3]."""
    import torch

    with torch.inference_mode():
        t = torch.from_numpy(canvas).to(device).permute(2, 0, 1).unsqueeze(0).float().div(255)
        img, known = t[:, :3], 1 - t[:, 3:]
        masked = img * known
        if hasattr(net, "first_output"):
            pred = net.first_output(masked, known)
        else:
            pred = net(masked, known)[0]
        comp = img * known + pred * (1 - known)
        u8 = comp.mul(255).to(torch.uint8)  # truncation toward zero, as ``.byte()``
        return u8[0].permute(1, 2, 0).cpu().numpy()


@contextmanager
def _conv_backend(native_cpu: bool = False):
    """Full-float32 convolutions for the duration (process-wide switches, restored after).

    ``native_cpu`` routes CPU convolutions away from oneDNN (see :func:`dfnet_coarse`).
    On CUDA, TF32 convolutions (PyTorch's default on Ampere and newer) are turned off:
    their 10-bit mantissa would move the truncated uint8 outputs far more than 1/255.
    """
    import torch

    before = torch.backends.mkldnn.enabled, torch.backends.cudnn.allow_tf32
    if native_cpu:
        torch.backends.mkldnn.enabled = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled, torch.backends.cudnn.allow_tf32 = before


def method_coarse(method, image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Any registered method as the coarse stage: uint8 RGB [new_h, new_w, 3].

    ``method`` is an :class:`~bench.methods.base.Inpainter` (e.g. from
    ``bench.methods.create("telea")``); it runs on the image reduced with the same OpenCV
    nearest resize as DFNet's input, without the zero canvas (that canvas exists only
    because DFNet needs a square input). A hole that vanishes at 512 px needs no coarse fill.
    """
    small = resize_to_fit(image)
    small_hole = resize_to_fit(hole.view(np.uint8)) > 0
    if not small_hole.any():
        return small
    return method(small, small_hole)


def upscaled_coarse(method, image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """:func:`method_coarse` upscaled bilinearly to ``image``'s size: uint8 RGB [H, W, 3]."""
    return upscale_coarse(method_coarse(method, image, hole), *hole.shape)


class CoarseAt512(Inpainter):
    """A registered method run at 512 px as the coarse stage sees it, then upscaled.

    The same reduction (aspect kept, OpenCV nearest) and bilinear upscale as the two-stage
    pipeline, so this row of a table is exactly the coarse base a refinement starts from.
    Subclasses name the base in ``base_name``.
    """

    base_name: ClassVar[str] = ""
    libraries = ("cv2",)

    def __init__(self, context: MethodContext | None = None, arg: str | None = None):
        super().__init__(context, arg)
        self.base = create(self.base_name, self.context)

    @classmethod
    def uses_methods(cls, context: MethodContext, arg: str | None = None) -> list[str]:
        return [cls.base_name]

    @classmethod
    def unavailable_reason(cls, context: MethodContext, arg: str | None = None) -> str | None:
        reason = method_unavailable_reason(cls.base_name, context)
        return f"base method {cls.base_name!r}: {reason}" if reason else None

    def set_item(self, image_id: str, resolution: int) -> None:
        self.base.set_item(image_id, resolution)

    def _inpaint(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return upscaled_coarse(self.base, image, mask)

    def metadata(self) -> dict:
        meta = super().metadata()
        meta.update(coarse_size=COARSE_SIZE, upscale="OpenCV bilinear on uint8", base=self.base.metadata())
        return meta

    def close(self) -> None:
        self.base.close()


@register("telea@512", default=True)
class Telea512(CoarseAt512):
    description = "Telea at 512 px, upscaled bilinearly (the coarse base of two-stage-slim)"
    base_name = "telea"


# -- stage 2: refinement ------------------------------------------------------------------------
def refine(net, matched: np.ndarray, hole: np.ndarray, device: str = "cpu",
           no_shift: bool = False) -> np.ndarray:
    """Run a refinement network (interface: module docstring): uint8 RGB [H, W, 3].

    ``matched``: uint8[H, W, 3] RGB with the coarse fill in the hole; ``hole``: bool[H, W].
    H must give a whole :func:`refine_shift`. The result is ``×255`` then truncated.
    """
    import torch

    h, w = hole.shape
    with torch.inference_mode():
        m = torch.from_numpy(np.ascontiguousarray(matched)).to(device)
        m = m.permute(2, 0, 1).unsqueeze(0).float().div(255)
        hl = torch.from_numpy(hole.view(np.uint8)).to(device).view(1, 1, h, w).float()
        stack = shifted_stack(m, hl, refine_shift(h), no_shift=no_shift)
        del m
        with _conv_backend():
            if hasattr(net, "forward_stack"):
                out = net.forward_stack(stack)
            else:
                out = net(stack[:, 1:], stack[:, :1])
        del stack
        u8 = out.mul_(255).to(torch.uint8)
        return np.ascontiguousarray(u8[0].permute(1, 2, 0).cpu().numpy())


# -- the registered methods ----------------------------------------------------------------------
def configure_threads() -> int:
    """Cap torch's CPU threads at the CPUs this process may use; returns the count.

    torch counts the machine's cores, which in a container or under ``taskset`` can be
    more than this process gets; oversubscribed threads make convolutions slower.
    ``HRBENCH_THREADS`` overrides the count.
    """
    import torch

    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        allowed = os.cpu_count() or 1
    want = int(os.environ.get("HRBENCH_THREADS", "0")) or min(torch.get_num_threads(), allowed)
    if torch.get_num_threads() != want:
        torch.set_num_threads(max(1, want))
    return torch.get_num_threads()


def _cuda_reason(context: MethodContext) -> str | None:
    if context.device != "cuda":
        return None
    try:
        resolve_device("cuda")
    except UserError as exc:
        return str(exc)
    return None


class _TorchInpainter(Inpainter):
    """Shared plumbing: weights lookup, lazy one-time model loading, device, metadata."""

    pad_multiple = PAD_MULTIPLE
    uses_gpu = True
    needs: ClassVar[tuple[weights.WeightsFile, ...]] = ()
    code_modules = ("bench.methods.nets",)
    libraries = ("torch", "cv2")

    def __init__(self, context: MethodContext | None = None, arg: str | None = None):
        super().__init__(context, arg)
        self.device = "cuda" if self.context.device == "cuda" else "cpu"
        self.paths = {f.key: weights.require(f, self.context) for f in self.needs}
        self._nets: dict = {}

    @classmethod
    def unavailable_reason(cls, context: MethodContext, arg: str | None = None) -> str | None:
        return _cuda_reason(context) or weights.missing_reason(cls.needs, context)

    @classmethod
    def weights_files(cls, context: MethodContext, arg: str | None = None) -> list:
        return [p for f in cls.needs if (p := weights.find(f, context)) is not None]

    def net(self, key: str):
        """The network for weights ``key`` ('dfnet' or 'refinement'), loaded on first use."""
        if key not in self._nets:
            from . import nets

            if self.device == "cpu":
                configure_threads()
            loader = nets.load_dfnet if key == "dfnet" else nets.load_refinement
            self._nets[key] = loader(self.paths[key], self.device)
        return self._nets[key]

    def metadata(self) -> dict:
        meta = super().metadata()
        meta["weights"] = {k: weights.file_record(p) for k, p in self.paths.items()}
        return meta

    def close(self) -> None:
        self._nets.clear()
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()


@register("dfnet")
class DFNetFull(_TorchInpainter):
    """DFNet at full (padded) resolution - the paper's 'DFNet' row; degrades with size."""

    description = "DFNet coarse network run at full resolution (padded to a multiple of 256)"
    needs = (weights.DFNET,)

    def _inpaint(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return dfnet_full(self.net("dfnet"), image, mask, self.device)


@register("dfnet@512")
class DFNet512(_TorchInpainter):
    """DFNet at 512 px (the two-stage pipeline's coarse stage), upscaled bilinearly."""

    description = "DFNet at 512 px, upscaled bilinearly (the coarse stage alone)"
    native_size = COARSE_SIZE
    needs = (weights.DFNET,)

    def _inpaint(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        coarse = dfnet_coarse(self.net("dfnet"), image, mask, self.device)
        return upscale_coarse(coarse, *mask.shape)


@register("two-stage", default=True)
class TwoStage(_TorchInpainter):
    """The paper's method: DFNet at 512 px, then RefinementNet at full resolution."""

    description = "Two-stage: DFNet coarse fill at 512 px + RefinementNet with shifted copies"
    needs = (weights.DFNET, weights.REFINEMENT)
    no_shift: ClassVar[bool] = False

    def coarse_up(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The upscaled coarse fill, uint8 RGB [H, W, 3]."""
        coarse = dfnet_coarse(self.net("dfnet"), image, mask, self.device)
        return upscale_coarse(coarse, *mask.shape)

    def _inpaint(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        matched = matched_image(image, mask, self.coarse_up(image, mask))
        return refine(self.net("refinement"), matched, mask, self.device, no_shift=self.no_shift)

    def metadata(self) -> dict:
        meta = super().metadata()
        meta.update(shift_fraction=f"{SHIFT_NUMERATOR}/{SHIFT_DENOMINATOR}",
                    no_shift=self.no_shift, coarse_size=COARSE_SIZE)
        return meta


@register("two-stage/no-shift")
class TwoStageNoShift(TwoStage):
    """Ablation: the four shifted copies replaced by plain copies of the matched image."""

    description = "Two-stage ablation: refinement input with unshifted copies"
    no_shift = True


@register("two-stage", family=True)
class TwoStageOver(TwoStage):
    """``two-stage:<base>``: RefinementNet over any registered method run at 512 px."""

    description = "RefinementNet over another method's coarse fill at 512 px"
    needs = (weights.REFINEMENT,)

    def __init__(self, context: MethodContext | None = None, arg: str | None = None):
        super().__init__(context, arg)
        if not arg:
            raise ValueError("two-stage:<base> needs a base method name")
        self.base = create(arg, self.context)

    @classmethod
    def uses_methods(cls, context: MethodContext, arg: str | None = None) -> list[str]:
        return [arg] if arg else []

    @classmethod
    def unavailable_reason(cls, context: MethodContext, arg: str | None = None) -> str | None:
        own = super().unavailable_reason(context, arg)
        base = method_unavailable_reason(arg, context) if arg else None
        return own or (f"base method {arg!r}: {base}" if base else None)

    def coarse_up(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return upscaled_coarse(self.base, image, mask)

    def metadata(self) -> dict:
        meta = super().metadata()
        meta["base"] = self.base.metadata()
        return meta

    def close(self) -> None:
        self.base.close()
        super().close()
