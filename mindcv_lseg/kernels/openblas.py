"""The BLAS behind the CPU-lean GEMMs: the OpenBLAS that NumPy's wheel bundles, with its kernel chosen for the CPU.

Why this BLAS: it is already installed with a dependency we pin (NumPy 1.26's manylinux wheels ship an ILP64
OpenBLAS 0.3.23 in ``numpy.libs``, exporting ``cblas_sgemm64_``), so nothing is downloaded or built, and its sgemm
is much faster than MindSpore 2.10's CPU MatMul on an AVX-512 machine (4096^3 products here: ~180-280 GFLOP/s
against ~106; see ``docs/cpu_kernels.md``).

Why the kernel is chosen here: OpenBLAS picks its kernel family (``coretype``) once, when it is loaded, from the
CPU model. On a virtual CPU it may not recognise the model and fall back to a generic kernel several times slower
(seen on machines of this project's kind: ~43 GFLOP/s instead of ~280). :func:`choose_core` compares what OpenBLAS
picked with what the CPU's flags (``/proc/cpuinfo``) support and, when OpenBLAS picked less, switches it to the
best family the flags allow (``Cooperlake`` with AVX-512 BF16, ``SkylakeX`` with AVX-512 F/BW/DQ/VL, ``Haswell``
with AVX2 + FMA). A user's own ``OPENBLAS_CORETYPE`` is always respected. The switch uses OpenBLAS's exported
``gotoblas_dynamic_quit``/``gotoblas_dynamic_init`` (the start-up selection, rerun with ``OPENBLAS_CORETYPE``
set) and affects NumPy's products in the same process too (they get faster; results stay float32-exact to
within BLAS summation order).

Why its worker threads are told to sleep at once (:func:`settle_workers`): after each threaded product OpenBLAS's
workers keep polling for the next one (``sched_yield`` in a loop) for 2^28 clock ticks, ~0.1 s. The kernels that
run between two products on all cores (the attention, ``lseg_attention.cc``) then share a core with a poller and
ran at half speed (11 ms -> 23 ms per ViT-L/16 attention here). OpenBLAS's own setting for this,
``OPENBLAS_THREAD_TIMEOUT``, is read when the library loads, i.e. when NumPy is imported; :func:`settle_workers`
applies the shortest timeout (2^4 ticks) afterwards by restarting OpenBLAS's thread server with it. The products
themselves did not get slower (their workers are woken per product, microseconds against milliseconds).
"""

import ctypes
import glob
import os
from typing import Optional, Tuple

__all__ = ["find_numpy_openblas", "cpu_flags", "best_core", "choose_core", "settle_workers", "load_sgemm"]

SGEMM_SYMBOL = "cblas_sgemm64_"  # ILP64 cblas_sgemm: the integer sizes are int64
WORKER_TIMEOUT = 4  # OPENBLAS_THREAD_TIMEOUT: workers poll 2^4 clock ticks after a product, then sleep (its minimum)
_SERVER_SYMBOLS = ("openblas_read_env", "openblas_thread_timeout", "blas_thread_shutdown_", "blas_thread_init")

