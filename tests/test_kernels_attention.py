"""The fused attention kernels (mindcv_lseg.kernels.attention: the forward and its gradient) inside LeanAttention:
outputs and gradients equal the differentiable path's (AttentionCore) in GRAPH and PYNATIVE mode, in training and
eval mode, and float64 attention; exports switch them off.

Shapes: a head size that is a multiple of 16 takes the kernels' own register-tiled loops on a CPU with AVX-512 or
AVX2 + FMA (token counts across their 6/8/16/32/48-row blocks), any other head size the OpenBLAS path. The heads are
shared out by the kernels' thread pool, which a forked child must restart."""

import os

import numpy as np
import pytest
from _kernels import require_kernels, run_script

import mindspore as ms
from mindspore import Tensor

from mindcv_lseg.kernels.attention import attention_kernel
from mindcv_lseg.models.attention import LeanAttention
from mindcv_lseg.models.cpu_gemm import CpuGemmDense
from mindcv_lseg.models.ops_impl import without_compiled_kernels


@pytest.fixture(scope="module", autouse=True)
def kernel():
    return require_kernels(attention_kernel(), "_lseg_gemm", "attention kernel")


def _sum_of_squares(cell):
    """A scalar of the cell's output whose gradient exercises its backward pass."""
    return lambda inp: (cell(inp) ** 2).sum()


def _pair(c, heads):
    """Two LeanAttention cells sharing their projections: one with the kernel, one without."""
    fused = LeanAttention(CpuGemmDense(c, 3 * c), CpuGemmDense(c, c), heads)
    plain = LeanAttention(fused.qkv, fused.proj, heads)
    plain.use_fused = False
    assert fused.use_fused
    return fused, plain


# (batch, tokens, channels, heads): head sizes 8 and 20 (OpenBLAS path), 64 and 32 (tiled path where available;
# 67 and 145 tokens are no multiple of the 6/8/16/32/48-row tiles, 1 token is a single row)
SHAPES = [(2, 7, 16, 2), (1, 100, 60, 3), (1, 50, 64, 1), (2, 67, 96, 3), (1, 145, 128, 2), (3, 1, 64, 1)]


@pytest.mark.parametrize("mode", [ms.GRAPH_MODE, ms.PYNATIVE_MODE])
@pytest.mark.parametrize("b,t,c,heads", SHAPES)
def test_eval_outputs_equal_the_differentiable_path(mode, b, t, c, heads):
    ms.set_context(mode=mode)
    fused, plain = _pair(c, heads)
    fused.set_train(False)
    plain.set_train(False)
    x = Tensor(np.random.default_rng(t).standard_normal((b, t, c)).astype(np.float32))
    np.testing.assert_allclose(fused(x).asnumpy(), plain(x).asnumpy(), rtol=0, atol=2e-6)


def _attention64(qkv, dout, heads):
    """Float64 attention and its gradient in qkv: qkv [B, T, 3C], dout [B, T, C] -> out [B, T, C], dqkv."""
    b, t, c3 = qkv.shape
    c = c3 // 3
    d = c // heads
    q, k, v = (qkv[..., i * c : (i + 1) * c].reshape(b, t, heads, d).transpose(0, 2, 1, 3) for i in range(3))
    g = dout.reshape(b, t, heads, d).transpose(0, 2, 1, 3)
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    dp = g @ v.transpose(0, 1, 3, 2)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True))
    merge = lambda x: x.transpose(0, 2, 1, 3).reshape(b, t, c)  # noqa: E731
    grads = (ds @ k / np.sqrt(d), ds.transpose(0, 1, 3, 2) @ q / np.sqrt(d), p.transpose(0, 1, 3, 2) @ g)
    return merge(p @ v), np.concatenate([merge(x) for x in grads], axis=-1)


@pytest.mark.parametrize("mode", [ms.GRAPH_MODE, ms.PYNATIVE_MODE])
@pytest.mark.parametrize("b,t,c,heads", SHAPES + [(1, 577, 256, 4)])
def test_kernels_match_float64_attention(mode, b, t, c, heads):
    """The primitive and its backward against float64 arithmetic (large scores: inputs of scale 2)."""
    ms.set_context(mode=mode)
    rng = np.random.default_rng(t + c)
    qkv = (2 * rng.standard_normal((b, t, 3 * c))).astype(np.float32)
    dout = rng.standard_normal((b, t, c)).astype(np.float32)
    heads_marker = Tensor(np.zeros(heads, np.float32))
    kernel = attention_kernel()
    weights = Tensor(dout)

    def weighted_sum(x):
        return (kernel(x, heads_marker) * weights).sum()

    out = kernel(Tensor(qkv), heads_marker).asnumpy()
    dqkv = ms.grad(weighted_sum)(Tensor(qkv)).asnumpy()
    want_out, want_dqkv = _attention64(qkv.astype(np.float64), dout.astype(np.float64), heads)
    np.testing.assert_allclose(out, want_out, rtol=0, atol=2e-5)
    np.testing.assert_allclose(dqkv, want_dqkv, rtol=0, atol=5e-5 * max(1.0, np.abs(want_dqkv).max()))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("mode", [ms.GRAPH_MODE, ms.PYNATIVE_MODE])
