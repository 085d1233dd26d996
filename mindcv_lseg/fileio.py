"""Atomic file writing: every file the package writes goes through a temp file in the same folder + ``os.replace``,
so a crash or a full disk never leaves a half-written file under the final name."""
import os
import tempfile
from typing import Callable

__all__ = ["atomic_save", "atomic_write_bytes", "atomic_write_text"]


def atomic_save(save_fn: Callable[[str], None], path: str) -> str:
    """Call ``save_fn(tmp_path)`` on a temp file beside ``path``, then rename it to ``path``.

    The temp file keeps ``path``'s extension (some writers pick the format from it) and is removed on failure.
    Returns ``path``.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".tmp_{base}_", suffix=ext, dir=directory)
    os.close(fd)
    try:
        save_fn(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_write_bytes(path: str, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically."""

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_save(write, path)


def atomic_write_text(path: str, text: str) -> str:
    """Write UTF-8 ``text`` to ``path`` atomically (newlines written as given)."""

    def write(tmp):
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    return atomic_save(write, path)
