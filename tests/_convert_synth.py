"""Test helpers: the official LSeg state_dict layout for any size, small synthetic checkpoints in real key layouts.

``official_layout`` reproduces lang-seg's ``state_dict`` key order, shapes and dtypes (checked against the public
manifests in test_convert_sources.py), so tiny files built from it have exactly the real key layout.
"""

import os
from collections import OrderedDict

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# hyper-parameters of the real variants and of lseg_tiny_test
VITB32 = dict(
    image_size=384,
    patch_size=32,
    vit_dim=768,
    vit_depth=12,
    reassemble=(96, 192, 384, 768),
    features=256,
    text_width=512,
    text_layers=12,
    embed_dim=512,
    vocab=49408,
    context=77,
    clip_vis_width=768,
    clip_vis_layers=12,
    clip_vis_patch=32,
    clip_vis_image=224,
    num_classes=1000,
)
VITL16 = dict(VITB32, patch_size=16, vit_dim=1024, vit_depth=24, reassemble=(256, 512, 1024, 1024))
TINY = dict(
    image_size=64,
    patch_size=16,
    vit_dim=64,
    vit_depth=4,
    reassemble=(16, 32, 64, 64),
    features=32,
    text_width=64,
    text_layers=2,
    embed_dim=64,
    vocab=49408,
    context=77,
    clip_vis_width=32,
    clip_vis_layers=1,
    clip_vis_patch=16,
    clip_vis_image=32,
    num_classes=10,
)

F16, F32, I64 = "float16", "float32", "int64"


def _clip_block(prefix, w):
    return [
        (prefix + "attn.in_proj_weight", (3 * w, w), F16),
        (prefix + "attn.in_proj_bias", (3 * w,), F16),
        (prefix + "attn.out_proj.weight", (w, w), F16),
        (prefix + "attn.out_proj.bias", (w,), F16),
        (prefix + "ln_1.weight", (w,), F32),
        (prefix + "ln_1.bias", (w,), F32),
        (prefix + "mlp.c_fc.weight", (4 * w, w), F16),
        (prefix + "mlp.c_fc.bias", (4 * w,), F16),
        (prefix + "mlp.c_proj.weight", (w, 4 * w), F16),
        (prefix + "mlp.c_proj.bias", (w,), F16),
        (prefix + "ln_2.weight", (w,), F32),
        (prefix + "ln_2.bias", (w,), F32),
    ]


