"""``convert_checkpoint``: any supported weights file -> a MindSpore checkpoint of one ``lseg_*`` model.

read (``readers``, format from content) -> official naming (``sources``) -> MindSpore names (``keymap``, lead's
single mapping) -> atomic write (``mindcv_lseg.checkpoint``).  The destination is only replaced once everything has
been converted and checked.
"""

import gc
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..checkpoint import (
    PARTS,
    CheckpointError,
    CheckpointMismatchError,
    match_state,
    net_shapes,
    save_checkpoint_atomic,
)
from .readers import read_checkpoint
from .sources import LAYOUT_PARTS, to_official

__all__ = ["ConversionReport", "convert_checkpoint", "convert_state", "model_param_shapes", "PART_NAMES", "guess_model"]

PART_NAMES = tuple(PARTS)
# what a single-tower release provides (the reassemble / decoder / other tower stay as initialised)
_LAYOUT_PROVIDES = {"clip": ("clip_text.",), "timm": ("encoder.vit.",), "big_vision": ("encoder.vit.",)}
_LAYOUT_TITLES = {
    "lseg": "LSeg checkpoint (official naming)",
    "clip": "OpenAI CLIP weights",
    "timm": "timm ViT weights",
    "big_vision": "big_vision / AugReg ViT weights",
    "mindspore": "mindcv-lseg MindSpore checkpoint",
}


class ConvertError(CheckpointError):
    """A conversion request that cannot be fulfilled (wrong --part for the source, unknown model, ...)."""


