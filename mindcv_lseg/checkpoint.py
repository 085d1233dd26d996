"""Checkpoint I/O for mindcv-lseg: atomic saving, checked loading, strict loading into a network.

* :func:`save_checkpoint_atomic` writes a MindSpore ``.ckpt`` (or ``.safetensors``) through a temp file in the
  destination directory, fsyncs it and ``os.replace``-s it into place, so the destination is either the old file or
  the complete new one -- never half-written.  The final file is ``0644`` (MindSpore itself leaves ``0400``).
* :func:`load_checkpoint_checked` loads a MindSpore checkpoint and turns "file missing", "not a checkpoint" and
  "truncated" into specific :class:`CheckpointError` messages instead of MindSpore's generic ones.
* :func:`match_state` compares a checkpoint's names and shapes with a network's (missing / unexpected /
  mis-shaped): the one implementation behind loading, converting and resuming.
* :func:`load_into_net` loads a checkpoint of this project into a network and refuses (strict) with the list of
  missing / unexpected / mis-shaped parameters.
"""

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .fileio import atomic_save

__all__ = [
    "PARTS",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CheckpointFormatError",
    "CheckpointTruncatedError",
    "CheckpointMismatchError",
    "StateMismatch",
    "match_state",
    "net_shapes",
    "save_checkpoint_atomic",
    "load_checkpoint_checked",
    "load_into_net",
    "sniff_mindspore_format",
]


#: the parts of an LSeg network, by parameter-name prefix (converting or loading one part, e.g. ``--part image``)
PARTS = {"image": "encoder.", "text": "clip_text.", "decoder": "scratch."}


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
        raise TypeError(
            "save_checkpoint_atomic: obj must be a Cell, a list of {'name','data'} or a dict, got %s"
            % type(obj).__name__
        )
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

    The data is written to a temp file in the same directory (:func:`mindcv_lseg.fileio.atomic_save`), fsync-ed,
    made ``0644`` and renamed over ``path``. On any error the temp files are removed and ``path`` is left untouched.
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
    kwargs = {"format": format} if format != "ckpt" else {}

    def write(tmp):
        side = os.path.splitext(tmp)[0] + ".tmp"  # MindSpore writes "<stem>.tmp" first, then renames it to ``tmp``
        try:
            ms.save_checkpoint(save_obj, tmp, append_dict=append_dict, **kwargs)
        except (RuntimeError, ValueError, TypeError) as e:  # its messages quote the temp path: name the user's
            reason = str(e).replace(side, path).replace(tmp, path)
            raise CheckpointError(f"cannot write checkpoint {path}: {reason}") from None
        finally:
            if os.path.exists(side):
                os.remove(side)
        os.chmod(tmp, 0o644)  # MindSpore leaves 0400
        _fsync_path(tmp)

    atomic_save(write, path)
    _fsync_path(directory, directory=True)
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
                raise CheckpointTruncatedError(
                    "safetensors file %s is truncated: header says %d bytes, file has %d" % (path, 8 + n, size)
                )
            return "safetensors"
        if head[:1] != b"\x0a":
            raise CheckpointFormatError(
                "%s is not a MindSpore checkpoint (.ckpt protobuf or .safetensors); for PyTorch / CLIP / timm / npz "
                "weights run tools/convert.py first" % path
            )
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
                    "(interrupted download or save?)" % (path, end, size)
                )
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
        raise CheckpointTruncatedError(
            "failed to read checkpoint %s (corrupt or truncated %s file): %s"
            % (path, kind, str(e).splitlines()[0] if str(e) else type(e).__name__)
        ) from e


@dataclass
class StateMismatch:
    """How a checkpoint's tensors differ from a network's parameters (all empty: they match).

    ``mismatched`` items are ``(name, checkpoint shape, network shape)``.
    """

    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)

    def message(self, header: str, label: Optional[Callable[[str], str]] = None, limit: int = 20) -> str:
        """``header`` and one block per kind of problem; ``label`` renders a name (e.g. with its source key)."""
        label = label or str
        lines = [header]

        def block(title, items):
            if items:
                lines.append(f"{title} ({len(items)}):")
                lines.extend(f"  {item}" for item in items[:limit])
                if len(items) > limit:
                    lines.append(f"  ... and {len(items) - limit} more")

        block("missing (in the network, not in the checkpoint)", [label(n) for n in self.missing])
        block("unexpected (in the checkpoint, not in the network)", [label(n) for n in self.unexpected])
        block(
            "shape mismatch (name: checkpoint shape vs network shape)",
            [f"{label(n)}: {tuple(a)} vs {tuple(b)}" for n, a, b in self.mismatched],
        )
        return "\n".join(lines)


