"""Torch-free, code-free reading of PyTorch files (``torch.save`` zip / legacy pickles, TorchScript archives).

A PyTorch file is a pickle whose tensors are rebuilt by calling ``torch._utils._rebuild_tensor_v2`` on a storage
that the pickle names with a *persistent id* ``('storage', torch.HalfStorage, key, location, numel)``; the storage
bytes live in ``<archive>/data/<key>`` (zip format) or after the pickle (legacy format).

:class:`RestrictedUnpickler` resolves only an allow-list of globals, each to an inert local stand-in:

* tensor rebuild functions -> :class:`LazyTensor` (shape / stride / offset / dtype + storage reference; the bytes are
  read only when :meth:`LazyTensor.numpy` is called, one storage at a time);
* ``torch.*Storage`` types -> :class:`StorageType` (dtype only); ``torch.Size`` -> tuple; ``collections.OrderedDict``;
  a few pure builtins / ``_codecs.encode`` (bytes in protocol 2) / numpy array reconstruction / datetime.

Any other class becomes an inert :class:`Placeholder` subclass: instances can be created (``NEWOBJ``) and receive state
(``BUILD``) -- that is how Lightning callback objects or TorchScript modules (``__torch__.*``) are pickled -- but
*calling* it (``REDUCE``, i.e. a ``__reduce__`` to that callable) raises :class:`UnsafePickleError`, and globals from
modules that can execute code (``os``, ``subprocess``, ``builtins.eval`` ...) are refused as soon as they are named.
No code from the file is ever executed.
"""

import datetime
import io
import os
import pickle
import struct
import zipfile
import zlib
from collections import OrderedDict

import numpy as np

from ..checkpoint import CheckpointError, CheckpointFormatError, CheckpointTruncatedError

__all__ = [
    "UnsafePickleError",
    "LazyTensor",
    "Placeholder",
    "RestrictedUnpickler",
    "ZipStorageReader",
    "load_torch_zip",
    "load_torch_legacy",
    "is_torch_legacy",
]


class UnsafePickleError(CheckpointError):
    """The pickle tries to call / import something that is not needed to rebuild tensors."""


# ---- dtypes -----------------------------------------------------------------------------------------------------
BFLOAT16 = np.dtype([("bf16", "<u2")])  # marker; decoded to float32 by LazyTensor.numpy()

_STORAGE_DTYPES = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": BFLOAT16,
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}
_TORCH_DTYPES = {  # torch.<name> pickled as a global (e.g. in metadata or _rebuild_tensor_v3)
    "float64": "DoubleStorage",
    "double": "DoubleStorage",
    "float32": "FloatStorage",
    "float": "FloatStorage",
    "float16": "HalfStorage",
    "half": "HalfStorage",
    "bfloat16": "BFloat16Storage",
    "int64": "LongStorage",
    "long": "LongStorage",
    "int32": "IntStorage",
    "int": "IntStorage",
    "int16": "ShortStorage",
    "int8": "CharStorage",
    "uint8": "ByteStorage",
    "bool": "BoolStorage",
}


def bf16_to_f32(raw_u2):
    """bfloat16 bit patterns (uint16 array) -> float32 (exact: bf16 is the top half of a float32)."""
    return (raw_u2.astype(np.uint32) << np.uint32(16)).view(np.float32)


class StorageType:
    """Stand-in for ``torch.FloatStorage`` & co: only carries the numpy dtype."""

    def __init__(self, name):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]

    def __repr__(self):
        return "StorageType(%s)" % self.name


class StorageRef:
    """A storage named by a persistent id: ``key`` in the archive, dtype, number of elements."""

    def __init__(self, key, dtype, numel, loader):
        self.key, self.dtype, self.numel, self._loader = key, dtype, int(numel), loader

    def load(self):
        """1-D numpy array of the raw storage (bfloat16 as uint16 bit patterns)."""
        return self._loader(self)


