"""The exact GELU and its derivative in one pass each, as MindSpore custom operators (``ops.Custom``, ``aot``).

The compiled part is ``lseg_gelu.cc`` in this folder, built by ``pip install`` into ``_lseg_gelu*.so`` (optional,
like the GEMM kernels). MindSpore 2.10 computes the exact GELU with five elementwise CPU kernels (mul, erf, add,
mul, mul), each a pass over the activation; this library makes one, vectorised with glibc's vector ``erff``/``expf``.
It needs glibc >= 2.35; where it cannot be loaded, :func:`gelu_kernels` returns None and
:class:`~mindcv_lseg.models.activations.ErfGELU` uses MindSpore's ops (one line on stderr says why).
"""

import ctypes
from typing import Optional

import mindspore as ms
from mindspore import ops

from . import library

__all__ = ["GeluKernels", "gelu_kernels"]

LIBRARY = "_lseg_gelu"


class GeluKernels:
    """``forward(x) -> y`` and ``backward(x, dy) -> dx``: float32 tensors of any (equal) shape."""

    def __init__(self, path: str):
        ctypes.CDLL(path)  # fails here, with the loader's message, rather than inside a graph
        self.forward = ops.Custom(f"{path}:LsegGelu", out_shape=lambda x: x, out_dtype=lambda x: x, func_type="aot")
        self.backward = ops.Custom(
            f"{path}:LsegGeluGrad", out_shape=lambda x, dy: x, out_dtype=lambda x, dy: x, func_type="aot"
        )


_KERNELS = None
_LOADED = False


def gelu_kernels() -> Optional[GeluKernels]:
    """The GELU kernels for layers built now, or None: another device than CPU, ``MINDCV_LSEG_KERNELS=0``, or the
    library missing / not loadable (then with the notice)."""
    global _KERNELS, _LOADED
    if ms.get_context("device_target") != "CPU" or library.switched_off():
        return None
    if not _LOADED:
        _LOADED = True
        path, reason = library.locate(LIBRARY)
        if path is not None:
            try:
                _KERNELS = GeluKernels(path)
            except OSError as err:
                reason = str(err)
        if _KERNELS is None:
            library.notice("GELU kernels", reason, "ErfGELU uses MindSpore's erf")
    return _KERNELS
