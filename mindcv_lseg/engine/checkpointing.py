"""Training checkpoints: periodic (keep-last-k), best-by-val-mIoU, atomic writes, exact resume.

A training checkpoint is one MindSpore ``.ckpt`` written with
:func:`mindcv_lseg.checkpoint.save_checkpoint_atomic` (temp file + fsync + ``os.replace``) holding

* every parameter of the network (including the frozen CLIP text encoder and the BatchNorm statistics), under the
  network's own names, so ``mindcv.create_model(name, checkpoint_path=...)`` and ``load_into_net`` read it as a plain
  LSeg checkpoint (optimizer entries are ignored by them);
* the optimizer state: ``global_step`` and the momentum buffers ``moments.*`` (``adam_m.*``/``adam_v.*`` for adamw);
* scalars: ``epoch`` (completed epochs), ``step`` (micro-batches seen), ``best_miou``, ``best_epoch``, ``seed``;
* strings: ``train_config`` (the resolved YAML config), ``train_history`` (JSON list of per-epoch metrics),
  ``rng_state`` (JSON of the python / numpy / MindSpore RNG states).

The data order and augmentation are a pure function of ``(seed, epoch, sample index)`` (the data loader's
contract), so ``epoch`` is the sampler state. Checkpoints are written at epoch ends, where no gradient-accumulation
window is open. Only rank 0 writes; every rank reads the same file on resume.

File names in ``ckpt_save_dir``: ``{model}-{epoch:04d}.ckpt`` (periodic), ``best.ckpt``.
"""

import json
import os
import random
import re
from typing import Dict, List, Optional

import numpy as np

import mindspore as ms

from ..checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    load_checkpoint_checked,
    match_state,
    net_shapes,
    save_checkpoint_atomic,
)
from ..fileio import atomic_save

__all__ = [
    "OPTIMIZER_STATE_PREFIXES",
    "get_rng_state",
    "set_rng_state",
    "save_train_checkpoint",
    "load_train_checkpoint",
    "CheckpointManager",
    "find_latest_checkpoint",
    "resolve_resume_path",
]

OPTIMIZER_STATE_PREFIXES = ("global_step", "moments.", "adam_m.", "adam_v.", "accum.", "stat.")
_SCALARS = ("epoch", "step", "best_epoch", "seed")
_FLOATS = ("best_miou",)
_STRINGS = ("train_config", "train_history", "rng_state")
_PERIODIC_RE = re.compile(r"^(?P<prefix>.+)-(?P<epoch>\d{4,})\.ckpt$")


