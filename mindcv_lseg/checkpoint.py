"""Checkpoint I/O for mindcv-lseg: atomic saving, checked loading, strict loading into a network.

* :func:`save_checkpoint_atomic` writes a MindSpore ``.ckpt`` (or ``.safetensors``) through a temp file in the
  destination directory, fsyncs it and ``os.replace``-s it into place, so the destination is either the old file or
  the complete new one -- never half-written.  The final file is ``0644`` (MindSpore itself leaves ``0400``).
* :func:`load_checkpoint_checked` loads a MindSpore checkpoint and turns "file missing", "not a checkpoint" and
  "truncated" into specific :class:`CheckpointError` messages instead of MindSpore's generic ones.
* :func:`load_into_net` loads a checkpoint of this project into a network and refuses (strict) with the list of
  missing / unexpected / mis-shaped parameters.
"""
import os
import tempfile
from collections import OrderedDict

import numpy as np

__all__ = [
    "CheckpointError",
    "CheckpointNotFoundError",
    "CheckpointFormatError",
    "CheckpointTruncatedError",
    "CheckpointMismatchError",
    "save_checkpoint_atomic",
    "load_checkpoint_checked",
    "load_into_net",
    "sniff_mindspore_format",
]


class CheckpointError(ValueError):
    """Base class of all checkpoint errors raised by mindcv-lseg (a ``ValueError``)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint path does not exist (also a ``FileNotFoundError``)."""


class CheckpointFormatError(CheckpointError):
    """The file exists but is not a checkpoint in a supported format."""


class CheckpointTruncatedError(CheckpointError):
    """The file starts like a checkpoint but ends early or is corrupt (e.g. an interrupted download)."""


class CheckpointMismatchError(CheckpointError):
    """Checkpoint parameters do not match the network (missing / unexpected / mis-shaped)."""


# ----------------------------------------------------------------------------------------------------------------
# saving
# ----------------------------------------------------------------------------------------------------------------
def _to_save_list(obj):
    """Normalise ``obj`` (Cell, list of {"name","data"}, dict name->array/Tensor) to what mindspore accepts."""
    import mindspore as ms

    if isinstance(obj, ms.nn.Cell):
        return obj
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = []
        for entry in obj:
            if isinstance(entry, ms.Parameter):
                items.append((entry.name, entry))
            else:
                items.append((entry["name"], entry["data"]))
    else:
        raise TypeError("save_checkpoint_atomic: obj must be a Cell, a list of {'name','data'} or a dict, got %s"
                        % type(obj).__name__)
    out = []
    for name, data in items:
        if isinstance(data, np.ndarray):
            # zero-copy view for C-contiguous arrays (mindspore copies per tensor while writing)
            data = ms.Tensor.from_numpy(np.ascontiguousarray(data)) if data.ndim else ms.Tensor(data)
        elif not isinstance(data, (ms.Tensor, ms.Parameter)):
            data = ms.Tensor(np.asarray(data))
        out.append({"name": name, "data": data})
    return out


def _fsync_path(path, directory=False):
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint_atomic(obj, path, append_dict=None, format=None):
    """Save ``obj`` as a MindSpore checkpoint at ``path`` atomically.

    Args:
        obj: an ``nn.Cell``, a list of ``{"name": str, "data": Tensor|Parameter|np.ndarray}`` or a dict
            ``name -> np.ndarray | Tensor``.
        path: destination file (``.ckpt``; ``.safetensors`` selects the safetensors format).
        append_dict: extra scalars/strings stored beside the weights (``ckpt`` format only), e.g. ``{"epoch": 3}``.
        format: ``"ckpt"`` or ``"safetensors"``; default from the extension of ``path``.

    The data is written to a temp file in the same directory, fsync-ed, made ``0644`` and renamed over ``path``.
    On any error the temp files are removed and ``path`` is left untouched.
    """
    import mindspore as ms

    path = os.path.abspath(os.fspath(path))
    if format is None:
        format = "safetensors" if path.endswith(".safetensors") else "ckpt"
    if format not in ("ckpt", "safetensors"):
        raise ValueError("format must be 'ckpt' or 'safetensors', got %r" % (format,))
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise CheckpointError("cannot write %s: directory %s does not exist" % (path, directory))
    save_obj = _to_save_list(obj)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp." + format, dir=directory)
    os.close(fd)
    # mindspore writes "<stem>.tmp" first and renames it to the name we give: clean both on failure
    ms_tmp = os.path.splitext(tmp)[0] + ".tmp"
    try:
        kwargs = {"format": format} if format != "ckpt" else {}
        ms.save_checkpoint(save_obj, tmp, append_dict=append_dict, **kwargs)
        os.chmod(tmp, 0o644)
        _fsync_path(tmp)
        os.replace(tmp, path)
        _fsync_path(directory, directory=True)
    except BaseException as e:
        for p in (tmp, ms_tmp):
            if os.path.exists(p):
                try:
                    os.chmod(p, 0o600)
                    os.remove(p)
                except OSError:
                    pass
        if isinstance(e, Exception) and not isinstance(e, (CheckpointError, MemoryError)):
            # name the user's destination, not our temp file (MindSpore's messages quote the path it was given)
            reason = (e.strerror if isinstance(e, OSError) and e.strerror else str(e)).replace(tmp, path)
            raise CheckpointError(f"cannot write checkpoint {path}: {reason.replace(ms_tmp, path)}") from None
        raise
    return path


