"""The one mapping from the official LSeg ``state_dict`` naming to this project's MindSpore parameter names.

Official naming (lang-seg's Lightning checkpoints, docs/reference_numerics.md "Checkpoint layout"):
``net.clip_pretrained.*`` (CLIP), ``net.pretrained.model.*`` (timm ViT), ``net.pretrained.act_postprocess{1..4}.*``
(reassemble), ``net.scratch.*`` (decoder); the zero-shot ResNet-101 checkpoints have ``net.pretrained.layer{1..4}.*``
(torchvision ResNet, the stem inside ``layer1``) instead of the ViT and reassemble keys (docs/zeroshot.md). Every
other source format (CLIP TorchScript, timm, big_vision) is first brought into this naming by
``mindcv_lseg.convert`` and then mapped here, so the correspondence lives in one place.

MindSpore naming: ``clip_text.*``, ``encoder.vit.*``, ``encoder.reassemble.branches.{0..3}.*``, ``scratch.*``;
``encoder.resnet.*`` (mindcv ResNet names) for ``lseg_rn101``.
"""

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable, List, Mapping, Optional, Tuple

import numpy as np

from ..checkpoint import PARTS, CheckpointMismatchError, match_state, net_shapes

__all__ = [
    "ConversionResult",
    "official_to_mindspore_name",
    "official_to_mindspore",
    "part_of",
]

# official keys that LSeg never uses; dropped with the reason shown to the user
_DROPPED = [
    (re.compile(r"^clip_pretrained\.visual\."), "CLIP image tower, unused by LSeg"),
    (re.compile(r"^clip_pretrained\.logit_scale$"), "CLIP's own logit scale, unused (LSeg's is fixed 1/0.07)"),
    (re.compile(r"^pretrained\.model\.head\."), "ViT ImageNet classifier, unused"),
    (re.compile(r"\.num_batches_tracked$"), "BatchNorm step counter, not a MindSpore parameter"),
    (re.compile(r"^scratch\.refinenet4\.resConfUnit1\."), "refinenet4.resConfUnit1, never called by the reference"),
]

_BN_PARAMS = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def _resnet_block_param(m) -> str:
    """torchvision Bottleneck parameter -> mindcv's: ``downsample`` -> ``down_sample``, BatchNorm names."""
    stage, block, module, param = m.group(1) or "1", m.group(2), m.group(3), m.group(4)
    if module.startswith("bn") or module == "downsample.1":
        param = _BN_PARAMS[param]
    return f"encoder.resnet.layer{stage}.{block}.{module.replace('downsample', 'down_sample')}.{param}"


# (pattern, replacement) applied in order to the key without its ``net.`` prefix; first match wins
_RULES = [
    # CLIP text tower
    (r"^clip_pretrained\.token_embedding\.weight$", r"clip_text.token_embedding.embedding_table"),
    (r"^clip_pretrained\.ln_final\.weight$", r"clip_text.ln_final.gamma"),
    (r"^clip_pretrained\.ln_final\.bias$", r"clip_text.ln_final.beta"),
    (r"^clip_pretrained\.transformer\.(resblocks\.\d+\.ln_[12])\.weight$", r"clip_text.\1.gamma"),
    (r"^clip_pretrained\.transformer\.(resblocks\.\d+\.ln_[12])\.bias$", r"clip_text.\1.beta"),
    (r"^clip_pretrained\.transformer\.resblocks\.", r"clip_text.resblocks."),
    (r"^clip_pretrained\.(positional_embedding|text_projection)$", r"clip_text.\1"),
    # timm ViT
    (r"^pretrained\.model\.(blocks\.\d+\.norm[12]|norm)\.weight$", r"encoder.vit.\1.gamma"),
    (r"^pretrained\.model\.(blocks\.\d+\.norm[12]|norm)\.bias$", r"encoder.vit.\1.beta"),
    (r"^pretrained\.model\.", r"encoder.vit."),
    # torchvision ResNet (zero-shot lseg_rn101): ``pretrained.layer1`` = Sequential(conv1, bn1, relu, maxpool, layer1)
    (r"^pretrained\.layer1\.0\.weight$", r"encoder.resnet.conv1.weight"),
    (
        r"^pretrained\.layer1\.1\.(weight|bias|running_mean|running_var)$",
        lambda m: f"encoder.resnet.bn1.{_BN_PARAMS[m.group(1)]}",
    ),
    (
        r"^pretrained\.(?:layer1\.4|layer([2-4]))\.(\d+)\.(conv[1-3]|bn[1-3]|downsample\.[01])\."
        r"(weight|bias|running_mean|running_var)$",
        _resnet_block_param,
    ),
    # reassemble: Sequential index 0 = readout, 3 = 1x1 conv, 4 = resampling conv
    (
        r"^pretrained\.act_postprocess([1-4])\.0\.project\.0\.",
        lambda m: f"encoder.reassemble.branches.{int(m.group(1)) - 1}.readout.project.",
    ),
    (r"^pretrained\.act_postprocess([1-4])\.3\.", lambda m: f"encoder.reassemble.branches.{int(m.group(1)) - 1}.proj."),
    (
        r"^pretrained\.act_postprocess([1-4])\.4\.",
        lambda m: f"encoder.reassemble.branches.{int(m.group(1)) - 1}.resample.",
    ),
    # decoder
    (r"^scratch\.(refinenet\d)\.resConfUnit(\d)\.(bn\d)\.weight$", r"scratch.\1.res_conf_unit\2.\3.gamma"),
    (r"^scratch\.(refinenet\d)\.resConfUnit(\d)\.(bn\d)\.bias$", r"scratch.\1.res_conf_unit\2.\3.beta"),
    (r"^scratch\.(refinenet\d)\.resConfUnit(\d)\.(bn\d)\.running_mean$", r"scratch.\1.res_conf_unit\2.\3.moving_mean"),
    (
        r"^scratch\.(refinenet\d)\.resConfUnit(\d)\.(bn\d)\.running_var$",
        r"scratch.\1.res_conf_unit\2.\3.moving_variance",
    ),
    (r"^scratch\.(refinenet\d)\.resConfUnit(\d)\.", r"scratch.\1.res_conf_unit\2."),
    (r"^scratch\.", r"scratch."),
]
_RULES = [(re.compile(p), r) for p, r in _RULES]


