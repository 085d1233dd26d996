"""Source layouts -> the OFFICIAL LSeg naming (``net.clip_pretrained.*``, ``net.pretrained.model.*``, ...).

Every supported release is first renamed (and, for big_vision, re-laid-out) into the naming of lang-seg's Lightning
``state_dict`` (docs/reference_numerics.md, "Checkpoint layout"); :mod:`mindcv_lseg.convert.keymap` then maps that
naming to MindSpore once.

======================  ===================================================================  ===================
layout                  recognised by                                                         becomes
======================  ===================================================================  ===================
``lseg``                ``[net.]clip_pretrained.*`` / ``[net.]pretrained.*`` / ``scratch.*``  as is (``net.`` added)
``clip``                OpenAI CLIP: ``positional_embedding``, ``transformer.resblocks.*``   ``net.clip_pretrained.*``
``timm``                timm ViT: ``cls_token``, ``pos_embed``, ``patch_embed.proj.*``,       ``net.pretrained.model.*``
                        ``blocks.N.*``
``big_vision``          AugReg / big_vision ``.npz``: ``Transformer/encoderblock_N/...``,     ``net.pretrained.model.*``
                        ``embedding/kernel`` (HWIO), ``cls``                                  (re-laid-out)
``mindspore``           this project's MindSpore names (``encoder.vit.*``, ``clip_text.*``)  (no mapping)
======================  ===================================================================  ===================

Values stay lazy: each output key is produced from the source on access, so big files are converted key by key.
"""

import re
from collections import OrderedDict

import numpy as np

from ..checkpoint import CheckpointFormatError
from .readers import LazyStateDict

__all__ = ["LAYOUT_PARTS", "detect_layout", "to_official", "OfficialState"]

#: which parts of LSeg a layout can provide (None: all of them)
LAYOUT_PARTS = {"lseg": None, "mindspore": None, "clip": ("text",), "timm": ("image",), "big_vision": ("image",)}

CLIP_PREFIX = "net.clip_pretrained."
VIT_PREFIX = "net.pretrained.model."

# keys of an OpenAI CLIP state_dict (the JIT archive also holds non-state tensors such as attn_mask)
_CLIP_KEY = re.compile(
    r"^(positional_embedding|text_projection|logit_scale|token_embedding\.weight|ln_final\.(weight|bias)"
    r"|transformer\.resblocks\.\d+\.(attn\.in_proj_(weight|bias)|attn\.out_proj\.(weight|bias)|ln_[12]\.(weight|bias)"
    r"|mlp\.c_(fc|proj)\.(weight|bias))"
    r"|visual\.(class_embedding|positional_embedding|proj|conv1\.weight|ln_(pre|post)\.(weight|bias)"
    r"|transformer\.resblocks\.\d+\.(attn\.in_proj_(weight|bias)|attn\.out_proj\.(weight|bias)|ln_[12]\.(weight|bias)"
    r"|mlp\.c_(fc|proj)\.(weight|bias))))$"
)
# keys of a timm VisionTransformer state_dict that LSeg's ViT has (head kept here, dropped by the keymap)
_TIMM_KEY = re.compile(
    r"^(cls_token|pos_embed|patch_embed\.proj\.(weight|bias)|norm\.(weight|bias)|head\.(weight|bias)"
    r"|blocks\.\d+\.(norm[12]\.(weight|bias)|attn\.(qkv|proj)\.(weight|bias)|mlp\.fc[12]\.(weight|bias)))$"
)
_LSEG_ROOTS = ("clip_pretrained.", "pretrained.", "scratch.")


class OfficialState:
    """A source brought into the official naming.

    Attributes:
        layout: one of :data:`LAYOUT_PARTS`.
        tensors: :class:`~mindcv_lseg.convert.readers.LazyStateDict` official key -> array (``net.`` prefixed;
            MindSpore names for the ``mindspore`` layout).
        dropped: list of ``(source key, reason)`` for source tensors that have no place in LSeg.
    """

    def __init__(self, layout, tensors, dropped):
        self.layout, self.tensors, self.dropped = layout, tensors, list(dropped)


def _strip_common(keys, prefixes=("module.", "model.")):
    """Remove one wrapper prefix shared by all keys (DataParallel ``module.`` or a ``model.`` wrapper)."""
    keys = list(keys)
    for p in prefixes:
        if keys and all(k.startswith(p) for k in keys):
            return p
    return ""