@dataclass
class ConversionReport:
    """What :func:`convert_checkpoint` did (``lines()`` renders it for the CLI)."""

    src: str = ""
    dst: str = ""
    model: str = ""
    kind: str = ""  # file format
    layout: str = ""  # naming layout
    parts: Tuple[str, ...] = ()
    params: "OrderedDict[str, tuple]" = field(default_factory=OrderedDict)  # ms name -> shape (written)
    dropped: List[Tuple[str, str]] = field(default_factory=list)  # (source key, reason)
    upcast: List[str] = field(default_factory=list)  # float16 -> float32
    bfloat16: List[str] = field(default_factory=list)  # bfloat16 -> float32
    not_converted: List[str] = field(default_factory=list)  # network params left as initialised (partial)
    placeholders: List[str] = field(default_factory=list)  # unknown classes met in non-weight pickle entries
    container_keys: List[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def num_values(self) -> int:
        return int(sum(int(np.prod(s, dtype=np.int64)) for s in self.params.values()))

    def lines(self) -> List[str]:
        out = ["source: %s (%s; %s)" % (self.src, self.kind, _LAYOUT_TITLES.get(self.layout, self.layout))]
        if self.container_keys:
            out.append("  container entries: %s (only the weights are read)" % ", ".join(self.container_keys))
        if self.placeholders:
            out.append("  non-weight objects kept inert (not executed): %s" % ", ".join(self.placeholders))
        by_reason: Dict[str, List[str]] = OrderedDict()
        for key, reason in self.dropped:
            by_reason.setdefault(reason, []).append(key)
        ndrop = len(self.dropped)
        if ndrop:
            out.append("dropped %d source tensors:" % ndrop)
            for reason, keys in by_reason.items():
                out.append("  %4d  %s  (%s)" % (len(keys), key_pattern(keys), reason))
        out.append("kept %d tensors for %s:" % (len(self.params), self.model))
        for part in PART_NAMES:
            names = [n for n in self.params if n.startswith(PARTS[part])]
            if names:
                nval = sum(int(np.prod(self.params[n], dtype=np.int64)) for n in names)
                out.append("  %-7s %4d tensors, %s values  (%s)" % (part, len(names), _human(nval), key_pattern(names)))
        if self.not_converted:
            groups = []
            for part in PART_NAMES:
                names = [n for n in self.not_converted if n.startswith(PARTS[part])]
                if names:
                    groups.append("%s %d (%s)" % (part, len(names), key_pattern(names)))
            out.append("not converted (not in this file; load the output with strict=False): %s" % ", ".join(groups))
        dt = []
        if self.upcast:
            dt.append("%d float16 tensors upcast exactly to float32" % len(self.upcast))
        if self.bfloat16:
            dt.append("%d bfloat16 tensors decoded exactly to float32" % len(self.bfloat16))
        out.append(
            "summary: %d parameters, %s values (%.1f MB float32); %s; written %s in %.1f s"
            % (
                len(self.params),
                _human(self.num_values),
                self.num_values * 4 / 1e6,
                "; ".join(dt) if dt else "no dtype changes",
                self.dst,
                self.seconds,
            )
        )
        return out


def _human(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return "%.2f%s" % (n / div, unit)
    return str(n)


def key_pattern(keys: List[str]) -> str:
    """Compact glob for a group of dotted keys: common prefix + ``*`` + common suffix (e.g. ``net.a.*.bias``)."""
    keys = list(keys)
    if len(keys) == 1:
        return keys[0]
    pre = os.path.commonprefix(keys)
    pre = pre[: pre.rfind(".") + 1] if "." in pre else ""
    rev = os.path.commonprefix([k[len(pre) :][::-1] for k in keys])[::-1]
    suf = rev[rev.find(".") :] if "." in rev else ""
    return pre + "*" + suf


def model_param_shapes(model: str) -> "OrderedDict[str, tuple]":
    """Parameter names and shapes of ``mindcv.create_model(model)`` (built once without init, then freed)."""
    import mindcv

    import mindcv_lseg.models  # noqa: F401  (registers the lseg_* entries)

    if not mindcv.is_model(model):
        names = [m for m in mindcv.list_models() if m.startswith("lseg")]
        raise ConvertError("unknown model %r; available: %s" % (model, ", ".join(names)))
    try:
        net = mindcv.create_model(model, weight_init=False)
    except TypeError:
        net = mindcv.create_model(model)
    shapes = OrderedDict((p.name, tuple(p.shape)) for _, p in net.parameters_and_names())
    del net
    gc.collect()
    return shapes


def guess_model(official) -> Optional[str]:
    """Which lseg_* variant an official-naming state looks like (from the ViT patch embedding), or None."""
    if "net.pretrained.layer4.0.conv1.weight" in official:
        return "lseg_rn101"
    key = "net.pretrained.model.patch_embed.proj.weight"
    if key not in official:
        return None
    shape = official.shape(key)
    return {(1024, 16): "lseg_vitl16_384", (768, 32): "lseg_vitb32"}.get((shape[0], shape[-1]))


def _pos_embed_hint(official, shapes):
    """Explain a ViT position-embedding size mismatch (e.g. 224-px pre-training weights for a 384-px model)."""
    key, name = "net.pretrained.model.pos_embed", "encoder.vit.pos_embed"
    if key not in official or name not in shapes or "net.pretrained.model.patch_embed.proj.weight" not in official:
        return ""
    have, need = official.shape(key), shapes[name]
    patch = official.shape("net.pretrained.model.patch_embed.proj.weight")[-1]
    if have == need or len(have) != 3 or len(need) != 3 or have[2] != need[2]:
        return ""
    side = lambda n: int(round((n - 1) ** 0.5)) * patch  # noqa: E731
    return (
        "\nthe ViT position embedding has %d tokens (%d px images) but this model needs %d (%d px): use the "
        "%d-px release of the weights (e.g. timm vit_*_384 / AugReg '...res_384.npz')"
        % (have[1], side(have[1]), need[1], side(need[1]), side(need[1]))
    )


def _resolve_parts(layout, part, src):
    provided = LAYOUT_PARTS[layout]
    if part is not None and part not in PART_NAMES:
        raise ConvertError("--part must be one of %s, got %r" % ("/".join(PART_NAMES), part))
    if provided is None:
        return None if part is None else (part,)
    if part is None:
        return provided
    if part not in provided:
        raise ConvertError(
            "%s holds %s, which provide only the %s encoder: use --part %s (not --part %s)"
            % (src, _LAYOUT_TITLES[layout], "/".join(provided), provided[0], part)
        )
    return (part,)


def _convert_mindspore(tensors, shapes, parts, src):
    """Round trip of this project's own checkpoint: names must already match the network."""
    prefixes = tuple(PARTS[p] for p in (PART_NAMES if parts is None else parts))
    problems = match_state(OrderedDict((k, tensors.shape(k)) for k in tensors), shapes, required=prefixes)
    if problems:
        raise CheckpointMismatchError(problems.message("%s does not match the network" % src))
    params, upcast = OrderedDict(), []
    for n in (n for n in shapes if n.startswith(prefixes)):
        v = np.asarray(tensors[n])
        if v.dtype == np.float16:
            upcast.append(n)
        params[n] = v.astype(np.float32, copy=False)
    return params, upcast, []


def convert_state(source, shapes, part=None, layout=None, src_name="<state>"):
    """Map an already-read source onto MindSpore parameters (no file writing).

    Args:
        source: :class:`~mindcv_lseg.convert.readers.SourceState`.
        shapes: network parameter name -> shape (:func:`model_param_shapes`), or a net.
        part: None or one of ``image``/``text``/``decoder``.
        layout: force a source layout (default: detected from the key names).

    Returns:
        (params OrderedDict ms_name -> float32 array, report fields dict)
    """
    from .keymap import official_to_mindspore

    shapes = net_shapes(shapes)
    official = to_official(source.tensors, layout)
    parts = _resolve_parts(official.layout, part, src_name)
    if official.layout == "mindspore":
        params, upcast, dropped = _convert_mindspore(official.tensors, shapes, parts, src_name)
    else:
        target = shapes
        if official.layout in _LAYOUT_PROVIDES:  # single-tower releases: only that tower is required
            target = OrderedDict((n, s) for n, s in shapes.items() if n.startswith(_LAYOUT_PROVIDES[official.layout]))
        try:
            res = official_to_mindspore(official.tensors, target, parts=parts)
        except CheckpointMismatchError as e:
            guess = guess_model(official.tensors)
            hint = ("\nthe file looks like a %s checkpoint: use --model %s" % (guess, guess)) if guess else ""
            hint += _pos_embed_hint(official.tensors, shapes)
            raise CheckpointMismatchError("%s does not fit the network: %s%s" % (src_name, e, hint)) from None
        params, upcast, dropped = res.params, list(res.upcast), list(res.dropped)
    dropped = list(official.dropped) + [d if isinstance(d, tuple) else (d, "unused") for d in dropped]
    wanted = PART_NAMES if parts is None else parts
    not_converted = [n for n in shapes if n not in params]
    fields = dict(
        layout=official.layout, parts=tuple(wanted), dropped=dropped, upcast=upcast, not_converted=not_converted
    )
    return params, fields


def convert_checkpoint(
    model: str, src: str, dst: str, part: Optional[str] = None, layout: Optional[str] = None, shapes=None
) -> ConversionReport:
    """Convert ``src`` (any supported format, detected from content) into a MindSpore checkpoint for ``model``.

    Args:
        model: a registered ``lseg_*`` model name (``lseg_vitl16_384``, ``lseg_vitb32``, ``lseg_tiny_test``).
        src: source file: LSeg Lightning ``.ckpt`` / bare state_dict / ``.npz`` (official naming), OpenAI CLIP
            TorchScript ``.pt`` or state_dict (-> text encoder), timm ViT ``.pth``/``.safetensors`` or big_vision
            ``.npz`` (-> image encoder), or a MindSpore ``.ckpt``/``.safetensors`` of this project.
        dst: output ``.ckpt`` (``.safetensors`` also possible), written atomically.
        part: ``None`` = everything the source provides (all of LSeg for LSeg checkpoints); ``"text"`` /
            ``"image"`` / ``"decoder"`` = only that part. Only the converted parameters are written: load a
            partial file with ``mindcv_lseg.checkpoint.load_into_net(net, dst, strict=False)``.
        layout: force the source naming layout (``lseg``/``clip``/``timm``/``big_vision``/``mindspore``).
        shapes: network parameter shapes (default: built from ``model``).

    Returns:
        :class:`ConversionReport`.

    Raises:
        mindcv_lseg.checkpoint.CheckpointError subclasses (all ``ValueError``): not found, not a checkpoint,
        truncated/corrupt, unsafe pickle, mismatch (wrong variant / missing keys), bad --part.
    """
    t0 = time.time()
    src, dst = os.fspath(src), os.fspath(dst)
    dst_dir = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(dst_dir):
        raise ConvertError("output directory %s does not exist" % dst_dir)
    if os.path.exists(src) and os.path.exists(dst) and os.path.samefile(src, dst):
        raise ConvertError("--dst must differ from --src (%s)" % src)
    source = read_checkpoint(src)
    if shapes is None:
        shapes = model_param_shapes(model)
    params, fields = convert_state(source, shapes, part=part, layout=layout, src_name=src)
    report = ConversionReport(
        src=src,
        dst=dst,
        model=model,
        kind=source.kind,
        placeholders=list(source.meta.get("placeholders", [])),
        container_keys=list(source.meta.get("container_keys", [])) if source.meta.get("state_dict_key") else [],
        bfloat16=list(source.meta.get("bfloat16", [])),
        **fields
    )
    report.params = OrderedDict((n, tuple(v.shape)) for n, v in params.items())
    save_checkpoint_atomic(params, dst)
    del params
    report.seconds = time.time() - t0
    return report
