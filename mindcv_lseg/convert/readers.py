"""Checkpoint readers: one file -> lazily-read ``name -> np.ndarray`` mapping in the file's own naming.

The kind of file is detected from its CONTENT (never the extension) by :func:`detect_kind`:

=====================  ==========================================================================================
kind                   what
=====================  ==========================================================================================
``npz``                numpy ``.npz`` (``tests/parity_weights.py``, big_vision / AugReg ViT weights)
``torch``              ``torch.save`` zip archive (Lightning ``.ckpt`` with ``state_dict``, or a bare state_dict)
``torch-legacy``       pre-1.6 ``torch.save`` pickle stream
``torchscript``        TorchScript archive (OpenAI CLIP ``ViT-B-32.pt``): module attributes flattened to names
``safetensors``        safetensors (timm / HF); MindSpore-written ones are reported as ``mindspore``
``mindspore``          MindSpore ``.ckpt`` / ``.safetensors`` of this project (round trip)
=====================  ==========================================================================================

No torch is imported; PyTorch pickles go through :class:`~mindcv_lseg.convert.torch_pickle.RestrictedUnpickler`.
Arrays are read one at a time on access (:class:`LazyStateDict`), so a caller that converts key by key never holds
two copies of the whole checkpoint.
"""

import json
import os
import zipfile
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from ..checkpoint import (
    CheckpointError,
    CheckpointFormatError,
    CheckpointTruncatedError,
    check_file,
    iter_ckpt_records,
    sniff_mindspore_format,
)
from .torch_pickle import (
    LazyTensor,
    Placeholder,
    UnsafePickleError,
    is_torch_legacy,
    load_torch_legacy,
    load_torch_zip,
    zip_prefix,
)

__all__ = ["LazyStateDict", "SourceState", "detect_kind", "read_checkpoint", "UnsafePickleError"]


class LazyStateDict(Mapping):
    """Ordered mapping ``name -> np.ndarray`` whose values are produced by per-key loaders on each access.

    ``shape(name)`` / ``dtype(name)`` answer without reading the data where the format allows it.
    """

    def __init__(self, loaders, shapes=None, dtypes=None):
        self._loaders = OrderedDict(loaders)
        self._shapes = dict(shapes or {})
        self._dtypes = dict(dtypes or {})

    def __getitem__(self, name):
        return self._loaders[name]()

    def __iter__(self):
        return iter(self._loaders)

    def __len__(self):
        return len(self._loaders)

    def __contains__(self, name):
        return name in self._loaders

    def shape(self, name):
        if name not in self._shapes:
            self._shapes[name] = tuple(self[name].shape)
        return tuple(self._shapes[name])

    def dtype(self, name):
        if name not in self._dtypes:
            self._dtypes[name] = str(self[name].dtype)
        return str(self._dtypes[name])

    def with_names(self, mapping):
        """New LazyStateDict with keys renamed by ``mapping`` (old -> new); keys mapped to None are left out."""
        loaders, shapes, dtypes = OrderedDict(), {}, {}
        for old, new in mapping.items():
            if new is None:
                continue
            loaders[new] = self._loaders[old]
            if old in self._shapes:
                shapes[new] = self._shapes[old]
            if old in self._dtypes:
                dtypes[new] = self._dtypes[old]
        return LazyStateDict(loaders, shapes, dtypes)


class SourceState:
    """What a reader found in a file.

    Attributes:
        path: the file.
        kind: see the module docstring.
        tensors: :class:`LazyStateDict` of the weights in the file's own naming.
        meta: dict of extra information (``container_keys`` of a Lightning dict, ``state_dict_key``,
            ``placeholders`` = unknown classes met in non-weight entries, ``bfloat16`` = keys decoded to float32,
            ``non_tensor`` = names of non-tensor attributes skipped).
    """

    def __init__(self, path, kind, tensors, meta=None):
        self.path, self.kind, self.tensors, self.meta = path, kind, tensors, dict(meta or {})

    def __repr__(self):
        return "SourceState(%s, kind=%s, %d tensors)" % (self.path, self.kind, len(self.tensors))


# ---------------------------------------------------------------------------------------------------------------
# detection
# ---------------------------------------------------------------------------------------------------------------
def _describe_unknown(head):
    h = head.lstrip()[:64].lower()
    if h.startswith((b"<!doctype html", b"<html")) or b"<html" in h:
        return "an HTML page (a download that saved a web page, e.g. Google Drive's virus-scan notice?)"
    if head[:2] == b"\x1f\x8b":
        return "a gzip file (unpack it first)"
    if head[:1] in (b"{", b"["):
        return "a JSON/text file"
    if head[:1] == b"\x80":
        return "a plain Python pickle without PyTorch's format markers"
    return "an unknown binary/text file"


