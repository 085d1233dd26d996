"""Float32 matrix products through OpenBLAS as MindSpore custom operators (``ops.Custom``, ``func_type="aot"``).

The compiled part is ``lseg_gemm.cc`` in this folder, built by ``pip install`` into ``_lseg_gemm*.so`` (an optional
extension: where no C++ compiler is available the install still succeeds). At first use :func:`gemm_backend` loads
it, hands it the ``cblas_sgemm64_`` of NumPy's bundled OpenBLAS (:mod:`.openblas`) and builds three primitives,
``GEMM_NN`` / ``GEMM_NT`` / ``GEMM_TN`` (``a @ b``, ``a @ b^T``, ``a^T @ b``), whose backward passes are products
of the same three. They run in GRAPH and PYNATIVE mode on CPU.

:class:`BlasMatMul` is what layers use: the BLAS product for float32 inputs on CPU when the library is available,
``ops.MatMul``/``ops.BatchMatMul`` otherwise (float16 under mixed precision, other devices, no compiled library,
``MINDCV_LSEG_KERNELS=0``). When the library cannot be used, one line on stderr says why, once per process.
"""

import ctypes
from typing import Optional

import mindspore as ms
from mindspore import Tensor, nn, ops

from . import library
from .openblas import load_sgemm

__all__ = ["gemm_backend", "blas_enabled", "library_op", "BlasMatMul", "BlasLinear"]

LIBRARY = "_lseg_gemm"


class _Backend:
    """The loaded library and its three primitives, or why there are none (``reason``)."""

    def __init__(self):
        self.nn = self.nt = self.tn = None
        self.reason = ""
        self.description = ""
        self.path = None  # the loaded library (also holds the Winograd convolution, see .winograd)

    @property
    def ok(self) -> bool:
        return self.nn is not None


_BACKEND: Optional[_Backend] = None


def _out_shape(trans_a: bool, trans_b: bool):
    def infer(a, b):
        m = a[-1] if trans_a else a[-2]
        n = b[-2] if trans_b else b[-1]
        batch = list(a[:-2]) or list(b[:-2])
        return batch + [m, n]

    return infer


def _same_dtype(a, b):
    return a


def _sum_to(grad: Tensor, like: Tensor) -> Tensor:
    """The gradient of a 2-D operand that was shared by a batch of products is the sum over the batch."""
    if grad.ndim > like.ndim:
        return grad.sum(axis=0)
    return grad


# the primitives, set by gemm_backend(); the backward functions below look them up at graph build time
GEMM_NN = GEMM_NT = GEMM_TN = GEMM_NT_BIAS = None
_ONES = ops.Ones()  # a primitive: a custom backward function is compiled as a graph of its own


def _bprop_nn(a, b, out, dout):  # out = a @ b
    return _sum_to(GEMM_NT(dout, b), a), _sum_to(GEMM_TN(a, dout), b)


def _bprop_nt(a, b, out, dout):  # out = a @ b^T
    return _sum_to(GEMM_NN(dout, b), a), _sum_to(GEMM_TN(dout, a), b)


def _bprop_tn(a, b, out, dout):  # out = a^T @ b
    return _sum_to(GEMM_NT(b, dout), a), _sum_to(GEMM_NN(a, dout), b)


def _bprop_nt_bias(a, b, bias, out, dout):  # out = a @ b^T + bias, a 2-D
    """The bias gradient (the column sums of dout) is one product ``ones[1, M] @ dout``: MindSpore's BiasAddGrad
    took 0.8 s of a ViT-L/16 training step at 480x480, about 10x longer per call."""
    ones = _ONES((1, dout.shape[0]), dout.dtype)
    return GEMM_NN(dout, b), GEMM_TN(dout, a), GEMM_NN(ones, dout).reshape(bias.shape)


def gemm_backend() -> _Backend:
    """Load the kernels once per process (see the module docstring); ``backend.ok`` says whether they are usable."""
    global _BACKEND, GEMM_NN, GEMM_NT, GEMM_TN, GEMM_NT_BIAS
    if _BACKEND is not None:
        return _BACKEND
    backend = _Backend()
    path, backend.reason = (None, f"{library.ENV_SWITCH}=0") if library.switched_off() else library.locate(LIBRARY)
    if path is not None:
        try:
            address, backend.description = load_sgemm()
            lib = ctypes.CDLL(path)  # the same handle MindSpore's loader gets: the pointer set here is the one it uses
            lib.LsegGemmSetSgemm(ctypes.c_void_p(address))
            if lib.LsegGemmReady() != 1:
                raise OSError(f"{path} did not take the sgemm pointer")
        except (OSError, AttributeError) as err:
            backend.reason = str(err)
        else:
            kinds = {"NN": (False, False, _bprop_nn), "NT": (False, True, _bprop_nt), "TN": (True, False, _bprop_tn)}
            prims = {}
            for kind, (trans_a, trans_b, bprop) in kinds.items():
                prims[kind] = ops.Custom(
                    f"{path}:LsegGemm{kind}",
                    out_shape=_out_shape(trans_a, trans_b),
                    out_dtype=_same_dtype,
                    func_type="aot",
                    bprop=bprop,
                )
            GEMM_NN, GEMM_NT, GEMM_TN = prims["NN"], prims["NT"], prims["TN"]
            GEMM_NT_BIAS = ops.Custom(
                f"{path}:LsegGemmNTBias",
                out_shape=lambda a, b, bias: [a[0], b[0]],
                out_dtype=lambda a, b, bias: a,
                func_type="aot",
                bprop=_bprop_nt_bias,
            )
            backend.nn, backend.nt, backend.tn = GEMM_NN, GEMM_NT, GEMM_TN
            backend.path = path
    if not backend.ok and not library.switched_off():
        library.notice("BLAS GEMM kernels", backend.reason, "lean layers use MindSpore's MatMul")
    _BACKEND = backend
    return backend


