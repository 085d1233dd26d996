"""What the kernel tests do when a compiled kernel library is not usable: skip when the kernels are switched off or
on a machine without a C++ compiler (where ``pip install`` could not build them), fail anywhere else (a build or
load failure must not pass unseen)."""

import os
import shutil
import subprocess
import sys
from typing import Dict, List, Tuple

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


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(script: str, notice: str, env: Dict[str, str]) -> Tuple[str, List[str]]:
    """Run ``script`` in a fresh interpreter with this repository first on the path, ``env`` added to the environment
    and the kernel switch (``MINDCV_LSEG_KERNELS``) only as ``env`` sets it; returns its stdout and the lines of
    its stderr that start with ``notice`` (e.g. ``"mindcv-lseg: GELU kernels"``). Fails if it exits non-zero."""
    inherited = {k: v for k, v in os.environ.items() if k != library.ENV_SWITCH}
    full = dict(inherited, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), **env)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=full, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, [line for line in proc.stderr.splitlines() if line.startswith(notice)]
