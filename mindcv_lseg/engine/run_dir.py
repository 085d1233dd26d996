"""One training run per ``ckpt_save_dir``: a lock, a refusal to mix runs, and cleanup of killed writes.

:func:`prepare_run_dir` is called by the trainer (rank 0) before it writes anything:

1. ``ckpt_save_dir`` must be a folder (or not exist yet): a file there is a :class:`RunDirError`;
2. it takes the run lock ``.lseg_run.lock`` (``fcntl.flock``, held until the process ends). The lock file names
   the holder (pid, host, start time, command). A second run on the same folder stops at once with
   :class:`RunDirLockedError` naming the holder. The kernel drops a ``flock`` when its process dies, so the lock
   of a killed run is taken over (and said so);
3. a folder that holds another run's files (checkpoints, ``config.yaml``, ``train.log``, metrics, curves) is refused
   unless the run resumes (``resume``) or ``overwrite`` is set; ``overwrite`` deletes exactly those files (and the
   ``validate_*`` results of the old checkpoints), nothing else;
4. temp files left by a save that was killed mid-write (:data:`mindcv_lseg.fileio.TEMP_PREFIX` files,
   MindSpore's ``.NAME.XXXX.tmp`` checkpoint temps, ``.best.ckpt.link*``) are deleted; with the lock held no other
   process can be writing them.
"""

import datetime
import json
import os
import re
import shutil
import socket
import sys
from typing import List, Optional

from ..fileio import TEMP_PREFIX
from ..quickstart import QUICKSTART_OUT_DIR

__all__ = [
    "RunDirError",
    "RunDirLockedError",
    "RunLock",
    "LOCK_NAME",
    "find_run_files",
    "find_temp_files",
    "clean_temp_files",
    "prepare_run_dir",
    "quickstart_validate_argv",
]

LOCK_NAME = ".lseg_run.lock"
# tools/quickstart.py's run folder (relative to the working directory); tools/validate.py without arguments uses it
# files a training run writes into ckpt_save_dir (see trainer.py / checkpointing.py / logger.py)
_RUN_FILES = ("config.yaml", "train.log", "metrics.csv", "metrics.json", "curves.png", "best.ckpt")
_CKPT_RE = re.compile(r"^.+-\d{4,}\.ckpt$")
_VALIDATE_RE = re.compile(r"^validate_[a-z_]+$")
# temp files of interrupted atomic writes: every file (checkpoints, the best.ckpt link, MindSpore's own "<stem>.tmp"
# beside a checkpoint's temp) is written through fileio.atomic_save, whose temp names start with TEMP_PREFIX
_TEMP_RE = re.compile("^" + re.escape(TEMP_PREFIX) + ".+$")


class RunDirError(ValueError):
    """``ckpt_save_dir`` cannot be used for this run (a file, or another run's results). The message says why."""


class RunDirLockedError(RunDirError):
    """Another live process is training into the same ``ckpt_save_dir``."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Exclusive lock on a run folder (``fcntl.flock`` on ``DIR/.lseg_run.lock``), released on :meth:`release` or
    when the process ends.

    Attributes:
        previous: the holder record left by a process that died without releasing (``dict``) or ``None``.
    """

    def __init__(self, directory: str):
        self.directory = directory
        self.path = os.path.join(directory, LOCK_NAME)
        self.fd = None
        self.previous = None

    @staticmethod
    def read_holder(path: str) -> dict:
        try:
            with open(path, encoding="utf-8") as f:
                return json.loads(f.read() or "{}")
        except (OSError, ValueError):
            return {}

    @staticmethod
    def describe(holder: dict) -> str:
        if not holder:
            return "an unknown process"
        return (
            f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}: "
            f"{holder.get('command', '?')}"
        )

    def acquire(self) -> "RunLock":
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = self.read_holder(self.path)
                os.close(fd)
                raise RunDirLockedError(
                    f"ckpt_save_dir {self.directory} is in use by another training run ({self.describe(holder)}). "
                    "Wait for it to finish, stop it, or pass another --ckpt_save_dir"
                ) from None
            # the previous holder may have unlinked the file between our open and our flock: lock the current one
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        old = self.read_holder(self.path)
        if old and old.get("pid") != os.getpid():
            self.previous = old
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.remove(self.path)
        except OSError:
            pass
        os.close(self.fd)  # closing drops the flock
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def find_run_files(directory: str) -> List[str]:
    """Names in ``directory`` that a training run wrote (checkpoints, config, log, metrics, curves, validate_*)."""
    if not os.path.isdir(directory):
        return []
    found = []
    for name in sorted(os.listdir(directory)):
        full = os.path.join(directory, name)
        if os.path.isfile(full) and (name in _RUN_FILES or _CKPT_RE.match(name)):
            found.append(name)
        elif os.path.isdir(full) and _VALIDATE_RE.match(name):
            found.append(name)
    return found