def match_state(
    ckpt: Mapping[str, tuple],
    net: Mapping[str, tuple],
    required: Sequence[str] = ("",),
    scope: Optional[Sequence[str]] = None,
) -> StateMismatch:
    """Compare checkpoint tensors (name -> shape) with network parameters (name -> shape), by name.

    Args:
        ckpt: the checkpoint's tensors (name -> shape); entries that are not network parameters (training state such as
            ``epoch`` or ``moments.*``, ``append_dict`` values) are ignored, see ``scope``.
        net: the network's parameters (name -> shape, e.g. from :func:`net_shapes`).
        required: name prefixes of the network parameters the checkpoint must provide with the network's shape
            (default: all of them); the checkpoint's other parameters of the network are not checked.
        scope: top-level names (first dotted component) that mark a checkpoint entry as a network parameter, a
            candidate for "unexpected"; default: those of ``net`` (``encoder``, ``clip_text``, ``scratch``).

    This is the one place where a checkpoint is matched against a network: loading, converting, resuming and
    partial (one encoder) loading all go through it.
    """
    required = tuple(required)
    scope = set(scope) if scope is not None else top_level_names(net)
    return StateMismatch(
        missing=[n for n in net if n.startswith(required) and n not in ckpt],
        unexpected=[n for n in ckpt if n not in net and n.split(".", 1)[0] in scope],
        mismatched=[  # in the checkpoint's order
            (n, tuple(s), tuple(net[n]))
            for n, s in ckpt.items()
            if n.startswith(required) and n in net and tuple(s) != tuple(net[n])
        ],
    )


def top_level_names(names) -> set:
    """The first dotted component of each name (``encoder.vit.x`` -> ``encoder``)."""
    return {n.split(".", 1)[0] for n in names}


def net_shapes(net) -> "OrderedDict[str, tuple]":
    """Parameter name -> shape of a Cell, or of a mapping name -> shape / Parameter / array."""
    if isinstance(net, Mapping):  # entries without a shape (strings stored with append_dict) are left out
        return OrderedDict(
            (k, tuple(v.shape) if hasattr(v, "shape") else tuple(v))
            for k, v in net.items()
            if hasattr(v, "shape") or isinstance(v, (tuple, list))
        )
    return OrderedDict((p.name, tuple(p.shape)) for _, p in net.parameters_and_names())


_CKPT_NP_TYPES = {
    "Int8": np.int8,
    "UInt8": np.uint8,
    "Int16": np.int16,
    "UInt16": np.uint16,
    "Int32": np.int32,
    "UInt32": np.uint32,
    "Int64": np.int64,
    "UInt64": np.uint64,
    "Float16": np.float16,
    "Float32": np.float32,
    "Float64": np.float64,
    "Bool": np.bool_,
    "BFloat16": "bfloat16",
}


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
                    raise CheckpointFormatError(
                        "%s: unsupported tensor type %s for %s" % (path, t.tensor_type, value.tag)
                    )
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


def load_into_net(net, path, strict=True, prefix=""):
    """Load a MindSpore ``.ckpt``/``.safetensors`` of this project into ``net``, tensor by tensor.

    The file is checked first (names and shapes, no data kept, :func:`match_state`), then streamed into the
    parameters one tensor at a time, so peak memory is the network plus one tensor (``mindspore.load_checkpoint``
    would hold ~3x the file). Training state in the file (``epoch``, ``moments.*``, ...) is ignored.

    Args:
        net: ``nn.Cell``.
        path: checkpoint path (kind detected from the content).
        strict: if True, any missing / unexpected / mis-shaped parameter raises :class:`CheckpointMismatchError`
            before anything is loaded; if False, only mis-shaped ones raise and the others are returned.
        prefix: load only the parameters under this name prefix (e.g. ``"encoder."`` for a converted image
            encoder); a network parameter of the file outside it counts as unexpected.

    Returns:
        (missing, unexpected): lists of parameter names (both empty when strict).
    """
    import mindspore as ms

    kind = sniff_mindspore_format(path)
    params = OrderedDict((p.name, p) for _, p in net.parameters_and_names())
    wanted = OrderedDict((n, p) for n, p in params.items() if n.startswith(prefix))
    try:
        shapes = OrderedDict((n, s) for n, s, _ in _iter_checkpoint(path, kind, with_data=False))
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointTruncatedError("failed to read checkpoint %s (corrupt %s file): %s" % (path, kind, e)) from e
    problems = match_state(shapes, net_shapes(wanted), scope=top_level_names(params))
    if problems.mismatched or (strict and problems):
        what = f"the {prefix}* parameters of " if prefix else ""
        raise CheckpointMismatchError(
            problems.message(
                "checkpoint %s does not match %sthe network %s (wrong model variant or not converted?)"
                % (path, what, type(net).__name__)
            )
        )
    for name, _, arr in _iter_checkpoint(path, kind):
        p = wanted.get(name)
        if p is None:
            continue
        p.set_data(ms.Tensor(arr, dtype=p.dtype))  # casts if the file's dtype differs from the parameter's
        del arr
    return problems.missing, problems.unexpected
