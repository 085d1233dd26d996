"""Finding the compiled kernel libraries of this package, the switch that turns them off, and the one-line notice
printed when a library cannot be used."""

import glob
import os
import sys
from typing import Callable, Dict, Optional, Tuple

__all__ = ["ENV_SWITCH", "library_path", "refused_by_mindspore", "locate", "switched_off", "notice", "custom_ops"]

ENV_SWITCH = "MINDCV_LSEG_KERNELS"  # "0": never use the compiled kernels (MindSpore's own ops everywhere)
_HERE = os.path.dirname(os.path.abspath(__file__))
_NOTICED = set()
_CUSTOM_OPS: Dict[str, Optional[dict]] = {}


def library_path(stem: str) -> Optional[str]:
    """The library ``stem*.so`` that ``pip install`` built next to this file (e.g. ``_lseg_gemm``), or None."""
    found = sorted(glob.glob(os.path.join(_HERE, stem + "*.so")))
    return found[0] if found else None


def refused_by_mindspore(path: str) -> Optional[str]:
    """Why MindSpore would refuse to run custom ops from ``path``, or None. With ``MS_CUSTOM_AOT_WHITE_LIST`` set,
    MindSpore runs AOT libraries only from the folders it lists (and their subfolders)."""
    allowed = os.environ.get("MS_CUSTOM_AOT_WHITE_LIST")
    if not allowed:
        return None
    real = os.path.realpath(path)
    folders = [os.path.realpath(f) for f in allowed.split(":") if f]
    if any(real.startswith(folder.rstrip(os.sep) + os.sep) for folder in folders):
        return None
    return f"MS_CUSTOM_AOT_WHITE_LIST does not include {os.path.dirname(real)}"


def locate(stem: str) -> Tuple[Optional[str], str]:
    """(path of the library ``stem*.so``, "") when MindSpore may run it, else (None, why not)."""
    path = library_path(stem)
    if path is None:
        return None, f"the extension mindcv_lseg/kernels/{stem}*.so was not built; reinstall with a C++ compiler"
    refused = refused_by_mindspore(path)
    return (None, refused) if refused else (path, "")


def switched_off() -> bool:
    return os.environ.get(ENV_SWITCH, "1") == "0"


def notice(what: str, reason: str, fallback: str) -> None:
    """Say once per process (and per ``what``) that a kernel library is not used, why, and what runs instead."""
    if what in _NOTICED:
        return
    _NOTICED.add(what)
    print(f"mindcv-lseg: {what} not used ({reason}); {fallback}", file=sys.stderr)


def custom_ops(stem: str, what: str, fallback: str, specs: Dict[str, Tuple[Callable, Callable]]) -> Optional[dict]:
    """MindSpore AOT primitives ``{entry: ops.Custom}`` of the library ``stem`` (``specs``: entry point ->
    (out_shape, out_dtype) functions), built once per process; None on another device than CPU, with
    ``MINDCV_LSEG_KERNELS=0``, or when the library is missing or cannot be loaded (then with the one-line
    :func:`notice` naming ``what`` and the ``fallback``)."""
    import ctypes

    import mindspore as ms
    from mindspore import ops

    if ms.get_context("device_target") != "CPU" or switched_off():
        return None
    if stem not in _CUSTOM_OPS:
        prims = None
        path, reason = locate(stem)
        if path is not None:
            try:
                ctypes.CDLL(path)  # fails here, with the loader's message, rather than inside a graph
            except OSError as err:
                reason = str(err)
            else:
                prims = {
                    entry: ops.Custom(f"{path}:{entry}", out_shape=shape, out_dtype=dtype, func_type="aot")
                    for entry, (shape, dtype) in specs.items()
                }
        _CUSTOM_OPS[stem] = prims
        if prims is None:
            notice(what, reason, fallback)
    return _CUSTOM_OPS[stem]