# ----------------------------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------------------------
def _read_varint(f):
    """Read one protobuf varint from a binary file; None at EOF / invalid."""
    shift, value = 0, 0
    for _ in range(10):
        b = f.read(1)
        if not b:
            return None
        value |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return value
        shift += 7
    return None


def check_file(path, what="checkpoint"):
    """The size of ``path`` after checking it is an existing, non-empty regular file.

    Raises:
        CheckpointNotFoundError (missing), CheckpointFormatError (a directory), CheckpointTruncatedError (empty).
    """
    if not os.path.exists(path):
        raise CheckpointNotFoundError("%s file not found: %s" % (what, path))
    if os.path.isdir(path):
        raise CheckpointFormatError("%s is a directory, not a checkpoint file" % path)
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointTruncatedError("%s file %s is empty (0 bytes): an interrupted download or save?" % (what, path))
    return size


def sniff_mindspore_format(path):
    """Classify a file as ``"ckpt"``, ``"safetensors"`` or raise a specific error.

    A MindSpore ``.ckpt`` is a sequence of protobuf records ``0x0a <varint length> <payload>`` (plus an optional
    ``crc_num`` trailer); a safetensors file starts with an 8-byte little-endian header size and a JSON header.
    Only record framing is walked (seek, no payload read), so this is cheap even for GB files.

    Raises:
        CheckpointNotFoundError, CheckpointFormatError, CheckpointTruncatedError
    """
    path = os.fspath(path)
    size = check_file(path)
    with open(path, "rb") as f:
        head = f.read(16)
        if len(head) >= 9 and head[8:9] == b"{":
            n = int.from_bytes(head[:8], "little")
            if 8 + n > size:
                raise CheckpointTruncatedError("safetensors file %s is truncated: header says %d bytes, file has %d"
                                               % (path, 8 + n, size))
            return "safetensors"
        if head[:1] != b"\x0a":
            raise CheckpointFormatError(
                "%s is not a MindSpore checkpoint (.ckpt protobuf or .safetensors); for PyTorch / CLIP / timm / npz "
                "weights run tools/convert.py first" % path)
        f.seek(0)
        pos = 0
        while pos < size:
            tag = f.read(1)
            if tag != b"\x0a":
                f.seek(pos)
                if f.read(7) == b"crc_num" and size - pos == 17:
                    return "ckpt"
                raise CheckpointTruncatedError("checkpoint file %s is corrupt at byte %d of %d" % (path, pos, size))
            n = _read_varint(f)
            if n is None:
                raise CheckpointTruncatedError("checkpoint file %s is truncated at byte %d of %d" % (path, pos, size))
            end = f.tell() + n
            if end > size:
                raise CheckpointTruncatedError(
                    "checkpoint file %s is truncated: a record ends at byte %d but the file has only %d bytes "
                    "(interrupted download or save?)" % (path, end, size))
            f.seek(end)
            pos = end
    return "ckpt"


