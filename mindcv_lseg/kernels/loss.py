"""The softmax cross-entropy gradient in one custom operator (``ops.Custom``, ``aot``, CPU).

The compiled part is ``lseg_loss.cc`` in this folder, built by ``pip install`` into ``_lseg_loss*.so`` (optional,
like the other kernels). :class:`~mindcv_lseg.engine.loss.LeanSegCrossEntropy` uses it in its backward pass:
``(softmax(logits) - onehot(label)) * weight`` in three passes over the logits, where MindSpore's ops take a
softmax, an explicit broadcast of the per-pixel weight, a multiply and a scatter (about 1 s of a ViT-L/16 training
step at 480x480 with 150 labels). Where the library cannot be loaded, :func:`xent_grad_kernel` returns None and
the loss keeps MindSpore's ops (one line on stderr says why).
"""

import ctypes
from typing import Optional

import mindspore as ms
from mindspore import ops

from . import library

__all__ = ["xent_grad_kernel"]

LIBRARY = "_lseg_loss"

_KERNEL = None
_LOADED = False


def xent_grad_kernel() -> Optional[ops.Custom]:
    """``grad(logits [B, N, H, W] f32, labels [B, H, W] i32, weight [B, H, W] f32) -> [B, N, H, W]``, or None:
    another device than CPU, ``MINDCV_LSEG_KERNELS=0``, or the library missing / not loadable (with the notice)."""
    global _KERNEL, _LOADED
    if ms.get_context("device_target") != "CPU" or library.switched_off():
        return None
    if not _LOADED:
        _LOADED = True
        path, reason = library.locate(LIBRARY)
        if path is not None:
            try:
                ctypes.CDLL(path)  # fails here, with the loader's message, rather than inside a graph
                _KERNEL = ops.Custom(
                    f"{path}:LsegSoftmaxXentGrad",
                    out_shape=lambda logits, labels, weight: logits,
                    out_dtype=lambda logits, labels, weight: logits,
                    func_type="aot",
                )
            except OSError as err:
                reason = str(err)
        if _KERNEL is None:
            library.notice("cross-entropy kernel", reason, "the lean loss uses MindSpore's softmax")
    return _KERNEL
