"""The OpenBLAS GEMM custom operators (mindcv_lseg.kernels): values and gradients against MindSpore's own MatMul /
BatchMatMul in GRAPH and PYNATIVE mode, the kernel choice for OpenBLAS, and the fallback when the library cannot
be used."""

import os
import subprocess
import sys

import numpy as np
import pytest
from _kernels import require_kernels

import mindspore as ms
from mindspore import Tensor, nn, ops

from mindcv_lseg.kernels import library, openblas
from mindcv_lseg.kernels.gemm import BlasLinear, BlasMatMul, gemm_backend

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (transpose_a, transpose_b, shape of a, shape of b): 2-D products, a 2-D operand shared by a batch, both batched
CASES = [
    (False, False, (5, 7), (7, 3)),
    (False, True, (5, 7), (3, 7)),
    (True, False, (7, 5), (7, 3)),
    (False, True, (2, 5, 7), (3, 7)),
    (False, False, (7, 5), (3, 5, 4)),
    (True, False, (2, 7, 5), (2, 7, 3)),
    (False, True, (4, 33, 16), (4, 29, 16)),
]


@pytest.fixture(scope="module")
def backend():
    loaded = gemm_backend()
    return require_kernels(loaded if loaded.ok else None, "_lseg_gemm", "GEMM kernels", loaded.reason)


class _SumOfSquares(nn.Cell):
    """(op(a) @ op(b))^2 summed: a scalar whose gradient exercises the backward pass."""

    def __init__(self, matmul):
        super().__init__()
        self.matmul = matmul

    def construct(self, a, b):
        return (self.matmul(a, b) ** 2).sum()


class _Native(nn.Cell):
    """MindSpore's own product with the same semantics (a 2-D operand broadcast over the batch)."""

    def __init__(self, transpose_a, transpose_b):
        super().__init__()
        self.matmul = ops.MatMul(transpose_a, transpose_b)
        self.batch_matmul = ops.BatchMatMul(transpose_a, transpose_b)

    def construct(self, a, b):
        if a.ndim == 2 and b.ndim == 2:
            return self.matmul(a, b)
        if a.ndim == 2:
            a = ops.broadcast_to(a, (b.shape[0],) + a.shape)
        if b.ndim == 2:
            b = ops.broadcast_to(b, (a.shape[0],) + b.shape)
        return self.batch_matmul(a, b)


@pytest.mark.parametrize("mode", ["graph", "pynative"])
@pytest.mark.parametrize("transpose_a,transpose_b,shape_a,shape_b", CASES)
def test_values_and_gradients_match_mindspore(backend, mode, transpose_a, transpose_b, shape_a, shape_b):
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    rng = np.random.default_rng(sum(shape_a) + 10 * sum(shape_b))
    a = Tensor(rng.standard_normal(shape_a).astype(np.float32))
    b = Tensor(rng.standard_normal(shape_b).astype(np.float32))
    blas = BlasMatMul(transpose_a, transpose_b)
    assert blas.use_blas
    native = _Native(transpose_a, transpose_b)
    np.testing.assert_allclose(blas(a, b).asnumpy(), native(a, b).asnumpy(), rtol=1e-5, atol=1e-5)
    grad_blas = ms.grad(_SumOfSquares(blas), grad_position=(0, 1))(a, b)
    grad_native = ms.grad(_SumOfSquares(native), grad_position=(0, 1))(a, b)
    for got, want, operand in zip(grad_blas, grad_native, (a, b)):
        assert got.shape == operand.shape
        np.testing.assert_allclose(got.asnumpy(), want.asnumpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["graph", "pynative"])
def test_dense_layer_gradients_with_the_blas_bias_sums_match_nn_dense(backend, mode):
    """CpuGemmDense (the bias inside the BLAS GEMM kernel, its gradient as ones @ dout) against nn.Dense's autodiff."""
    from mindcv_lseg.models.cpu_gemm import CpuGemmDense

    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    rng = np.random.default_rng(5)
    x = Tensor(rng.standard_normal((2, 9, 12)).astype(np.float32))
    lean, native = CpuGemmDense(12, 7), nn.Dense(12, 7)
    native.weight.set_data(lean.weight.value())
    native.bias.set_data(Tensor(rng.standard_normal(7).astype(np.float32)))
    lean.bias.set_data(native.bias.value())

    def sum_of_squares(layer):
        return lambda inp: (layer(inp) ** 2).sum()

    got = ms.value_and_grad(sum_of_squares(lean), grad_position=0, weights=lean.trainable_params())(x)
    want = ms.value_and_grad(sum_of_squares(native), grad_position=0, weights=native.trainable_params())(x)
    np.testing.assert_allclose(got[0].asnumpy(), want[0].asnumpy(), rtol=1e-5)
    np.testing.assert_allclose(got[1][0].asnumpy(), want[1][0].asnumpy(), rtol=1e-4, atol=1e-4)  # dx
    for g, w in zip(got[1][1], want[1][1]):  # dweight, dbias
        assert g.shape == w.shape
        np.testing.assert_allclose(g.asnumpy(), w.asnumpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["graph", "pynative"])