# OpenBLAS kernel families for x86-64, worst to best for float32 GEMM, and the CPU flags each one needs
_CORE_RANK = {"Haswell": 1, "Zen": 1, "SkylakeX": 2, "Cooperlake": 3, "SapphireRapids": 3}
_CORE_FLAGS = (
    ("Cooperlake", {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_bf16"}),
    ("SkylakeX", {"avx512f", "avx512bw", "avx512dq", "avx512vl"}),
    ("Haswell", {"avx2", "fma"}),
)


def find_numpy_openblas() -> Optional[str]:
    """Path of the OpenBLAS shared library bundled with the installed NumPy wheel, or None."""
    import numpy

    root = os.path.dirname(numpy.__file__)
    for folder in (os.path.join(os.path.dirname(root), "numpy.libs"), os.path.join(root, ".libs")):
        found = sorted(glob.glob(os.path.join(folder, "libopenblas*.so*")))
        if found:
            return found[0]
    return None


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set:
    """The CPU feature flags of the first processor listed in ``cpuinfo`` (empty where it cannot be read)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def best_core(flags: set) -> Optional[str]:
    """The best OpenBLAS kernel family for float32 GEMM that ``flags`` allow, or None (then leave OpenBLAS be)."""
    for core, needs in _CORE_FLAGS:
        if needs <= flags:
            return core
    return None


def _corename(lib: ctypes.CDLL) -> str:
    get = lib.openblas_get_corename64_
    get.restype = ctypes.c_char_p
    return get().decode("ascii", "replace")


def choose_core(lib: ctypes.CDLL, flags: Optional[set] = None) -> Tuple[str, str]:
    """Switch ``lib`` to the best kernel family for this CPU if it picked a worse one; returns (before, after)."""
    before = _corename(lib)
    if os.environ.get("OPENBLAS_CORETYPE"):
        return before, before  # the user chose
    target = best_core(cpu_flags() if flags is None else flags)
    if target is None or _CORE_RANK.get(before, 0) >= _CORE_RANK[target]:
        return before, before
    if not (hasattr(lib, "gotoblas_dynamic_quit") and hasattr(lib, "gotoblas_dynamic_init")):
        return before, before  # not a DYNAMIC_ARCH build: nothing to choose
    os.environ["OPENBLAS_CORETYPE"] = target
    try:
        lib.gotoblas_dynamic_quit()
        lib.gotoblas_dynamic_init()
    finally:
        del os.environ["OPENBLAS_CORETYPE"]
    return before, _corename(lib)


def settle_workers(lib: ctypes.CDLL) -> Optional[int]:
    """Make OpenBLAS's worker threads sleep right after each product instead of polling for ~0.1 s; returns the
    timeout now in force (log2 of clock ticks), or None where this OpenBLAS does not export what it takes.

    A user's own ``OPENBLAS_THREAD_TIMEOUT`` is left alone. Otherwise the thread server is restarted with
    :data:`WORKER_TIMEOUT` (``blas_thread_shutdown_`` + ``blas_thread_init``, what OpenBLAS itself does around a
    fork), the environment is restored. Called once, when the kernels load (the first lean layer built), before
    they run any product; no NumPy product may run in another thread at that moment (its workers are restarted)."""
    if not all(hasattr(lib, name) for name in _SERVER_SYMBOLS):
        return None
    if os.environ.get("OPENBLAS_THREAD_TIMEOUT"):
        return lib.openblas_thread_timeout()
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = str(WORKER_TIMEOUT)
    try:
        lib.openblas_read_env()
        lib.blas_thread_shutdown_()
        lib.blas_thread_init()
    finally:
        del os.environ["OPENBLAS_THREAD_TIMEOUT"]
        lib.openblas_read_env()  # its other settings as they were (the timeout is kept by the thread server)
    return WORKER_TIMEOUT


def load_sgemm() -> Tuple[int, str]:
    """(address of NumPy's OpenBLAS ``cblas_sgemm64_``, description) after choosing its kernel.

    Raises:
        OSError: no bundled OpenBLAS, or it has no ILP64 ``cblas_sgemm64_``.
    """
    path = find_numpy_openblas()
    if path is None:
        raise OSError("the installed NumPy bundles no OpenBLAS (numpy.libs/libopenblas*.so)")
    lib = ctypes.CDLL(path)
    if not hasattr(lib, SGEMM_SYMBOL):
        raise OSError(f"{os.path.basename(path)} has no {SGEMM_SYMBOL} (not an ILP64 OpenBLAS)")
    before, after = choose_core(lib)
    core = after if before == after else f"{after} (OpenBLAS had picked {before})"
    timeout = settle_workers(lib)
    workers = "" if timeout is None else f", worker timeout 2^{timeout} ticks"
    address = ctypes.cast(getattr(lib, SGEMM_SYMBOL), ctypes.c_void_p).value
    return address, f"OpenBLAS {os.path.basename(path)}, kernel {core}{workers}"