def clip_layout(c, prefix="net.clip_pretrained."):
    """OpenAI CLIP ViT state_dict keys (as inside LSeg: float16 Linear/Conv/MHA weights)."""
    w, vw, e = c["text_width"], c["clip_vis_width"], c["embed_dim"]
    ntok = (c["clip_vis_image"] // c["clip_vis_patch"]) ** 2 + 1
    out = [
        ("positional_embedding", (c["context"], w), F32),
        ("text_projection", (w, e), F16),
        ("logit_scale", (), F32),
        ("visual.class_embedding", (vw,), F32),
        ("visual.positional_embedding", (ntok, vw), F32),
        ("visual.proj", (vw, e), F16),
        ("visual.conv1.weight", (vw, 3, c["clip_vis_patch"], c["clip_vis_patch"]), F16),
        ("visual.ln_pre.weight", (vw,), F32),
        ("visual.ln_pre.bias", (vw,), F32),
    ]
    for i in range(c["clip_vis_layers"]):
        out += _clip_block("visual.transformer.resblocks.%d." % i, vw)
    out += [("visual.ln_post.weight", (vw,), F32), ("visual.ln_post.bias", (vw,), F32)]
    for i in range(c["text_layers"]):
        out += _clip_block("transformer.resblocks.%d." % i, w)
    out += [
        ("token_embedding.weight", (c["vocab"], w), F32),
        ("ln_final.weight", (w,), F32),
        ("ln_final.bias", (w,), F32),
    ]
    return [(prefix + n, s, d) for n, s, d in out]


def vit_layout(c, prefix="net.pretrained.model."):
    """timm VisionTransformer state_dict keys."""
    d, p = c["vit_dim"], c["patch_size"]
    ntok = (c["image_size"] // p) ** 2 + 1
    out = [
        ("cls_token", (1, 1, d), F32),
        ("pos_embed", (1, ntok, d), F32),
        ("patch_embed.proj.weight", (d, 3, p, p), F32),
        ("patch_embed.proj.bias", (d,), F32),
    ]
    for i in range(c["vit_depth"]):
        b = "blocks.%d." % i
        out += [
            (b + "norm1.weight", (d,), F32),
            (b + "norm1.bias", (d,), F32),
            (b + "attn.qkv.weight", (3 * d, d), F32),
            (b + "attn.qkv.bias", (3 * d,), F32),
            (b + "attn.proj.weight", (d, d), F32),
            (b + "attn.proj.bias", (d,), F32),
            (b + "norm2.weight", (d,), F32),
            (b + "norm2.bias", (d,), F32),
            (b + "mlp.fc1.weight", (4 * d, d), F32),
            (b + "mlp.fc1.bias", (4 * d,), F32),
            (b + "mlp.fc2.weight", (d, 4 * d), F32),
            (b + "mlp.fc2.bias", (d,), F32),
        ]
    out += [
        ("norm.weight", (d,), F32),
        ("norm.bias", (d,), F32),
        ("head.weight", (c["num_classes"], d), F32),
        ("head.bias", (c["num_classes"],), F32),
    ]
    return [(prefix + n, s, dt) for n, s, dt in out]


def official_layout(c):
    """Every key of lang-seg's Lightning state_dict for config ``c``: [(name, shape, dtype)] in checkpoint order."""
    d, f, e = c["vit_dim"], c["features"], c["embed_dim"]
    out = clip_layout(c) + vit_layout(c)
    # resampling layer (Sequential index 4) per branch: ConvT k=s for upsampling, 3x3/s2 conv for /32 at patch 16
    if c["patch_size"] == 16:
        resample = {1: ("convT", 4), 2: ("convT", 2), 3: None, 4: ("conv", 3)}
    else:
        resample = {1: ("convT", 8), 2: ("convT", 4), 3: ("convT", 2), 4: None}
    for k in range(1, 5):
        ck = c["reassemble"][k - 1]
        a = "net.pretrained.act_postprocess%d." % k
        out += [
            (a + "0.project.0.weight", (d, 2 * d), F32),
            (a + "0.project.0.bias", (d,), F32),
            (a + "3.weight", (ck, d, 1, 1), F32),
            (a + "3.bias", (ck,), F32),
        ]
        if resample[k]:
            ks = resample[k][1]
            out += [(a + "4.weight", (ck, ck, ks, ks), F32), (a + "4.bias", (ck,), F32)]
    for k in range(1, 5):
        out.append(("net.scratch.layer%d_rn.weight" % k, (f, c["reassemble"][k - 1], 3, 3), F32))
    for k in range(1, 5):
        r = "net.scratch.refinenet%d." % k
        out += [(r + "out_conv.weight", (f, f, 1, 1), F32), (r + "out_conv.bias", (f,), F32)]
        for u in (1, 2):
            cu = r + "resConfUnit%d." % u
            out += [(cu + "conv1.weight", (f, f, 3, 3), F32), (cu + "conv2.weight", (f, f, 3, 3), F32)]
            for bn in ("bn1.", "bn2."):
                out += [(cu + bn + n, (f,), F32) for n in ("weight", "bias", "running_mean", "running_var")]
                out.append((cu + bn + "num_batches_tracked", (), I64))
    out += [("net.scratch.head1.weight", (e, f, 1, 1), F32), ("net.scratch.head1.bias", (e,), F32)]
    return out


def synth(layout, seed=0):
    """Deterministic random arrays for a layout (float16 values are exactly representable, non-trivial)."""
    rng = np.random.default_rng(seed)
    out = OrderedDict()
    for name, shape, dtype in layout:
        if dtype == I64:
            out[name] = np.array(100, dtype=np.int64).reshape(shape)
        else:
            out[name] = rng.standard_normal(shape).astype(dtype)
    return out


def tiny_official(seed=0, prefix=True):
    """Official-naming state for lseg_tiny_test (``net.`` prefix optional)."""
    sd = synth(official_layout(TINY), seed)
    if not prefix:
        sd = OrderedDict((k[4:], v) for k, v in sd.items())
    return sd


def to_big_vision(timm_sd, num_heads, augreg=True):
    """timm ViT state_dict (no prefix) -> big_vision / AugReg npz layout (inverse of timm's _load_weights)."""
    out = OrderedDict()
    d = timm_sd["cls_token"].shape[-1]
    hd = d // num_heads
    out["cls"] = timm_sd["cls_token"]
    out["embedding/kernel"] = timm_sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0)
    out["embedding/bias"] = timm_sd["patch_embed.proj.bias"]
    out["Transformer/posembed_input/pos_embedding"] = timm_sd["pos_embed"]
    i = 0
    mha, mlp, ln2 = (
        ("MultiHeadDotProductAttention_1", "MlpBlock_3", "LayerNorm_2")
        if augreg
        else ("MultiHeadDotProductAttention_0", "MlpBlock_0", "LayerNorm_1")
    )
    while "blocks.%d.norm1.weight" % i in timm_sd:
        t = lambda n: timm_sd["blocks.%d.%s" % (i, n)]  # noqa: E731
        b = "Transformer/encoderblock_%d/" % i
        out[b + "LayerNorm_0/scale"], out[b + "LayerNorm_0/bias"] = t("norm1.weight"), t("norm1.bias")
        w, bias = t("attn.qkv.weight"), t("attn.qkv.bias")
        for j, n in enumerate(("query", "key", "value")):
            out[b + mha + "/%s/kernel" % n] = w[j * d : (j + 1) * d].T.reshape(d, num_heads, hd)
            out[b + mha + "/%s/bias" % n] = bias[j * d : (j + 1) * d].reshape(num_heads, hd)
        out[b + mha + "/out/kernel"] = t("attn.proj.weight").T.reshape(num_heads, hd, d)
        out[b + mha + "/out/bias"] = t("attn.proj.bias")
        out[b + ln2 + "/scale"], out[b + ln2 + "/bias"] = t("norm2.weight"), t("norm2.bias")
        for r in (0, 1):
            out[b + mlp + "/Dense_%d/kernel" % r] = t("mlp.fc%d.weight" % (r + 1)).T
            out[b + mlp + "/Dense_%d/bias" % r] = t("mlp.fc%d.bias" % (r + 1))
        i += 1
    out["Transformer/encoder_norm/scale"] = timm_sd["norm.weight"]
    out["Transformer/encoder_norm/bias"] = timm_sd["norm.bias"]
    out["head/kernel"] = timm_sd["head.weight"].T
    out["head/bias"] = timm_sd["head.bias"]
    out["pre_logits/kernel"] = np.zeros((d, d), np.float32)  # some releases carry it; unused
    return OrderedDict((k, np.ascontiguousarray(v)) for k, v in out.items())