class LazyTensor:
    """A tensor whose bytes are read from the archive on demand.

    Attributes: ``shape`` (tuple), ``dtype`` (numpy dtype; bfloat16 reported as ``"bfloat16"``), ``storage``,
    ``offset``/``stride`` in elements.
    """

    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset = storage, int(offset)
        self.shape, self.stride = tuple(int(s) for s in shape), tuple(int(s) for s in stride)

    @property
    def dtype(self):
        return "bfloat16" if self.storage.dtype is BFLOAT16 else self.storage.dtype

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    def numpy(self):
        """Materialise as a C-contiguous numpy array (bfloat16 decoded exactly to float32).

        Tensors that cover their whole storage contiguously are returned without a copy; views (offset / strides)
        are copied out of the storage so the (possibly larger) storage buffer is released.
        """
        raw = self.storage.load()
        itemsize = raw.dtype.itemsize
        need = self.offset + (sum((n - 1) * s for n, s in zip(self.shape, self.stride)) + 1 if self.size else 0)
        if need > raw.size:
            raise CheckpointTruncatedError(
                "tensor view (offset %d, shape %s, stride %s) exceeds its storage '%s' "
                "of %d elements: corrupt file" % (self.offset, self.shape, self.stride, self.storage.key, raw.size)
            )
        contiguous = _contiguous_strides(self.shape)
        if self.offset == 0 and self.stride == contiguous and self.size == raw.size:
            arr = raw.reshape(self.shape)
        elif self.size == 0:
            arr = np.empty(self.shape, raw.dtype)
        else:
            view = np.lib.stride_tricks.as_strided(
                raw[self.offset :], shape=self.shape, strides=tuple(s * itemsize for s in self.stride), writeable=False
            )
            arr = np.ascontiguousarray(view)
        if self.storage.dtype is BFLOAT16:
            arr = bf16_to_f32(arr)
        return arr

    def __repr__(self):
        return "LazyTensor(shape=%s, dtype=%s)" % (self.shape, self.dtype)


def _contiguous_strides(shape):
    strides, acc = [], 1
    for n in reversed(shape):
        strides.append(acc)
        acc *= max(int(n), 1)
    return tuple(reversed(strides))


# ---- inert stand-ins for unknown classes --------------------------------------------------------------------------
class _PlaceholderMeta(type):
    def __call__(cls, *args, **kwargs):
        raise UnsafePickleError(
            "refusing to load: the pickle calls %s(...) (a __reduce__ to a function that is not needed to rebuild "
            "tensors). The file may contain code; it was not executed." % cls.qualified
        )

    def __repr__(cls):
        return "<placeholder class %s>" % cls.qualified


class Placeholder(metaclass=_PlaceholderMeta):
    """Inert instance of an unknown class from the pickle (e.g. a Lightning callback). Holds its state only."""

    qualified = "?"

    def __new__(cls, *args, **kwargs):  # NEWOBJ path: no code of the original class runs
        obj = object.__new__(cls)
        obj.__dict__["_pickle_args"] = args
        return obj

    def __setstate__(self, state):
        self.__dict__["_pickle_state"] = state

    def __setitem__(self, key, value):  # SETITEM(S) on dict subclasses
        self.__dict__.setdefault("_pickle_items", OrderedDict())[key] = value

    def append(self, value):  # APPEND(S) on list subclasses
        self.__dict__.setdefault("_pickle_items", []).append(value)

    def extend(self, values):
        for v in values:
            self.append(v)

    @property
    def state(self):
        return self.__dict__.get("_pickle_state")

    def __repr__(self):
        return "<placeholder %s>" % type(self).qualified


def _placeholder_class(module, name):
    qual = "%s.%s" % (module, name)
    return _PlaceholderMeta(name, (Placeholder,), {"qualified": qual, "__module__": "placeholder"})