@dataclass
class ConversionResult:
    """Outcome of :func:`official_to_mindspore`.

    params: MindSpore name -> float32 array, ready to load. dropped: (official key, reason) intentionally unused.
    upcast: official keys converted float16 -> float32.
    """

    params: "OrderedDict[str, np.ndarray]" = field(default_factory=OrderedDict)
    dropped: List[Tuple[str, str]] = field(default_factory=list)
    upcast: List[str] = field(default_factory=list)


def _strip_prefix(key: str) -> str:
    return key[4:] if key.startswith("net.") else key


def official_to_mindspore_name(key: str) -> Optional[str]:
    """MindSpore parameter name for an official key (with or without ``net.``), or None if it is dropped/unknown."""
    key = _strip_prefix(key)
    if any(p.search(key) for p, _ in _DROPPED):
        return None
    for pattern, repl in _RULES:
        if pattern.search(key):
            return pattern.sub(repl, key, count=1)
    return None


def drop_reason(key: str) -> Optional[str]:
    """Why an official key is intentionally not loaded, or None if it is a weight LSeg uses."""
    key = _strip_prefix(key)
    for pattern, reason in _DROPPED:
        if pattern.search(key):
            return reason
    return None


def part_of(ms_name: str) -> Optional[str]:
    """'image', 'text' or 'decoder' for a MindSpore parameter name."""
    for part, prefix in PARTS.items():
        if ms_name.startswith(prefix):
            return part
    return None


def _as_float32(key: str, value: np.ndarray, upcast: List[str]) -> np.ndarray:
    value = np.asarray(value)
    if value.dtype == np.float16:
        upcast.append(key)
    elif value.dtype != np.float32:
        if not np.issubdtype(value.dtype, np.floating):
            raise CheckpointMismatchError(f"{key}: expected floating-point weights, found dtype {value.dtype}")
    return value.astype(np.float32, copy=False)  # float16 -> float32 is exact


def official_to_mindspore(
    state: Mapping[str, np.ndarray], net, parts: Optional[Iterable[str]] = None
) -> ConversionResult:
    """Map an official-naming state dict onto ``net``'s parameters.

    Args:
        state: official key -> array (``net.`` prefix optional; float16 allowed and upcast exactly).
        net: the LSeg Cell, or a mapping MindSpore name -> shape.
        parts: None to require every parameter of ``net``; otherwise a subset of {"image", "text", "decoder"}:
            only those parameters are required (the others keep their current values) and keys of other parts
            in ``state`` are ignored.

    Returns:
        a :class:`ConversionResult` whose ``params`` cover the required parameters.

    Raises:
        CheckpointMismatchError: listing missing, unexpected and mis-shaped keys (e.g. a checkpoint of another variant).
    """
    wanted = set(PARTS) if parts is None else set(parts)
    if not wanted <= set(PARTS):
        raise ValueError(f"parts must be a subset of {sorted(PARTS)}, got {sorted(wanted)}")
    shapes = net_shapes(net)
    res = ConversionResult()
    source_key = OrderedDict()  # MindSpore name -> official key
    unknown = []  # official keys with no parameter of this network
    for key in state:
        reason = drop_reason(key)
        if reason is not None:
            res.dropped.append((key, reason))
            continue
        name = official_to_mindspore_name(key)
        if name is None or name not in shapes:
            unknown.append(key)
        elif part_of(name) not in wanted:
            res.dropped.append((key, f"not converted (only {', '.join(sorted(wanted))} requested)"))
        else:
            source_key[name] = key
    shape_of = state.shape if hasattr(state, "shape") else (lambda k: np.shape(state[k]))
    problems = match_state(
        OrderedDict((n, tuple(shape_of(k))) for n, k in source_key.items()),
        shapes,
        required=tuple(PARTS[p] for p in sorted(wanted)),
    )
    problems.unexpected = unknown + [source_key[n] for n in problems.unexpected]
    if problems:
        raise CheckpointMismatchError(
            problems.message(
                "the checkpoint does not match this network (is it a checkpoint of another model variant?)",
                label=lambda n: f"{source_key[n]} -> {n}" if n in source_key else n,
            )
        )
    for name in shapes:
        if name in source_key:
            res.params[name] = _as_float32(source_key[name], state[source_key[name]], res.upcast)
    return res