def detect_kind(path):
    """Detect the checkpoint kind from the file content.

    Returns:
        one of ``npz``, ``torch``, ``torchscript``, ``torch-legacy``, ``safetensors``, ``mindspore``.

    Raises:
        CheckpointNotFoundError, CheckpointFormatError (not a checkpoint), CheckpointTruncatedError.
    """
    path = os.fspath(path)
    check_file(path, "source checkpoint")
    with open(path, "rb") as f:
        head = f.read(64)
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise CheckpointTruncatedError(
                "%s is a truncated or corrupt zip archive (%s): re-download it (e.g. PyTorch's 'failed finding "
                "central directory' / 'PytorchStreamReader failed reading zip archive')" % (path, e)
            )
        prefix = zip_prefix(names)
        if prefix is not None:
            if any(n.startswith(prefix + "code/") for n in names) or (prefix + "constants.pkl") in names:
                return "torchscript"
            return "torch"
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        raise CheckpointFormatError(
            "%s is a zip archive but neither a PyTorch checkpoint (no data.pkl) nor an .npz "
            "(members: %s)" % (path, ", ".join(names[:5]) or "none")
        )
    if is_torch_legacy(head):
        return "torch-legacy"
    if head[:1] == b"\x0a" or (len(head) >= 9 and head[8:9] == b"{"):
        # safetensors header / MindSpore protobuf records: one sniffer (checkpoint.py) checks both, incl. truncation
        try:
            kind = sniff_mindspore_format(path)
        except CheckpointTruncatedError:
            raise
        except CheckpointFormatError:
            pass
        else:
            return "safetensors" if kind == "safetensors" else "mindspore"
    raise CheckpointFormatError(
        "%s is not a checkpoint: it looks like %s. Supported: PyTorch/Lightning .ckpt/.pth, "
        "TorchScript CLIP .pt, .safetensors, .npz, MindSpore .ckpt" % (path, _describe_unknown(head))
    )


# ---------------------------------------------------------------------------------------------------------------
# per-format readers
# ---------------------------------------------------------------------------------------------------------------
def read_npz(path):
    """``.npz``: lazily via ``np.load(allow_pickle=False)`` (object arrays are refused, CRC checked by zipfile)."""
    try:
        npz = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointTruncatedError("%s: corrupt or truncated .npz (%s)" % (path, e))
    shapes, dtypes, loaders = {}, {}, OrderedDict()
    for name in npz.files:

        def load(name=name):
            try:
                return npz[name]
            except ValueError as e:
                if "allow_pickle" in str(e):
                    raise UnsafePickleError(
                        "%s: array '%s' is a pickled object array; refusing to unpickle it" % (path, name)
                    )
                raise CheckpointTruncatedError("%s: corrupt array '%s' (%s)" % (path, name, e))
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise CheckpointTruncatedError("%s: corrupt or truncated array '%s' (%s)" % (path, name, e))

        loaders[name] = load
        # shape/dtype from the .npy header without reading the data
        try:
            with npz.zip.open(name + ".npy") as f:
                version = np.lib.format.read_magic(f)
                shape, _, dtype = np.lib.format._read_array_header(f, version)
            shapes[name], dtypes[name] = tuple(shape), str(dtype)
        except Exception:  # header problems surface when the array is loaded
            pass
    return SourceState(path, "npz", LazyStateDict(loaders, shapes, dtypes))


_ST_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "bf16",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}


