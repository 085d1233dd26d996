"""Quiet interpreter exit for programs that use MindSpore networks.

At interpreter exit Python clears module globals (``mindspore.nn.cell`` among them) before it destroys objects that
are still referenced, e.g. a network held in a script's global variable. MindSpore 2.10's ``Cell.__del__`` then
looks up the module global ``Cell`` (now ``None``) and every live cell prints an ``Exception ignored in
Cell.__del__ ... 'NoneType' object has no attribute 'total_instance_count'`` traceback: hundreds per network, exit
code 0 anyway. Plain mindcv scripts show the same.

:func:`install` registers an ``atexit`` hook. ``atexit`` hooks run before the globals are cleared, so the hook
still sees a working MindSpore: it finalises the cells that are already garbage (``gc.collect()``) in the normal way,
then replaces ``Cell.__del__`` by a finaliser that keeps the objects it needs in default arguments (which survive
the clearing) and skips the release of compiled-graph resources, which die with the process.
"""

import atexit
import gc
import sys

__all__ = ["install"]

_installed = False


def _make_exit_del(cell_cls, compile_cache):
    def __del__(self, _cell=cell_cls, _cache=compile_cache):
        try:
            if isinstance(_cache, dict):
                _cache.pop(id(self), None)
            _cell.total_instance_count -= 1
            _cell.global_cells.pop(self, None)
        except Exception:  # noqa: BLE001 - interpreter teardown: the process is ending, nothing to report
            pass

    return __del__


def _quiet_cell_finalizers() -> None:
    cell_module = sys.modules.get("mindspore.nn.cell")
    if cell_module is None:
        return
    gc.collect()
    cell_module.Cell.__del__ = _make_exit_del(cell_module.Cell, getattr(cell_module, "cells_compile_cache", None))


def install() -> None:
    """Register the exit hook once (call it after importing MindSpore, so that it runs before MindSpore's own)."""
    global _installed
    if not _installed:
        atexit.register(_quiet_cell_finalizers)
        _installed = True
