"""Bilinear resize of ``[B, C, h, w]`` tensors and its gradient as MindSpore custom operators (``ops.Custom``,
``aot``, CPU).

The compiled part is ``lseg_resize.cc`` in this folder, built by ``pip install`` into ``_lseg_resize*.so``
(optional, like the other kernels). It computes PyTorch's ``F.interpolate(mode="bilinear")`` (which MindSpore's
``ops.interpolate`` follows), ``align_corners`` True or False, as two separable passes with precomputed per-column
indices and weights, vectorised over the output width; the gradient is the transpose of the same two passes.
MindSpore's ``ResizeBilinearGrad`` took ~0.5 s of a ViT-L/16 training step at 480x480 for the tiny position-embedding
resize ([1, 1024, 24, 24] -> [1, 1024, 30, 30]).

The output size reaches the kernel as the lengths of two marker tensors (``[out_h]`` and ``[out_w]``, never read):
an AOT kernel's output shape is a function of its input shapes. Where the library cannot be loaded,
:func:`resize_kernels` returns None and :class:`~mindcv_lseg.models.ops_impl.BilinearResize` keeps
``ops.interpolate`` (one line on stderr says why).
"""

from typing import NamedTuple, Optional

import mindspore as ms
from mindspore import Tensor, nn, ops

from . import library

__all__ = ["ResizeKernels", "resize_kernels", "KernelBilinearResize"]

LIBRARY = "_lseg_resize"
# primitives, not the functional forms: a hand-written bprop is compiled as a graph of its own, where the functional
# forms' cached primitives can fail ("The func graph is empty")
_ZEROS = ops.Zeros()
_ZEROS_LIKE = ops.ZerosLike()


def _shape(x, mark_h, mark_w):
    return [x[0], x[1], mark_h[0], mark_w[0]]


def _dtype(x, mark_h, mark_w):
    return x


class ResizeKernels(NamedTuple):
    """``forward(x [B, C, h, w], mark_h [H], mark_w [W]) -> [B, C, H, W]`` and ``backward(dy [B, C, H, W],
    mark_h [h], mark_w [w]) -> dx [B, C, h, w]`` for one ``align_corners`` setting; float32; only the lengths of
    the markers are read."""

    forward: ops.Custom
    backward: ops.Custom


def resize_kernels(align_corners: bool) -> Optional[ResizeKernels]:
    """The resize kernels for layers built now, or None: another device than CPU, ``MINDCV_LSEG_KERNELS=0``, or the
    library missing / not loadable (then with the notice)."""
    prims = library.custom_ops(
        LIBRARY,
        "bilinear resize kernels",
        "BilinearResize uses MindSpore's ops.interpolate",
        {
            entry: (_shape, _dtype)
            for entry in (
                "LsegResizeBilinearAC",
                "LsegResizeBilinearHP",
                "LsegResizeBilinearGradAC",
                "LsegResizeBilinearGradHP",
            )
        },
    )
    if prims is None:
        return None
    mode = "AC" if align_corners else "HP"
    return ResizeKernels(prims[f"LsegResizeBilinear{mode}"], prims[f"LsegResizeBilinearGrad{mode}"])


class KernelBilinearResize(nn.Cell):
    """The forward kernel with the backward kernel as its hand-written ``bprop`` (nothing but the shapes is kept for
    the backward pass).

    Args:
        kernels: :func:`resize_kernels` of the ``align_corners`` setting.

    Inputs: x [B, C, h, w] float32, mark_h [H], mark_w [W] (only their lengths are read).
    Output: [B, C, H, W].
    """

    def __init__(self, kernels: ResizeKernels):
        super().__init__()
        self.forward_kernel = kernels.forward
        self.backward_kernel = kernels.backward

    def construct(self, x: Tensor, mark_h: Tensor, mark_w: Tensor) -> Tensor:
        return self.forward_kernel(x, mark_h, mark_w)

    def bprop(self, x: Tensor, mark_h: Tensor, mark_w: Tensor, out: Tensor, dout: Tensor):
        h, w = x.shape[2:]
        dx = self.backward_kernel(dout, _ZEROS((h,), ms.float32), _ZEROS((w,), ms.float32))
        return dx, _ZEROS_LIKE(mark_h), _ZEROS_LIKE(mark_w)
