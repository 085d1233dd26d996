"""The exact GELU and its derivative in one pass each, as MindSpore custom operators (``ops.Custom``, ``aot``).

The compiled part is ``lseg_gelu.cc`` in this folder, built by ``pip install`` into ``_lseg_gelu*.so`` (optional,
like the GEMM kernels). MindSpore 2.10 computes the exact GELU with five elementwise CPU kernels (mul, erf, add,
mul, mul), each a pass over the activation; this library makes one, vectorised with glibc's vector ``erff``/``expf``.
It needs glibc >= 2.35; where it cannot be loaded, :func:`gelu_kernels` returns None and
:class:`~mindcv_lseg.models.activations.ErfGELU` uses MindSpore's ops (one line on stderr says why).
"""

from typing import NamedTuple, Optional

from mindspore import ops

from . import library

__all__ = ["GeluKernels", "gelu_kernels"]

LIBRARY = "_lseg_gelu"


class GeluKernels(NamedTuple):
    """``forward(x) -> y`` and ``backward(x, dy) -> dx``: float32 tensors of any (equal) shape."""

    forward: ops.Custom
    backward: ops.Custom


def gelu_kernels() -> Optional[GeluKernels]:
    """The GELU kernels for layers built now, or None: another device than CPU, ``MINDCV_LSEG_KERNELS=0``, or the
    library missing / not loadable (then with the notice)."""
    prims = library.custom_ops(
        LIBRARY,
        "GELU kernels",
        "ErfGELU uses MindSpore's erf",
        {
            "LsegGelu": (lambda x: x, lambda x: x),
            "LsegGeluGrad": (lambda x, dy: x, lambda x, dy: x),
        },
    )
    return None if prims is None else GeluKernels(prims["LsegGelu"], prims["LsegGeluGrad"])