def load_checkpoint_checked(path, format=None, **kwargs):
    """``mindspore.load_checkpoint`` with specific errors.

    Args:
        path: a MindSpore ``.ckpt`` or ``.safetensors`` file (kind detected from the content).
        format: force ``"ckpt"`` / ``"safetensors"``; default: detected.
        kwargs: passed to ``mindspore.load_checkpoint`` (e.g. ``choice_func``).

    Returns:
        dict name -> ``mindspore.Parameter``.

    Raises:
        CheckpointNotFoundError, CheckpointFormatError, CheckpointTruncatedError (all ``ValueError``).
    """
    import mindspore as ms

    kind = sniff_mindspore_format(path)
    if format is not None and format != kind:
        raise CheckpointFormatError("%s is a %s file, not %s" % (path, kind, format))
    try:
        return ms.load_checkpoint(os.fspath(path), format=kind, **kwargs)
    except Exception as e:  # mindspore's message is generic; keep it for context
        raise CheckpointTruncatedError("failed to read checkpoint %s (corrupt or truncated %s file): %s"
                                       % (path, kind, str(e).splitlines()[0] if str(e) else type(e).__name__)) from e


def _fmt_list(title, items, limit=20):
    items = list(items)
    if not items:
        return ""
    lines = ["%s (%d):" % (title, len(items))] + ["  " + s for s in items[:limit]]
    if len(items) > limit:
        lines.append("  ... and %d more" % (len(items) - limit))
    return "\n".join(lines)


def format_mismatch(missing=(), unexpected=(), mismatched=(), header="checkpoint does not match the network"):
    """Readable multi-line message; ``mismatched`` items are ``(name, ckpt_shape, net_shape)``."""
    parts = [header]
    parts.append(_fmt_list("missing (in the network, not in the checkpoint)", missing))
    parts.append(_fmt_list("unexpected (in the checkpoint, not in the network)", unexpected))
    parts.append(_fmt_list("shape mismatch (name: checkpoint shape vs network shape)",
                           ["%s: %s vs %s" % (n, tuple(a), tuple(b)) for n, a, b in mismatched]))
    return "\n".join(p for p in parts if p)


_CKPT_NP_TYPES = {"Int8": np.int8, "UInt8": np.uint8, "Int16": np.int16, "UInt16": np.uint16, "Int32": np.int32,
                  "UInt32": np.uint32, "Int64": np.int64, "UInt64": np.uint64, "Float16": np.float16,
                  "Float32": np.float32, "Float64": np.float64, "Bool": np.bool_, "BFloat16": "bfloat16"}


def iter_ckpt_records(path, with_data=True):
    """Stream a MindSpore ``.ckpt`` tensor by tensor: yields ``(name, shape, array_or_None)``.

    Unlike ``mindspore.load_checkpoint`` (which reads and parses the whole file at once, ~3x its size in RAM), this
    walks the protobuf records one at a time, so loading needs about one tensor of extra memory. Tensors that
    MindSpore split over several records (> 512 MB) are joined; string entries (``append_dict``) are skipped.
    """
    from mindspore.train.checkpoint_pb2 import Checkpoint

    sniff_mindspore_format(path)
    size = os.path.getsize(path)
    pending = None  # (tag, dims, dtype, [chunks])

    def finish(p):
        tag, dims, ttype, chunks = p
        shape = tuple(int(d) for d in dims)
        if shape == (0,):
            shape = ()
        if not with_data:
            return tag, shape, None
        raw = b"".join(chunks) if len(chunks) > 1 else chunks[0]
        npt = _CKPT_NP_TYPES[ttype]
        if npt == "bfloat16":
            arr = (np.frombuffer(raw, "<u2").astype(np.uint32) << np.uint32(16)).view(np.float32)
        else:
            arr = np.frombuffer(raw, npt)
        return tag, shape, arr.reshape(shape)

    with open(path, "rb") as f:
        while f.tell() < size:
            start = f.tell()
            if f.read(1) != b"\x0a":  # crc trailer (validated by sniff)
                break
            n = _read_varint(f)
            body = f.read(n)
            if n is None or len(body) != n:
                raise CheckpointTruncatedError("checkpoint file %s is truncated at byte %d" % (path, start))
            msg = Checkpoint.FromString(b"\x0a" + _encode_varint(n) + body)
            del body
            for value in msg.value:
                if not value.HasField("tensor"):
                    raise CheckpointFormatError("%s: map parameters are not supported (%s)" % (path, value.tag))
                t = value.tensor
                if t.tensor_type == "str":
                    continue
                if t.tensor_type not in _CKPT_NP_TYPES:
                    raise CheckpointFormatError("%s: unsupported tensor type %s for %s" % (path, t.tensor_type,
                                                                                          value.tag))
                if pending is not None and pending[0] == value.tag:
                    pending[3].append(t.tensor_content if with_data else b"")
                    continue
                if pending is not None:
                    yield finish(pending)
                pending = (value.tag, list(t.dims), t.tensor_type, [t.tensor_content if with_data else b""])
            del msg
    if pending is not None:
        yield finish(pending)