# ---- the restricted unpickler -------------------------------------------------------------------------------------
_DANGEROUS_MODULES = {
    "os",
    "posix",
    "nt",
    "posixpath",
    "ntpath",
    "subprocess",
    "sys",
    "shutil",
    "importlib",
    "imp",
    "socket",
    "runpy",
    "code",
    "codeop",
    "pty",
    "commands",
    "ctypes",
    "pickle",
    "_pickle",
    "cPickle",
    "marshal",
    "types",
    "functools",
    "operator",
    "webbrowser",
    "multiprocessing",
    "asyncio",
    "threading",
    "_thread",
    "signal",
    "tempfile",
    "pathlib",
    "io",
    "_io",
    "glob",
    "inspect",
    "pdb",
    "timeit",
    "trace",
    "urllib",
    "http",
    "ftplib",
    "smtplib",
    "telnetlib",
    "requests",
    "shelve",
    "dbm",
    "sqlite3",
    "zipimport",
    "pkgutil",
    "site",
    "distutils",
    "setuptools",
    "pip",
    "torch.hub",
    "torch.package",
    "torch.serialization",
    "torch.jit",
    "torch._C",
    "torch.utils.cpp_extension",
    "numpy.lib",
    "numpy.testing",
    "numpy.f2py",
    "numpy.distutils",
    "builtins",
    "__builtin__",
    "copyreg",
    "copy_reg",
    "_codecs",
    "codecs",
    "weakref",
    "gc",
    "atexit",
    "ast",
    "compileall",
    "py_compile",
}
_SAFE_BUILTINS = {
    "set": set,
    "frozenset": frozenset,
    "bytearray": bytearray,
    "complex": complex,
    "slice": slice,
    "range": range,
    "list": list,
    "dict": dict,
    "tuple": tuple,
    "int": int,
    "float": float,
    "bool": bool,
    "str": str,
    "bytes": bytes,
    "object": object,
}


def _codecs_encode(text, encoding="utf-8"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
        raise UnsafePickleError(
            "refusing to load: unexpected _codecs.encode(%r, %r) in the pickle" % (type(text).__name__, encoding)
        )
    return text.encode(encoding)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, StorageRef):
        raise CheckpointFormatError("tensor rebuild without a storage (got %s): unsupported file" % type(storage))
    return LazyTensor(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype=None, metadata=None):
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    if func not in _ALLOWED_FUNCS:
        raise UnsafePickleError("refusing to load: _rebuild_from_type_v2 with a non-tensor function %r" % (func,))
    return func(*args)


def _torch_size(*args):
    return tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else tuple(args)


def _torch_device(*args):
    return str(args[0]) if args else "cpu"


def _numpy_reconstruct(subtype, shape, dtype):
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _numpy_scalar(dtype, data=None):
    return np.frombuffer(data, dtype=dtype, count=1)[0] if data is not None else dtype.type()


def _identity(value):
    return value


def _restore_type_tag(value, type_str=None):
    return value


_ALLOWED_FUNCS = {
    _rebuild_tensor_v2,
    _rebuild_tensor,
    _rebuild_tensor_v3,
    _rebuild_parameter,
    _rebuild_parameter_with_state,
}

_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Size"): _torch_size,
    ("torch", "device"): _torch_device,
    ("_codecs", "encode"): _codecs_encode,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _n in ("build_intlist", "build_doublelist", "build_boollist", "build_tensorlist", "build_genericlist"):
    _ALLOWED_GLOBALS[("torch.jit._pickle", _n)] = _identity  # TorchScript typed-list markers
_ALLOWED_GLOBALS[("torch.jit._pickle", "restore_type_tag")] = _restore_type_tag
for _n in _STORAGE_DTYPES:
    _ALLOWED_GLOBALS[("torch", _n)] = StorageType(_n)
    _ALLOWED_GLOBALS[("torch.cuda", _n)] = StorageType(_n)  # files saved from GPU by older torch (e.g. demo_e200)
for _n, _s in _TORCH_DTYPES.items():
    _ALLOWED_GLOBALS[("torch", _n)] = StorageType(_s)
for _n, _v in _SAFE_BUILTINS.items():
    _ALLOWED_GLOBALS[("builtins", _n)] = _v
    _ALLOWED_GLOBALS[("__builtin__", _n)] = _v
for _n in ("datetime", "date", "time", "timedelta", "timezone"):  # datetime objects are pure data
    _ALLOWED_GLOBALS[("datetime", _n)] = getattr(datetime, _n)


