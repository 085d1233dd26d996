"""Per-pixel reductions over an ``[N, pixels]`` layout as MindSpore custom operators (``ops.Custom``, ``aot``, CPU).

The compiled parts are ``lseg_loss.cc`` and ``lseg_norm.cc`` in this folder, built by ``pip install`` into
``_lseg_pixel*.so`` (optional, like the other kernels). Each is one pass over the data with the pixels in the inner,
vectorised loop, where MindSpore reduces along a strided axis or broadcasts a per-pixel value to the full size first:

- :func:`xent_grad_kernel`: the softmax cross-entropy gradient ``(softmax(logits) - onehot(label)) * weight``, the
  backward pass of :class:`~mindcv_lseg.engine.loss.LeanSegCrossEntropy` (MindSpore's softmax, broadcast, multiply
  and scatter took about 1 s of a ViT-L/16 training step at 480x480 with 150 labels);
- :func:`norm_kernels`: ``1 / ||x||`` of every pixel embedding over the channels, and ``a + x * k`` with a per-pixel
  ``k``, for :class:`~mindcv_lseg.models.similarity.LeanCosineLogits` (forward and backward).

Where the library cannot be loaded these return None and the layers keep MindSpore's ops (one line on stderr says
why).
"""

from typing import Optional, Tuple

from mindspore import ops

from . import library

__all__ = ["xent_grad_kernel", "norm_kernels"]

LIBRARY = "_lseg_pixel"


def _prims() -> Optional[dict]:
    return library.custom_ops(
        LIBRARY,
        "per-pixel kernels",
        "MindSpore's ops compute the loss gradient and the pixel norms",
        {
            "LsegSoftmaxXentGrad": (lambda logits, labels, weight: logits, lambda logits, labels, weight: logits),
            "LsegInvNorm": (lambda x: [x[0], 1, x[2]], lambda x: x),
            "LsegAddScaled": (lambda a, x, k: a, lambda a, x, k: a),
        },
    )


def xent_grad_kernel() -> Optional[ops.Custom]:
    """``grad(logits [B, N, H, W] f32, labels [B, H, W] i32, weight [B, H, W] f32) -> [B, N, H, W]``, or None:
    another device than CPU, ``MINDCV_LSEG_KERNELS=0``, or the library missing / not loadable (with the notice)."""
    prims = _prims()
    return None if prims is None else prims["LsegSoftmaxXentGrad"]


def norm_kernels() -> Optional[Tuple[ops.Custom, ops.Custom]]:
    """``(inv_norm, add_scaled)`` or None (as :func:`xent_grad_kernel`): ``inv_norm(x [B, C, P]) -> [B, 1, P]``,
    ``1 / sqrt(sum_c x^2)`` (no epsilon); ``add_scaled(a [B, C, P], x [B, C, P], k [B, 1, P]) -> a + x * k``."""
    prims = _prims()
    return None if prims is None else (prims["LsegInvNorm"], prims["LsegAddScaled"])