@pytest.mark.parametrize("b,t,c,heads", [(2, 9, 16, 2), (2, 67, 96, 3)])
def test_gradients_equal_the_differentiable_path(training, mode, b, t, c, heads):
    """Training (and a network differentiated in eval mode) runs the kernels: input and parameter gradients equal
    autodiff of the differentiable path."""
    ms.set_context(mode=mode)
    fused, plain = _pair(c, heads)
    fused.set_train(training)
    plain.set_train(training)
    x = Tensor(np.random.default_rng(2).standard_normal((b, t, c)).astype(np.float32))
    got = ms.grad(_sum_of_squares(fused), grad_position=0, weights=fused.trainable_params())(x)
    want = ms.grad(_sum_of_squares(plain), grad_position=0, weights=plain.trainable_params())(x)
    np.testing.assert_allclose(got[0].asnumpy(), want[0].asnumpy(), rtol=1e-4, atol=1e-5)
    for g, w in zip(got[1], want[1]):
        np.testing.assert_allclose(g.asnumpy(), w.asnumpy(), rtol=1e-4, atol=1e-5)


def test_exports_do_not_hold_the_kernel():
    fused, _ = _pair(16, 2)
    without_compiled_kernels(fused)
    assert not fused.use_fused


_FORK_SCRIPT = """
import ctypes, os
import numpy as np
from mindcv_lseg.kernels import library, openblas

lib = ctypes.CDLL(library.library_path("_lseg_gemm"))
lib.LsegGemmSetSgemm(ctypes.c_void_p(openblas.load_sgemm()[0]))

def attention(qkv, heads):
    # the AOT calling convention MindSpore uses: parameters, their ranks, shapes and dtypes
    out = np.zeros(qkv.shape[:2] + (qkv.shape[2] // 3,), np.float32)
    arrays = [qkv, np.zeros(heads, np.float32), out]
    shapes = [(ctypes.c_int64 * a.ndim)(*a.shape) for a in arrays]
    code = lib.LsegAttention(
        3, (ctypes.c_void_p * 3)(*[a.ctypes.data for a in arrays]), (ctypes.c_int * 3)(*[a.ndim for a in arrays]),
        (ctypes.POINTER(ctypes.c_int64) * 3)(*[ctypes.cast(s, ctypes.POINTER(ctypes.c_int64)) for s in shapes]),
        (ctypes.c_char_p * 3)(*[b"float32"] * 3), None, None)
    assert code == 0, code
    return out

qkv = np.random.default_rng(0).standard_normal((2, 67, 3 * 128)).astype(np.float32)
want = attention(qkv, 4)  # 8 (batch, head) tasks: the parent's pool threads are running now
pid = os.fork()
if pid == 0:
    os._exit(0 if np.array_equal(attention(qkv, 4), want) else 3)
_, status = os.waitpid(pid, 0)
print("child exit", os.waitstatus_to_exitcode(status))
"""


def test_a_forked_child_runs_the_kernel_on_a_pool_of_its_own(kernel):
    """Data loaders fork: in the child, which has none of the parent's pool threads, the kernel still returns the
    parent's result (called through ctypes: MindSpore's own runtime does not survive a fork)."""
    out, _ = run_script(_FORK_SCRIPT, "mindcv-lseg:", {})
    assert "child exit 0" in out, out


_THREADS_SCRIPT = """
import ctypes
from mindcv_lseg.kernels import library
print("pool threads", ctypes.CDLL(library.library_path("_lseg_gemm")).LsegPoolThreads())
"""


@pytest.mark.parametrize("limit", ["", "1", "64"])
def test_the_pool_uses_the_allowed_cpus_at_most_mindcv_lseg_num_threads(kernel, limit):
    """One thread per CPU of the affinity mask, capped by MINDCV_LSEG_NUM_THREADS; OMP_NUM_THREADS (which MindSpore
    sets to 1 in its process) does not apply."""
    env = {"OMP_NUM_THREADS": "1"} if not limit else {"MINDCV_LSEG_NUM_THREADS": limit}
    out, _ = run_script(_THREADS_SCRIPT, "mindcv-lseg:", env)
    cpus = len(os.sched_getaffinity(0))
    assert f"pool threads {min(cpus, int(limit or cpus))}" in out, out
