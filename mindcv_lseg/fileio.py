"""Atomic file writing: every file the package writes goes through a temp file in the same folder + ``os.replace``,
so a crash or a full disk never leaves a half-written file under the final name.

The final file gets the permissions any ordinary ``open(path, "w")`` would give it (``0666`` minus the umask), not
the ``0600`` of the temp file; errors name the destination the caller asked for, never the temp file.
Temp files start with :data:`TEMP_PREFIX`, so leftovers of a killed process can be recognised and removed
(:mod:`mindcv_lseg.engine.run_dir`).
"""

import os
import tempfile
from typing import Callable

__all__ = ["TEMP_PREFIX", "atomic_save", "atomic_write_bytes", "atomic_write_text", "default_file_mode"]

TEMP_PREFIX = ".tmp_"


def default_file_mode() -> int:
    """``0o666 & ~umask``: the mode ``open(path, "w")`` gives a new file in this process."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read the umask by setting it (and put it back at once)
    os.umask(mask)
    return 0o666 & ~mask


def _user_error(e: OSError, path: str, what: str) -> OSError:
    """The same kind of OSError, naming ``path`` instead of the temp file."""
    reason = e.strerror or str(e)
    err = type(e)(e.errno, f"cannot {what} {path}: {reason}") if e.errno else type(e)(f"cannot {what} {path}: {e}")
    err.filename = path
    return err


def atomic_save(save_fn: Callable[[str], None], path: str) -> str:
    """Call ``save_fn(tmp_path)`` on a temp file beside ``path``, then rename it to ``path``.

    The temp file keeps ``path``'s extension (some writers pick the format from it) and is removed on failure.
    The result has mode ``0666 & ~umask``. An ``OSError`` names ``path`` (not the temp file). Returns ``path``.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    base, ext = os.path.splitext(os.path.basename(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{base}_", suffix=ext, dir=directory)
    except OSError as e:
        raise _user_error(e, path, "write") from None
    os.close(fd)
    try:
        save_fn(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise _user_error(e, path, "write") from None
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