_LIBRARY_OPS = {}


def library_op(entry: str, out_shape, out_dtype, bprop=None) -> Optional[ops.Custom]:
    """Another entry point of the ``_lseg_gemm`` library as a primitive (built once per process; the kernels that
    call the same sgemm: :mod:`.winograd`, :mod:`.attention`), or None on another device than CPU or when the
    library cannot be used (see ``gemm_backend().reason``, printed once)."""
    if not blas_enabled():
        return None
    if entry not in _LIBRARY_OPS:
        _LIBRARY_OPS[entry] = ops.Custom(
            f"{gemm_backend().path}:{entry}", out_shape=out_shape, out_dtype=out_dtype, func_type="aot", bprop=bprop
        )
    return _LIBRARY_OPS[entry]


def blas_enabled() -> bool:
    """True when layers built now will use the BLAS kernels (CPU device and the library loaded)."""
    return ms.get_context("device_target") == "CPU" and gemm_backend().ok


class BlasMatMul(nn.Cell):
    """``op(a) @ op(b)`` for 2-D or 3-D (batched) tensors, through OpenBLAS where possible.

    Args:
        transpose_a, transpose_b: use the transpose of that operand (its last two axes).
        blas: False: always MindSpore's MatMul/BatchMatMul (what ``impl="native"`` layers ask for).

    Inputs: a [M, K] or [B, M, K] (transposed: [K, M] / [B, K, M]), b [K, N] or [B, K, N] (transposed: [N, K] /
    [B, N, K]); a 2-D operand is shared by every batch entry of the other. Output [M, N] or [B, M, N].

    The choice between the BLAS kernel and MindSpore's MatMul is made when the cell is built (``blas_enabled``);
    in the graph, a float16 input (mixed precision) takes MindSpore's MatMul.
    """

    def __init__(self, transpose_a: bool = False, transpose_b: bool = False, blas: bool = True):
        super().__init__()
        kind = ("T" if transpose_a else "N") + ("T" if transpose_b else "N")
        if kind == "TT":
            raise ValueError("BlasMatMul: transposing both operands is not supported")
        self.use_blas = blas and blas_enabled()
        self.matmul = ops.MatMul(transpose_a, transpose_b)
        self.blas = {"NN": GEMM_NN, "NT": GEMM_NT, "TN": GEMM_TN}[kind] if self.use_blas else self.matmul
        self.batch_matmul = ops.BatchMatMul(transpose_a, transpose_b)

    def construct(self, a: Tensor, b: Tensor) -> Tensor:
        if self.use_blas and a.dtype == ms.float32 and b.dtype == ms.float32:
            return self.blas(a, b)
        if a.ndim == 2 and b.ndim == 2:
            return self.matmul(a, b)
        if a.ndim == 2:  # a 2-D operand shared by a batch: broadcast it explicitly for BatchMatMul
            a = ops.broadcast_to(a, (b.shape[0],) + a.shape)
        elif b.ndim == 2:
            b = ops.broadcast_to(b, (a.shape[0],) + b.shape)
        return self.batch_matmul(a, b)


class BlasLinear(nn.Cell):
    """``x @ weight^T + bias`` (a dense layer's product and bias) in one BLAS kernel where possible: the product
    accumulates onto the bias, no separate pass over the output (MindSpore's BiasAdd: ~2.3 ms per [577, 4096] on
    CPU). Otherwise :class:`BlasMatMul` and ``ops.bias_add``.

    Args:
        blas: as :class:`BlasMatMul` (its ``use_blas``, switched off by ``without_compiled_kernels``, decides).

    Inputs: x [M, K], weight [N, K], bias [N]. Output [M, N].
    """

    def __init__(self, blas: bool = True):
        super().__init__()
        self.matmul = BlasMatMul(transpose_b=True, blas=blas)

    def construct(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        if self.matmul.use_blas and x.dtype == ms.float32 and weight.dtype == ms.float32:
            return GEMM_NT_BIAS(x, weight, bias)
        return ops.bias_add(self.matmul(x, weight), bias)
