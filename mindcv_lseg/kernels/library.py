"""Finding the compiled kernel libraries of this package, the switch that turns them off, and the one-line notice
printed when a library cannot be used."""

import glob
import os
import sys
from typing import Optional, Tuple

__all__ = ["ENV_SWITCH", "library_path", "refused_by_mindspore", "locate", "switched_off", "notice"]

ENV_SWITCH = "MINDCV_LSEG_KERNELS"  # "0": never use the compiled kernels (MindSpore's own ops everywhere)
_HERE = os.path.dirname(os.path.abspath(__file__))
_NOTICED = set()


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