def _is_dangerous(module):
    root = module.split(".")
    return any(".".join(root[:i]) in _DANGEROUS_MODULES for i in range(1, len(root) + 1))


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that materialises only tensor-rebuild globals (see module docstring).

    Args:
        file: binary file object positioned at the pickle.
        storage_loader: ``callable(StorageRef) -> np.ndarray`` reading a storage's bytes.
        source: file name for error messages.
    """

    def __init__(self, file, storage_loader, source="<pickle>"):
        super().__init__(file)
        self._storage_loader = storage_loader
        self._source = source
        self.storages = OrderedDict()  # key -> StorageRef (in order of first use)
        self.placeholders = set()

    def find_class(self, module, name):
        key = (module, name)
        if key in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[key]
        if _is_dangerous(module):
            raise UnsafePickleError(
                "refusing to load %s: its pickle references %s.%s, which could execute code. Only tensors and plain "
                "containers are loaded; nothing from the file was executed." % (self._source, module, name)
            )
        self.placeholders.add("%s.%s" % key)
        return _placeholder_class(module, name)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointFormatError(
                "%s: unsupported persistent id in the pickle: %r"
                % (self._source, pid[:2] if isinstance(pid, tuple) else type(pid))
            )
        stype, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(stype, StorageType):
            raise CheckpointFormatError(
                "%s: unsupported storage type %r (only float/half/bfloat16/int/bool "
                "storages are supported)" % (self._source, stype)
            )
        ref = self.storages.get(key)
        if ref is None:
            ref = StorageRef(key, stype.dtype, numel, self._storage_loader)
            self.storages[key] = ref
        return ref


# ---- zip archives (torch.save >= 1.6, TorchScript) ----------------------------------------------------------------
class ZipStorageReader:
    """Reads ``<prefix>/data/<key>`` members of a zip one at a time into fresh numpy buffers (CRC checked)."""

    def __init__(self, path, zf, prefix):
        self.path, self.zf, self.prefix = path, zf, prefix
        self._cache_key, self._cache = None, None

    def __call__(self, ref):
        if self._cache_key == ref.key:
            return self._cache
        name = "%sdata/%s" % (self.prefix, ref.key)
        try:
            info = self.zf.getinfo(name)
        except KeyError:
            raise CheckpointTruncatedError(
                "%s: storage '%s' is missing from the archive (truncated or corrupt file)" % (self.path, name)
            )
        arr = read_zip_member(self.path, self.zf, info)
        itemsize = ref.dtype.itemsize if ref.dtype is not BFLOAT16 else 2
        if arr.size % itemsize:
            raise CheckpointTruncatedError(
                "%s: storage %s has %d bytes, not a multiple of %d" % (self.path, name, arr.size, itemsize)
            )
        out = arr.view(np.uint16 if ref.dtype is BFLOAT16 else ref.dtype)
        self._cache_key, self._cache = ref.key, out
        return out


def read_zip_member(path, zf, info):
    """Bytes of one zip member as a writable uint8 numpy array, CRC-verified (one copy, no temporaries)."""
    out = np.empty(info.file_size, dtype=np.uint8)
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            hdr = f.read(30)
            if len(hdr) < 30 or hdr[:4] != b"PK\x03\x04":
                raise CheckpointTruncatedError("%s: corrupt zip entry %s" % (path, info.filename))
            n, m = struct.unpack("<HH", hdr[26:30])
            f.seek(info.header_offset + 30 + n + m)
            got = f.readinto(memoryview(out))
    else:
        try:
            with zf.open(info) as f:
                got = f.readinto(memoryview(out))
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise CheckpointTruncatedError("%s: corrupt zip entry %s (%s)" % (path, info.filename, e))
    if got != info.file_size:
        raise CheckpointTruncatedError(
            "%s: zip entry %s is truncated (%d of %d bytes)" % (path, info.filename, got, info.file_size)
        )
    if zlib.crc32(out) & 0xFFFFFFFF != info.CRC:
        raise CheckpointTruncatedError(
            "%s: zip entry %s fails its CRC check (corrupt download?)" % (path, info.filename)
        )
    return out


def zip_prefix(names, leaf="data.pkl"):
    """The ``<folder>/`` holding ``data.pkl`` in a torch zip (any folder name), or None."""
    cands = [n[: -len(leaf)] for n in names if n.endswith("/" + leaf) and n.count("/") == 1]
    if not cands and leaf in names:
        return ""
    return cands[0] if cands else None


def load_torch_zip(path, zf=None):
    """Unpickle ``<prefix>/data.pkl`` of a torch zip archive with lazy tensors.

    Returns:
        (object, info): the unpickled object (dicts / lists / :class:`LazyTensor` / placeholders) and a dict with
        ``placeholders`` (set of unknown class names seen) and ``torchscript`` (bool).
    """
    own = zf is None
    if own:
        zf = zipfile.ZipFile(path)
    names = zf.namelist()
    prefix = zip_prefix(names)
    if prefix is None:
        raise CheckpointFormatError("%s is a zip archive without data.pkl: not a PyTorch checkpoint" % path)
    torchscript = any(n.startswith(prefix + "code/") for n in names) or (prefix + "constants.pkl") in names
    reader = ZipStorageReader(path, zf, prefix)
    pkl = read_zip_member(path, zf, zf.getinfo(prefix + "data.pkl")).tobytes()
    up = RestrictedUnpickler(io.BytesIO(pkl), reader, path)
    try:
        obj = up.load()
    except CheckpointError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        struct.error,
    ) as e:
        raise CheckpointTruncatedError("%s: corrupt pickle in data.pkl (%s: %s)" % (path, type(e).__name__, e))
    return obj, {"placeholders": up.placeholders, "torchscript": torchscript, "zipfile": zf}


# ---- legacy (pre-1.6, non-zip) torch.save format ------------------------------------------------------------------
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def is_torch_legacy(head):
    """True if ``head`` (first bytes of a file) starts the legacy torch.save format (pickled magic number)."""
    return head[:1] == b"\x80" and head[2:4] == b"\x8a\x0a" and int.from_bytes(head[4:14], "little") == _LEGACY_MAGIC


def load_torch_legacy(path):
    """Read a legacy torch.save file: 3 header pickles, the object pickle, the storage key list, then storages
    (each: int64 element count + raw bytes), in key-list order. Storages are located first, then read lazily."""
    size = os.path.getsize(path)
    offsets = {}

    def loader(ref):
        if ref.key not in offsets:
            raise CheckpointTruncatedError("%s: storage %s not found (truncated file)" % (path, ref.key))
        off, nbytes = offsets[ref.key]
        out = np.empty(nbytes, np.uint8)
        with open(path, "rb") as g:
            g.seek(off)
            if g.readinto(memoryview(out)) != nbytes:
                raise CheckpointTruncatedError("%s: storage %s is truncated" % (path, ref.key))
        return out.view(np.uint16 if ref.dtype is BFLOAT16 else ref.dtype)

    with open(path, "rb") as f:
        try:
            if RestrictedUnpickler(f, None, path).load() != _LEGACY_MAGIC:
                raise CheckpointFormatError("%s: not a legacy torch file" % path)
            RestrictedUnpickler(f, None, path).load()  # protocol version
            RestrictedUnpickler(f, None, path).load()  # sys_info
            up = RestrictedUnpickler(f, loader, path)
            obj = up.load()
            keys = RestrictedUnpickler(f, None, path).load()
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointTruncatedError(
                "%s: corrupt or truncated legacy torch file (%s: %s)" % (path, type(e).__name__, e)
            )
        pos = f.tell()
    for key in keys:
        ref = up.storages.get(str(key))
        if ref is None:
            raise CheckpointFormatError("%s: storage %s listed but unused" % (path, key))
        itemsize = 2 if ref.dtype is BFLOAT16 else ref.dtype.itemsize
        with open(path, "rb") as g:
            g.seek(pos)
            n = g.read(8)
        if len(n) < 8:
            raise CheckpointTruncatedError("%s is truncated (storage %s missing)" % (path, key))
        numel = int.from_bytes(n, "little")
        nbytes = numel * itemsize
        if pos + 8 + nbytes > size:
            raise CheckpointTruncatedError(
                "%s is truncated: storage %s needs %d bytes beyond the end of the file"
                % (path, key, pos + 8 + nbytes - size)
            )
        offsets[str(key)] = (pos + 8, nbytes)
        pos += 8 + nbytes
    return obj, {"placeholders": up.placeholders, "torchscript": False}
