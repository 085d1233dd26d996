"""What the kernel tests do when a compiled kernel library is not usable: skip when the kernels are switched off or
on a machine without a C++ compiler (where ``pip install`` could not build them), fail anywhere else (a build or
load failure must not pass unseen)."""

import shutil

import pytest

from mindcv_lseg.kernels import library


def require_kernels(found, stem: str, what: str, reason: str = ""):
    """``found`` (a loaded kernel, a tuple of them, a backend) if it is usable (not None / falsy), else skip or fail
    as the module docstring says. ``stem``: the library, e.g. ``"_lseg_gemm"``."""
    if found:
        return found
    if library.switched_off():
        pytest.skip(f"the {what} are switched off ({library.ENV_SWITCH}=0)")
    why = f": {reason}" if reason else " (see the notice on stderr)"
    if shutil.which("g++") is None and library.library_path(stem) is None:
        pytest.skip(f"no C++ compiler here, the {what} were not built{why}")
    pytest.fail(f"the {what} should load on this machine{why}")