def _encode_varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _iter_checkpoint(path, kind, with_data=True):
    if kind == "ckpt":
        yield from iter_ckpt_records(path, with_data)
        return
    from safetensors import safe_open

    with safe_open(path, framework="np") as f:
        for name in f.keys():
            if with_data:
                arr = f.get_tensor(name)
                yield name, tuple(arr.shape), arr
            else:
                yield name, tuple(f.get_slice(name).get_shape()), None


_NOT_PARAMS = ("epoch", "step", "global_step", "epoch_num", "step_num", "cur_epoch_num", "cur_step_num",
               "learning_rate", "loss_scale")
_OPTIMIZER_PREFIXES = ("moments.", "adam_", "accum.", "stat.", "global_step", "scale_sense", "learning_rate",
                       "beta1_power", "beta2_power")


def load_into_net(net, path, strict=True, ignore=_NOT_PARAMS):
    """Load a MindSpore ``.ckpt``/``.safetensors`` of this project into ``net``, tensor by tensor.

    The file is checked first (names and shapes, no data kept), then streamed into the parameters one tensor at a
    time, so peak memory is the network plus one tensor (``mindspore.load_checkpoint`` would hold ~3x the file).

    Args:
        net: ``nn.Cell``.
        path: checkpoint path (kind detected from the content).
        strict: if True, any missing / unexpected / mis-shaped parameter raises :class:`CheckpointMismatchError`
            before anything is loaded; if False, only mis-shaped ones raise and the others are returned.
        ignore: checkpoint entries that are not parameters (``append_dict`` scalars); optimizer state
            (``moments.*``, ``adam_m.*``, ``learning_rate``, ...) and any name outside the network's top-level
            cells (``encoder.``, ``scratch.``, ``clip_text.``, ...) are not counted as unexpected either.

    Returns:
        (missing, unexpected): lists of parameter names (both empty when strict).
    """
    import mindspore as ms

    kind = sniff_mindspore_format(path)
    net_params = OrderedDict((p.name, p) for _, p in net.parameters_and_names())
    try:
        shapes = OrderedDict((n, s) for n, s, _ in _iter_checkpoint(path, kind, with_data=False))
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointTruncatedError("failed to read checkpoint %s (corrupt %s file): %s" % (path, kind, e)) from e
    missing = [n for n in net_params if n not in shapes]
    # network-like names this net lacks are unexpected; training state (epoch, moments.*, adam_m.*, ...) is not
    cell_prefixes = tuple("%s." % n for n, _ in net.name_cells().items()) or ("",)
    unexpected = [n for n in shapes if n not in net_params and n not in ignore
                  and not n.startswith(_OPTIMIZER_PREFIXES) and n.startswith(cell_prefixes)]
    mismatched = [(n, shapes[n], tuple(p.shape)) for n, p in net_params.items()
                  if n in shapes and tuple(shapes[n]) != tuple(p.shape)]
    if mismatched or (strict and (missing or unexpected)):
        raise CheckpointMismatchError(format_mismatch(
            missing, unexpected, mismatched,
            header="checkpoint %s does not match the network %s (wrong model variant or not converted?)"
                   % (path, type(net).__name__)))
    for name, _, arr in _iter_checkpoint(path, kind):
        p = net_params.get(name)
        if p is None:
            continue
        want = ms.dtype_to_nptype(p.dtype)
        if arr.dtype != want:
            arr = arr.astype(want)
        p.set_data(ms.Tensor(arr))
        del arr
    return missing, unexpected