def detect_layout(keys):
    """Classify a list of tensor names; raises CheckpointFormatError with the first keys if unknown."""
    keys = list(keys)
    ks = set(keys)
    if any(k.startswith(("encoder.vit.", "clip_text.", "encoder.reassemble.")) for k in keys) or any(
        k.startswith("scratch.") and k.endswith((".gamma", ".moving_mean")) for k in keys
    ):
        return "mindspore"
    if (
        any(k.startswith("net.") for k in keys)
        or any(k.startswith(_LSEG_ROOTS) for k in keys)
        and any(k.startswith(("clip_pretrained.", "pretrained.act_postprocess", "scratch.")) for k in keys)
    ):
        return "lseg"
    if any(k.startswith("Transformer/encoderblock_") or k.endswith("embedding/kernel") for k in keys):
        return "big_vision"
    if "positional_embedding" in ks and any(k.startswith("transformer.resblocks.") for k in keys):
        return "clip"
    if {"cls_token", "pos_embed"} <= ks or any(k.startswith("patch_embed.proj.") for k in keys):
        return "timm"
    raise CheckpointFormatError(
        "unrecognised weights: not an LSeg, CLIP, timm ViT, big_vision ViT or mindcv-lseg checkpoint "
        "(first keys: %s)" % ", ".join(keys[:6])
    )


def _lseg(tensors):
    mapping = OrderedDict((k, k if k.startswith("net.") else "net." + k) for k in tensors)
    return OfficialState("lseg", tensors.with_names(mapping), [])


def _clip(tensors):
    strip = _strip_common(tensors)
    mapping, dropped = OrderedDict(), []
    for k in tensors:
        name = k[len(strip) :]
        if _CLIP_KEY.match(name):
            mapping[k] = CLIP_PREFIX + name
        else:
            dropped.append((k, "not a CLIP state_dict weight (TorchScript attribute or other model)"))
    return OfficialState("clip", tensors.with_names(mapping), dropped)


def _timm(tensors):
    strip = _strip_common(tensors)
    mapping, dropped = OrderedDict(), []
    for k in tensors:
        name = k[len(strip) :]
        if _TIMM_KEY.match(name):
            mapping[k] = VIT_PREFIX + name
        elif name.startswith(("pre_logits.", "fc_norm.", "head_dist.", "dist_token")):
            dropped.append((k, "timm classifier extras, unused by LSeg"))
        else:
            mapping[k] = VIT_PREFIX + name  # unknown ViT parts surface as 'unexpected' in the keymap
    return OfficialState("timm", tensors.with_names(mapping), dropped)


def _bv_prefix(keys):
    for k in keys:
        if k.endswith("embedding/kernel") and not k.endswith("posembed_input/pos_embedding"):
            return k[: -len("embedding/kernel")]
    return ""


