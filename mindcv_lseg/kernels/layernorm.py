"""LayerNorm over the last axis and its gradient as MindSpore custom operators (``ops.Custom``, ``aot``, CPU).

The compiled part is ``lseg_layernorm.cc`` in this folder, built by ``pip install`` into ``_lseg_layernorm*.so``
(optional, like the other kernels). Each row is normalised while it sits in the L1 cache (mean, variance around
it, output), with the sums in double precision; the backward pass recomputes a row's mean and ``1/std`` from ``x``
instead of keeping them, so the layer keeps only its input for the backward pass. MindSpore 2.10's CPU
``LayerNorm`` / ``LayerNormGrad`` are several times slower on the ViT's [577, 1024] rows (see ``docs/cpu_kernels.md``).
Where the library cannot be loaded, :func:`layernorm_kernels` returns None and
:class:`~mindcv_lseg.models.normalization.LeanLayerNorm` uses MindSpore's ``ops.LayerNorm`` (one line on stderr says
why).
"""

from typing import NamedTuple, Optional

from mindspore import ops

from . import library

__all__ = ["LayerNormKernels", "layernorm_kernels"]

LIBRARY = "_lseg_layernorm"


class LayerNormKernels(NamedTuple):
    """float32 only; ``eps`` is a float32 tensor of shape [1].

    - ``forward(x [..., C], gamma [C], beta [C], eps) -> y [..., C]``;
    - ``backward(x [..., C], dy [..., C], gamma [C], eps) -> (dx [..., C], dgamma [C], dbeta [C])``.
    """

    forward: ops.Custom
    backward: ops.Custom


def layernorm_kernels() -> Optional[LayerNormKernels]:
    """The LayerNorm kernels for layers built now, or None: another device than CPU, ``MINDCV_LSEG_KERNELS=0``, or
    the library missing / not loadable (then with the notice)."""
    prims = library.custom_ops(
        LIBRARY,
        "LayerNorm kernels",
        "LeanLayerNorm uses MindSpore's LayerNorm",
        {
            "LsegLayerNorm": (lambda x, gamma, beta, eps: x, lambda x, gamma, beta, eps: x),
            "LsegLayerNormGrad": (
                lambda x, dy, gamma, eps: (x, gamma, gamma),
                lambda x, dy, gamma, eps: (x, gamma, gamma),
            ),
        },
    )
    return None if prims is None else LayerNormKernels(prims["LsegLayerNorm"], prims["LsegLayerNormGrad"])