@pytest.mark.parametrize("k", [0, 1, 300])
def test_product_with_bias_against_float64(backend, mode, k):
    """``a @ b^T + bias`` in one kernel (the product accumulated onto the bias), also with an empty inner axis."""
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    rng = np.random.default_rng(k)
    a = rng.standard_normal((33, k)).astype(np.float32)
    b = rng.standard_normal((17, k)).astype(np.float32)
    bias = rng.standard_normal(17).astype(np.float32)
    out = BlasLinear()(Tensor(a), Tensor(b), Tensor(bias)).asnumpy()
    ref = a.astype(np.float64) @ b.astype(np.float64).T + bias
    assert out.shape == (33, 17)
    assert np.abs(out - ref).max() < 2e-4


def test_products_are_float32_exact_against_float64(backend):
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(1)
    a = rng.standard_normal((64, 300)).astype(np.float32)
    b = rng.standard_normal((200, 300)).astype(np.float32)
    out = BlasMatMul(transpose_b=True)(Tensor(a), Tensor(b)).asnumpy()
    ref = a.astype(np.float64) @ b.astype(np.float64).T
    assert np.abs(out - ref).max() < 2e-4  # float32 accumulation over 300 terms of size ~1


def test_float16_inputs_use_mindspore_matmul(backend):
    ms.set_context(mode=ms.PYNATIVE_MODE)
    a = Tensor(np.ones((3, 4), np.float16))
    b = Tensor(np.ones((2, 5, 4), np.float16))
    out = BlasMatMul(transpose_b=True)(a, b)
    assert out.dtype == ms.float16 and out.shape == (2, 3, 5)
    assert np.all(out.asnumpy() == 4)


def test_transposing_both_operands_is_refused():
    with pytest.raises(ValueError, match="both operands"):
        BlasMatMul(transpose_a=True, transpose_b=True)


# --- the OpenBLAS kernel family ---------------------------------------------------------------------------------


AVX512 = {"avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl"}


def test_best_core_follows_the_cpu_flags():
    assert openblas.best_core(AVX512 | {"avx512_bf16"}) == "Cooperlake"
    assert openblas.best_core(AVX512) == "SkylakeX"
    assert openblas.best_core({"avx2", "fma", "avx512f"}) == "Haswell"  # AVX-512 F alone is not enough
    assert openblas.best_core({"sse4_2"}) is None


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 fma avx512f\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert openblas.cpu_flags(str(info)) == {"fpu", "avx2", "fma", "avx512f"}
    assert openblas.cpu_flags(str(tmp_path / "missing")) == set()


class _FakeOpenBLAS:
    """Stands in for the ctypes library: records the start-up selection rerun with OPENBLAS_CORETYPE."""

    def __init__(self, core):
        self.core = core
        self.calls = []

    @property
    def openblas_get_corename64_(self):
        fake = self

        class _Get:
            restype = None

            def __call__(self):
                return fake.core.encode()

        return _Get()

    def gotoblas_dynamic_quit(self):
        self.calls.append("quit")

    def gotoblas_dynamic_init(self):
        self.calls.append("init")
        self.core = os.environ["OPENBLAS_CORETYPE"]


def test_choose_core_upgrades_a_generic_pick_and_restores_the_environment(monkeypatch):
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    lib = _FakeOpenBLAS("Prescott")
    assert openblas.choose_core(lib, AVX512) == ("Prescott", "SkylakeX")
    assert lib.calls == ["quit", "init"]
    assert "OPENBLAS_CORETYPE" not in os.environ


def test_choose_core_keeps_a_good_pick_and_the_users_choice(monkeypatch):
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    lib = _FakeOpenBLAS("Cooperlake")
    assert openblas.choose_core(lib, AVX512) == ("Cooperlake", "Cooperlake")  # better than SkylakeX already
    assert lib.calls == []
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    lib = _FakeOpenBLAS("Haswell")
    assert openblas.choose_core(lib, AVX512 | {"avx512_bf16"}) == ("Haswell", "Haswell")
    assert lib.calls == []