# ---------------------------------------------------------------------------------------------------------- RNG
def get_rng_state() -> str:
    """JSON string with the python ``random``, numpy global and MindSpore global RNG states."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "mindspore": ms.get_rng_state().asnumpy().tolist(),
    }
    return json.dumps(state)


def set_rng_state(text: str) -> None:
    """Restore the states saved by :func:`get_rng_state`."""
    state = json.loads(text)
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state((npst[0], np.asarray(npst[1], dtype=np.uint32), npst[2], npst[3], npst[4]))
    ms.set_rng_state(ms.Tensor(np.asarray(state["mindspore"], dtype=np.uint8)))


# ---------------------------------------------------------------------------------------------------------- save
def _optimizer_state(optimizer) -> List[Dict]:
    out = []
    if optimizer is None:
        return out
    for name, p in optimizer.parameters_and_names():
        if name.startswith(OPTIMIZER_STATE_PREFIXES):
            out.append({"name": name, "data": p})
    return out


def save_train_checkpoint(path: str, net, optimizer=None, state: Optional[Dict] = None) -> str:
    """Write network + optimizer state + training state atomically.

    Args:
        path: destination ``.ckpt`` (its directory must exist).
        net: the LSeg network (all its parameters are saved).
        optimizer: optimizer whose ``global_step`` / ``moments.*`` are saved (optional).
        state: dict with any of ``epoch, step, best_epoch, seed`` (int), ``best_miou`` (float),
            ``train_config``, ``train_history``, ``rng_state`` (str).
    """
    entries = [{"name": p.name, "data": p} for p in net.get_parameters()]
    names = {e["name"] for e in entries}
    for e in _optimizer_state(optimizer):
        if e["name"] in names:
            raise CheckpointError(f"optimizer state {e['name']!r} collides with a network parameter name")
        entries.append(e)
    append = {}
    for k, v in (state or {}).items():
        if k in _SCALARS:
            append[k] = int(v)
        elif k in _FLOATS:
            append[k] = float(v)
        elif k in _STRINGS:
            append[k] = str(v)
        else:
            raise KeyError(f"unknown training-state key {k!r}; expected one of {_SCALARS + _FLOATS + _STRINGS}")
    return save_checkpoint_atomic(entries, path, append_dict=append or None)


def _scalar(v):
    if isinstance(v, (ms.Parameter, ms.Tensor)):
        return v.asnumpy().item()
    return v


def load_train_checkpoint(path: str, net, optimizer=None, require_optimizer: bool = True) -> Dict:
    """Load a training checkpoint into ``net`` (strictly) and ``optimizer``; return the training state.

    Args:
        path: checkpoint written by :func:`save_train_checkpoint`.
        net: network of the same architecture.
        optimizer: optimizer of the same structure (its ``global_step`` and momentum buffers are restored).
        require_optimizer: raise if the checkpoint has no optimizer state for ``optimizer``.

    Returns:
        dict with ``epoch, step, best_epoch, seed, best_miou, train_config, train_history, rng_state`` (those present).

    Raises:
        CheckpointError (a ``ValueError``) naming the file and the missing/mismatched parameters.
    """
    params = load_checkpoint_checked(path)
    net_params = {p.name: p for p in net.get_parameters()}
    problems = match_state(net_shapes(params), net_shapes(net_params))
    if problems:
        raise CheckpointMismatchError(
            problems.message(
                f"cannot resume from {path}: it does not match the network (was it written for another model/config?)",
                limit=5,
            )
        )
    if "epoch" not in params:
        raise CheckpointError(
            f"cannot resume from {path}: no 'epoch' entry, it is not a training checkpoint "
            "(to initialise from weights only, use ckpt_path instead of resume)"
        )
    # values are assigned parameter by parameter: ``load_param_into_net(optimizer, ...)`` would strip the
    # ``moments.`` prefix and write the momentum buffers INTO the network weights (the optimizer holds both).
    for n, p in net_params.items():
        p.set_data(ms.Tensor(params[n].asnumpy(), dtype=p.dtype))
    if optimizer is not None:
        opt_state = {n: p for n, p in optimizer.parameters_and_names() if n.startswith(OPTIMIZER_STATE_PREFIXES)}
        absent = [n for n in opt_state if n not in params]
        if absent and require_optimizer:
            raise CheckpointError(
                f"cannot resume from {path}: optimizer state missing ({absent[:5]}); "
                "was the optimizer (opt) changed?"
            )
        bad = [n for n in opt_state if n in params and tuple(params[n].shape) != tuple(opt_state[n].shape)]
        if bad:
            raise CheckpointError(f"cannot resume from {path}: optimizer state shape mismatch for {bad[:5]}")
        for n, p in opt_state.items():
            if n in params:
                p.set_data(ms.Tensor(params[n].asnumpy(), dtype=p.dtype))
    state = {}
    for k in _SCALARS:
        if k in params:
            state[k] = int(_scalar(params[k]))
    for k in _FLOATS:
        if k in params:
            state[k] = float(_scalar(params[k]))
    for k in _STRINGS:
        if k in params:
            state[k] = str(params[k])
    return state


# ---------------------------------------------------------------------------------------------------------- files
def find_latest_checkpoint(save_dir: str) -> Optional[str]:
    """Path of the periodic checkpoint with the highest epoch in ``save_dir`` (None if there is none)."""
    if not os.path.isdir(save_dir):
        return None
    best = None
    for f in os.listdir(save_dir):
        m = _PERIODIC_RE.match(f)
        if m and (best is None or int(m.group("epoch")) > best[0]):
            best = (int(m.group("epoch")), os.path.join(save_dir, f))
    return best[1] if best else None


def resolve_resume_path(resume: str, save_dir: str) -> Optional[str]:
    """``""`` -> None; ``"auto"`` -> latest periodic checkpoint in ``save_dir`` (None if none yet: fresh start);
    a path -> that path (must exist)."""
    if not resume:
        return None
    if resume == "auto":
        return find_latest_checkpoint(save_dir)
    if not os.path.isfile(resume):
        raise CheckpointError(
            f"resume checkpoint not found: {resume!r} (give an existing training checkpoint, or "
            f"'auto' for the latest one in ckpt_save_dir)"
        )
    return resume


class CheckpointManager:
    """Periodic checkpoints with keep-last-k, plus ``best.ckpt`` by validation mIoU. Only rank 0 writes.

    Args:
        save_dir: directory (created on rank 0).
        prefix: file-name prefix (the model name).
        keep_max: number of periodic checkpoints kept (older ones are deleted after a new one is written).
        rank: process rank.
    """

    def __init__(self, save_dir: str, prefix: str, keep_max: int = 5, rank: int = 0):
        self.save_dir = save_dir
        self.prefix = prefix
        self.keep_max = max(1, int(keep_max))
        self.rank = rank
        if rank == 0:
            os.makedirs(save_dir, exist_ok=True)

    def periodic_path(self, epoch: int) -> str:
        return os.path.join(self.save_dir, f"{self.prefix}-{epoch:04d}.ckpt")

    @property
    def best_path(self) -> str:
        return os.path.join(self.save_dir, "best.ckpt")

    def periodic(self) -> List[str]:
        """Existing periodic checkpoints of this prefix, oldest first."""
        if not os.path.isdir(self.save_dir):
            return []
        found = []
        for f in os.listdir(self.save_dir):
            m = _PERIODIC_RE.match(f)
            if m and m.group("prefix") == self.prefix:
                found.append((int(m.group("epoch")), os.path.join(self.save_dir, f)))
        return [p for _, p in sorted(found)]

    def save_periodic(self, epoch: int, net, optimizer, state: Dict) -> Optional[str]:
        """Write ``{prefix}-{epoch:04d}.ckpt`` and delete periodic checkpoints beyond the last ``keep_max``."""
        if self.rank != 0:
            return None
        path = save_train_checkpoint(self.periodic_path(epoch), net, optimizer, state)
        for old in self.periodic()[: -self.keep_max]:
            try:
                os.remove(old)
            except OSError:
                pass
        return path

    def save_best(self, net, optimizer, state: Dict, source: Optional[str] = None) -> Optional[str]:
        """Write ``best.ckpt`` atomically: a hard link of ``source`` (the same epoch's periodic file) if given,
        else a fresh save."""
        if self.rank != 0:
            return None
        if source and os.path.isfile(source):

            def link(tmp):
                os.remove(tmp)  # the temp name is free again: link the periodic file there
                os.link(source, tmp)

            try:
                return atomic_save(link, self.best_path)
            except OSError:  # no hard links on this file system
                pass
        return save_train_checkpoint(self.best_path, net, optimizer, state)