def find_temp_files(directory: str) -> List[str]:
    """Leftover temp files of interrupted atomic writes in ``directory`` (names)."""
    if not os.path.isdir(directory):
        return []
    return sorted(n for n in os.listdir(directory) if _TEMP_RE.match(n) and os.path.isfile(os.path.join(directory, n)))


def clean_temp_files(directory: str) -> List[str]:
    """Delete the leftover temp files of :func:`find_temp_files`; returns the names removed. Only call it while
    holding the run lock (no other process may be writing into ``directory``)."""
    removed = []
    for name in find_temp_files(directory):
        try:
            os.remove(os.path.join(directory, name))
            removed.append(name)
        except FileNotFoundError:
            pass
    return removed


def _remove_run_files(directory: str, names: List[str]) -> None:
    for name in names:
        full = os.path.join(directory, name)
        if os.path.isdir(full):
            shutil.rmtree(full)
        else:
            os.remove(full)


def prepare_run_dir(directory: str, resume: str = "", overwrite: bool = False, log=None) -> RunLock:
    """Make ``directory`` ready for a training run and lock it (see the module docstring).

    Args:
        directory: the run's ``ckpt_save_dir`` (created if missing).
        resume: the run's ``resume`` value (``""``, ``"auto"`` or a checkpoint path): resuming may use a folder with
            results of earlier runs.
        overwrite: delete the previous run's results instead of refusing.
        log: optional logger-like object with ``info``/``warning`` (messages are printed to stderr otherwise).

    Returns:
        the held :class:`RunLock` (keep it for the whole run; :meth:`RunLock.release` at the end).

    Raises:
        RunDirError: ``directory`` is a file, holds another run's files (no ``resume``/``overwrite``), or both
            ``resume`` and ``overwrite`` are given.
        RunDirLockedError: another live run holds the folder.
    """

    def say(level, msg):
        if log is not None:
            getattr(log, level)(msg)
        else:
            print(f"{level}: {msg}", file=sys.stderr)

    directory = os.fspath(directory)
    if resume and overwrite:
        raise RunDirError(
            "--resume and --overwrite contradict each other: resume continues the run in "
            f"{directory}, overwrite deletes it; pass one of them"
        )
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise RunDirError(
            f"ckpt_save_dir {directory} is a file, not a folder: pass a folder path with "
            "--ckpt_save_dir (it is created if missing)"
        )
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create ckpt_save_dir {directory}: {e.strerror or e}") from None
    lock = RunLock(directory).acquire()
    try:
        if lock.previous is not None and not _pid_alive(int(lock.previous.get("pid", -1))):
            say(
                "warning",
                f"took over the lock of a run that ended without releasing it " f"({RunLock.describe(lock.previous)})",
            )
        removed = clean_temp_files(directory)
        if removed:
            say(
                "info",
                f"removed {len(removed)} temp file(s) of an interrupted save in {directory}: "
                f"{', '.join(removed[:5])}",
            )
        existing = find_run_files(directory)
        if existing and not resume:
            if not overwrite:
                shown = ", ".join(existing[:6]) + (", ..." if len(existing) > 6 else "")
                raise RunDirError(
                    f"ckpt_save_dir {directory} already holds the results of another run ({shown}). Nothing was "
                    "changed. Pass --resume auto to continue that run, --overwrite to delete its results and start "
                    "over, or another --ckpt_save_dir for a new run"
                )
            _remove_run_files(directory, existing)
            say("warning", f"--overwrite: deleted the previous run's results in {directory}: {', '.join(existing)}")
    except BaseException:
        lock.release()
        raise
    return lock


def quickstart_validate_argv(root: str = ".") -> Optional[List[str]]:
    """Arguments for ``tools/validate.py`` that evaluate the quickstart's model on its toy set, or ``None`` if there
    is no finished quickstart run under ``root`` (its ``config.yaml``, ``best.ckpt`` and the toy set's
    ``classes.txt`` must exist). Nothing is created."""
    run = os.path.normpath(os.path.join(root, QUICKSTART_OUT_DIR))
    config, ckpt = os.path.join(run, "config.yaml"), os.path.join(run, "best.ckpt")
    if not (os.path.isfile(config) and os.path.isfile(ckpt)):
        return None
    import yaml

    try:
        with open(config, encoding="utf-8") as f:
            cfg = yaml.safe_load(f) or {}
    except (OSError, ValueError, yaml.YAMLError):
        return None
    data_dir = cfg.get("data_dir") if isinstance(cfg, dict) else None
    if not data_dir or not os.path.isfile(os.path.join(root, data_dir, "classes.txt")):
        return None
    return ["-c", config, "--ckpt_path", ckpt, "--ckpt_save_dir", run, "--eval_mode", "whole"]