def read_safetensors(path):
    """safetensors parsed directly (8-byte header length, JSON header, raw little-endian data)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise CheckpointTruncatedError("%s: corrupt safetensors header (%s)" % (path, e))
    base = 8 + n
    meta = header.pop("__metadata__", None) or {}
    loaders, shapes, dtypes, bf16 = OrderedDict(), {}, {}, []
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        dt = _ST_DTYPES.get(info.get("dtype"))
        if dt is None:
            raise CheckpointFormatError("%s: tensor %s has unsupported dtype %s" % (path, name, info.get("dtype")))
        start, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if base + end > size:
            raise CheckpointTruncatedError(
                "%s is truncated: tensor %s ends at byte %d, file has %d" % (path, name, base + end, size)
            )
        itemsize = 2 if dt == "bf16" else np.dtype(dt).itemsize
        if end - start != int(np.prod(shape, dtype=np.int64)) * itemsize:
            raise CheckpointFormatError("%s: tensor %s byte range does not match shape %s" % (path, name, shape))

        def load(start=start, end=end, shape=shape, dt=dt):
            out = np.empty(end - start, np.uint8)
            with open(path, "rb") as g:
                g.seek(base + start)
                if g.readinto(memoryview(out)) != end - start:
                    raise CheckpointTruncatedError("%s is truncated" % path)
            if dt == "bf16":
                return (out.view("<u2").astype(np.uint32) << np.uint32(16)).view(np.float32).reshape(shape)
            return out.view(dt).reshape(shape)

        loaders[name] = load
        shapes[name] = shape
        dtypes[name] = "float32" if dt == "bf16" else str(np.dtype(dt))
        if dt == "bf16":
            bf16.append(name)
    kind = "mindspore" if meta.get("format") == "ms" else "safetensors"
    return SourceState(path, kind, LazyStateDict(loaders, shapes, dtypes), {"metadata": meta, "bfloat16": bf16})


def read_mindspore(path):
    """MindSpore ``.ckpt`` (round trip), streamed record by record; string entries (training metadata) skipped."""
    arrays = OrderedDict()
    try:
        for name, _, arr in iter_ckpt_records(path):
            arrays[name] = arr
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointTruncatedError("%s: corrupt MindSpore checkpoint (%s)" % (path, e))
    loaders = OrderedDict((n, (lambda a=a: a)) for n, a in arrays.items())
    return SourceState(path, "mindspore", LazyStateDict(loaders, {n: a.shape for n, a in arrays.items()}))


def _lazy_entry(t):
    return lambda: t.numpy()


def _flatten_tensors(obj, prefix, out, skipped, seen):
    """Collect LazyTensors from nested dicts / lists / placeholder objects (TorchScript modules) as dotted names."""
    if isinstance(obj, LazyTensor):
        out[prefix] = obj
        return
    if id(obj) in seen:
        return
    if isinstance(obj, Placeholder):
        seen.add(id(obj))
        state = obj.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):  # (dict, slots)
            state = state[0]
        if isinstance(state, dict):
            _flatten_tensors(state, prefix, out, skipped, seen)
        return
    if isinstance(obj, dict):
        seen.add(id(obj))
        for k, v in obj.items():
            if not isinstance(k, str):
                continue
            _flatten_tensors(v, prefix + "." + k if prefix else k, out, skipped, seen)
        return
    if prefix and not isinstance(obj, (list, tuple)):
        skipped.append(prefix)


def _state_from_lazy(path, kind, tensors, meta):
    loaders, shapes, dtypes, bf16 = OrderedDict(), {}, {}, []
    for name, t in tensors.items():
        loaders[name] = _lazy_entry(t)
        shapes[name] = t.shape
        dtypes[name] = "float32" if t.dtype == "bfloat16" else str(t.dtype)
        if t.dtype == "bfloat16":
            bf16.append(name)
    meta = dict(meta, bfloat16=bf16)
    return SourceState(path, kind, LazyStateDict(loaders, shapes, dtypes), meta)


_STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "module")


def read_torch(path, kind):
    """torch zip / legacy pickle / TorchScript -> SourceState (weights under ``state_dict`` for Lightning files)."""
    if kind == "torch-legacy":
        obj, info = load_torch_legacy(path)
    else:
        try:
            obj, info = load_torch_zip(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise CheckpointTruncatedError("%s: corrupt or truncated archive (%s)" % (path, e))
    meta = {"placeholders": sorted(info["placeholders"])}
    if kind == "torchscript":
        tensors, skipped = OrderedDict(), []
        _flatten_tensors(obj, "", tensors, skipped, set())
        meta["non_tensor"] = skipped
        if not tensors:
            raise CheckpointFormatError("%s: TorchScript archive without tensors" % path)
        return _state_from_lazy(path, kind, tensors, meta)
    if isinstance(obj, Placeholder):
        raise CheckpointFormatError(
            "%s holds a pickled Python object (%s), not a state_dict: in PyTorch re-save it with "
            "torch.save(model.state_dict(), path)" % (path, type(obj).qualified)
        )
    if not isinstance(obj, dict):
        raise CheckpointFormatError(
            "%s: expected a dict (state_dict or Lightning checkpoint), found %s" % (path, type(obj).__name__)
        )
    sd, sd_key = obj, None
    for k in _STATE_DICT_KEYS:
        if isinstance(obj.get(k), dict) and any(isinstance(v, LazyTensor) for v in obj[k].values()):
            sd, sd_key = obj[k], k
            break
    meta["container_keys"] = [str(k) for k in obj.keys()]
    meta["state_dict_key"] = sd_key
    tensors, skipped = OrderedDict(), []
    for k, v in sd.items():
        if isinstance(v, LazyTensor):
            tensors[str(k)] = v
        else:
            skipped.append(str(k))
    meta["non_tensor"] = skipped
    if not tensors:
        raise CheckpointFormatError(
            "%s: no tensors found (top-level keys: %s)" % (path, ", ".join(meta["container_keys"][:10]))
        )
    return _state_from_lazy(path, kind, tensors, meta)


def read_checkpoint(path):
    """Read any supported checkpoint (kind detected from content) into a :class:`SourceState`.

    Raises:
        CheckpointNotFoundError, CheckpointFormatError, CheckpointTruncatedError, UnsafePickleError
        (all subclasses of :class:`~mindcv_lseg.checkpoint.CheckpointError`, a ``ValueError``).
    """
    path = os.fspath(path)
    kind = detect_kind(path)
    if kind == "npz":
        return read_npz(path)
    if kind == "safetensors":
        return read_safetensors(path)
    if kind == "mindspore":
        return read_mindspore(path)
    return read_torch(path, kind)


def materialize(tensors):
    """Eagerly read every array of a mapping into an OrderedDict (for small files / tests)."""
    return OrderedDict((k, tensors[k]) for k in tensors)


__all__ += ["CheckpointError", "materialize", "read_npz", "read_safetensors", "read_torch", "read_mindspore"]