class _FakeThreadServer:
    """Stands in for OpenBLAS's thread server: records the restart and the timeout it read from the environment."""

    def __init__(self):
        self.calls = []
        self.env_timeout = 0

    def openblas_read_env(self):
        self.env_timeout = int(os.environ.get("OPENBLAS_THREAD_TIMEOUT", "0"))
        self.calls.append(("read_env", self.env_timeout))

    def openblas_thread_timeout(self):
        return self.env_timeout

    def blas_thread_shutdown_(self):
        self.calls.append("shutdown")

    def blas_thread_init(self):
        self.calls.append(("init", self.env_timeout))


def test_settle_workers_restarts_the_thread_server_with_the_shortest_timeout(monkeypatch):
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT", raising=False)
    lib = _FakeThreadServer()
    assert openblas.settle_workers(lib) == openblas.WORKER_TIMEOUT == 4
    # the server restarts with the timeout in the environment; then the environment and its reading are restored
    assert lib.calls == [("read_env", 4), "shutdown", ("init", 4), ("read_env", 0)]
    assert "OPENBLAS_THREAD_TIMEOUT" not in os.environ


def test_settle_workers_keeps_the_users_timeout_and_needs_the_exports(monkeypatch):
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "20")
    lib = _FakeThreadServer()
    lib.env_timeout = 20
    assert openblas.settle_workers(lib) == 20
    assert lib.calls == []

    class _Old:  # an OpenBLAS that exports no thread server entry points
        pass

    assert openblas.settle_workers(_Old()) is None


def test_the_loaded_openblas_workers_sleep_at_once(backend):
    """When the kernels load, NumPy's OpenBLAS gets the shortest worker timeout (the user's own setting wins)."""
    if os.environ.get("OPENBLAS_THREAD_TIMEOUT"):
        pytest.skip("OPENBLAS_THREAD_TIMEOUT is set: the user's timeout is kept")
    assert backend.description.endswith(f"worker timeout 2^{openblas.WORKER_TIMEOUT} ticks"), backend.description


def test_numpy_products_stay_right_after_the_kernel_choice(backend):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((129, 257)).astype(np.float32)
    b = rng.standard_normal((257, 65)).astype(np.float32)
    np.testing.assert_allclose(a @ b, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)


# --- fallback ----------------------------------------------------------------------------------------------------

_FALLBACK_SCRIPT = """
import numpy as np, mindspore as ms
from mindspore import Tensor
from mindcv_lseg.kernels import gemm
{patch}
ms.set_context(mode=ms.GRAPH_MODE)
cells = [gemm.BlasMatMul(transpose_b=True) for _ in range(3)]
a = np.arange(12, dtype=np.float32).reshape(3, 4)
out = cells[0](Tensor(a), Tensor(a)).asnumpy()
assert np.allclose(out, a @ a.T), out
print("use_blas", cells[0].use_blas)
"""


def _run_fallback(patch, env_extra):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), **env_extra)
    proc = subprocess.run(
        [sys.executable, "-c", _FALLBACK_SCRIPT.format(patch=patch)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    notices = [line for line in proc.stderr.splitlines() if line.startswith("mindcv-lseg: BLAS GEMM")]
    return proc.stdout, notices


def test_missing_library_falls_back_with_one_notice():
    stdout, notices = _run_fallback("gemm.library.library_path = lambda stem: None", {})
    assert "use_blas False" in stdout
    assert len(notices) == 1 and "was not built" in notices[0] and "MatMul" in notices[0], notices


def test_switch_off_falls_back_silently():
    stdout, notices = _run_fallback("", {"MINDCV_LSEG_KERNELS": "0"})
    assert "use_blas False" in stdout
    assert notices == []


def test_a_mindspore_white_list_without_our_folder_falls_back(tmp_path):
    stdout, notices = _run_fallback("", {"MS_CUSTOM_AOT_WHITE_LIST": str(tmp_path)})
    assert "use_blas False" in stdout
    assert len(notices) == 1 and "MS_CUSTOM_AOT_WHITE_LIST" in notices[0], notices


def test_refused_by_mindspore_reads_the_white_list(monkeypatch, tmp_path):
    lib = tmp_path / "kernels" / "_lseg_gemm.so"
    monkeypatch.delenv("MS_CUSTOM_AOT_WHITE_LIST", raising=False)
    assert library.refused_by_mindspore(str(lib)) is None
    monkeypatch.setenv("MS_CUSTOM_AOT_WHITE_LIST", f"/nowhere:{tmp_path}")
    assert library.refused_by_mindspore(str(lib)) is None
    monkeypatch.setenv("MS_CUSTOM_AOT_WHITE_LIST", "/nowhere")
    assert "/nowhere" not in library.refused_by_mindspore(str(lib)) and "kernels" in library.refused_by_mindspore(
        str(lib)
    )