def _big_vision(tensors):
    """AugReg (vit_jax) / big_vision .npz -> timm ViT layout, following timm's ``_load_weights`` conventions.

    * ``embedding/kernel`` [kh, kw, in, out] -> ``patch_embed.proj.weight`` [out, in, kh, kw]
    * ``.../MultiHeadDotProductAttention_*/{query,key,value}/kernel`` [D, heads, hd] -> rows of ``attn.qkv.weight``
      (each ``reshape(D, D).T``, concatenated q, k, v); biases [heads, hd] flattened and concatenated
    * ``.../out/kernel`` [heads, hd, D] -> ``attn.proj.weight`` = ``reshape(D, D).T``
    * Dense kernels [in, out] -> Linear weights [out, in]; LayerNorm ``scale`` -> ``weight``
    * AugReg names blocks' sub-layers ``LayerNorm_0/2``, ``MultiHeadDotProductAttention_1``, ``MlpBlock_3``;
      big_vision ``LayerNorm_0/1``, ``MultiHeadDotProductAttention_0``, ``MlpBlock_0``: both are accepted.
    """
    keys = list(tensors)
    pre = _bv_prefix(keys)
    used = set()
    loaders, shapes = OrderedDict(), {}

    def src(name):
        k = pre + name
        if k not in tensors:
            raise CheckpointFormatError("big_vision checkpoint lacks %s" % k)
        used.add(k)
        return k

    def add(out, fn, shape):
        loaders[VIT_PREFIX + out] = fn
        shapes[VIT_PREFIX + out] = tuple(shape)

    def plain(out, name, transform=None):
        k = src(name)
        s = tensors.shape(k)
        if transform == "T":
            add(out, lambda k=k: np.ascontiguousarray(tensors[k].T), s[::-1])
        elif transform == "conv":
            add(out, lambda k=k: np.ascontiguousarray(tensors[k].transpose(3, 2, 0, 1)), (s[3], s[2], s[0], s[1]))
        else:
            add(out, lambda k=k: np.ascontiguousarray(tensors[k]), s)

    plain("cls_token", "cls")
    plain("pos_embed", "Transformer/posembed_input/pos_embedding")
    plain("patch_embed.proj.weight", "embedding/kernel", "conv")
    plain("patch_embed.proj.bias", "embedding/bias")
    nblocks = 0
    while (pre + "Transformer/encoderblock_%d/LayerNorm_0/scale" % nblocks) in tensors:
        nblocks += 1
    if not nblocks:
        raise CheckpointFormatError("big_vision checkpoint without Transformer/encoderblock_0")
    for i in range(nblocks):
        b = "Transformer/encoderblock_%d/" % i
        aug = (pre + b + "MlpBlock_3/Dense_0/kernel") in tensors
        mha = b + ("MultiHeadDotProductAttention_1/" if aug else "MultiHeadDotProductAttention_0/")
        mlp = b + ("MlpBlock_3/" if aug else "MlpBlock_0/")
        ln2 = b + ("LayerNorm_2/" if aug else "LayerNorm_1/")
        o = "blocks.%d." % i
        plain(o + "norm1.weight", b + "LayerNorm_0/scale")
        plain(o + "norm1.bias", b + "LayerNorm_0/bias")
        qkv_w = [src(mha + n + "/kernel") for n in ("query", "key", "value")]
        qkv_b = [src(mha + n + "/bias") for n in ("query", "key", "value")]
        d = tensors.shape(qkv_w[0])[0]
        add(
            o + "attn.qkv.weight",
            lambda ks=qkv_w, d=d: np.concatenate([tensors[k].reshape(d, -1).T for k in ks], axis=0),
            (3 * d, d),
        )
        add(o + "attn.qkv.bias", lambda ks=qkv_b: np.concatenate([tensors[k].reshape(-1) for k in ks]), (3 * d,))
        ko = src(mha + "out/kernel")
        add(o + "attn.proj.weight", lambda k=ko, d=d: np.ascontiguousarray(tensors[k].reshape(-1, d).T), (d, d))
        plain(o + "attn.proj.bias", mha + "out/bias")
        plain(o + "norm2.weight", ln2 + "scale")
        plain(o + "norm2.bias", ln2 + "bias")
        for r in (0, 1):
            plain(o + "mlp.fc%d.weight" % (r + 1), mlp + "Dense_%d/kernel" % r, "T")
            plain(o + "mlp.fc%d.bias" % (r + 1), mlp + "Dense_%d/bias" % r)
    plain("norm.weight", "Transformer/encoder_norm/scale")
    plain("norm.bias", "Transformer/encoder_norm/bias")
    if (pre + "head/kernel") in tensors:
        plain("head.weight", "head/kernel", "T")
        plain("head.bias", "head/bias")
    dropped = [(k, "big_vision pre-logits / extras, unused by LSeg") for k in keys if k not in used]
    return OfficialState("big_vision", LazyStateDict(loaders, shapes), dropped)


def _mindspore(tensors):
    return OfficialState("mindspore", tensors, [])


_BUILDERS = {"lseg": _lseg, "clip": _clip, "timm": _timm, "big_vision": _big_vision, "mindspore": _mindspore}


def to_official(tensors, layout=None):
    """Bring a :class:`LazyStateDict` of a supported layout into the official naming.

    Args:
        tensors: the reader's tensors (source naming).
        layout: force a layout; default :func:`detect_layout`.

    Returns:
        :class:`OfficialState`.
    """
    layout = layout or detect_layout(list(tensors))
    return _BUILDERS[layout](tensors)
