"""A PyTorch stand-in for the official LSeg network's inference forward: the same-run baseline of the benchmarks.

Benchmark-side code only: torch is a test extra, and nothing in ``mindcv_lseg/`` imports this file. It is written
from ``docs/reference_numerics.md`` and computes what the reference computes, the way the reference computes it
(timm 0.4 ViT with explicit ``softmax(q @ k^T * scale) @ v`` and exact GELU, hooked block outputs with the
``project`` readout, the DPT reassemble and RefineNet fusion with the 1x1 conv after the x2 upsample, CLIP's text
tower with ``nn.MultiheadAttention`` and QuickGELU, tokenisation and text encoding in every call), in float32 (the
``*_fp32`` mode of the parity fixture: CLIP upcast, ``.half()`` before the similarity left out).
``tests/test_torch_baseline.py`` checks it against the fixture at the strict tier.

Its modules carry the official parameter names, including the tensors the forward never uses (CLIP's image tower,
the ViT's final norm and ImageNet head, ``refinenet4.resConfUnit1``), so an official Lightning checkpoint
(``state_dict`` under ``net.``) loads strictly with ``torch.load`` + ``load_state_dict``, and the resident weights
are the original's. ``random`` mode builds the full-size network with random weights and loads an in-memory copy
in the official layout (CLIP float16 as in the releases) through the same code, so its peak RSS includes a
checkpoint load without writing one to disk.

    python benchmarks/torch_lseg.py --model lseg_vitb32 --size 384 384 --labels 5          # random weights
    python benchmarks/torch_lseg.py --model lseg_vitl16_384 --ckpt demo_e200.ckpt --labels 150

prints one JSON line: load time, first and median call time, peak RSS (which includes loading the weights).
"""

import argparse
import json
import os
import resource
import sys
import time
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from bench_settings import MAX_LABELS, import_package, input_size, labels_for, median_time
from torch import nn

# The two ViT variants, as the package's entries name them (docs/reference_numerics.md, "Variants").
VARIANTS = {
    "lseg_vitb32": dict(
        patch=32,
        width=768,
        depth=12,
        heads=12,
        hooks=(2, 5, 8, 11),
        features=(96, 192, 384, 768),
        resize=(8, 4, 2, 0),  # > 0: transposed conv k = s = resize; 0: none; -2: 3x3 stride-2 conv
    ),
    "lseg_vitl16_384": dict(
        patch=16,
        width=1024,
        depth=24,
        heads=16,
        hooks=(5, 11, 17, 23),
        features=(256, 512, 1024, 1024),
        resize=(4, 2, 0, -2),
    ),
}
PRETRAIN_SIZE = 384  # the ViT position embeddings are stored for this input size
DECODER_WIDTH = 256
EMBED_DIM = 512  # CLIP ViT-B/32's text projection
CONTEXT_LENGTH = 77
# The reference's logit scale: a float32 constant exp(ln(1 / 0.07)), not stored in the checkpoint.
LOGIT_SCALE = (torch.ones([]) * np.log(1 / 0.07)).exp()


# ---------------------------------------------------------------------------------------------------------------
# timm 0.4 ViT (net.pretrained.model.*)


class Attention(nn.Module):
    """timm 0.4's attention: ``qkv`` laid out [q | k | v] with contiguous heads; ``softmax(q k^T * scale) v``."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):  # [B, N, C] -> [B, N, C]
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block, LayerNorm eps 1e-6."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)


class VisionTransformer(nn.Module):
    """timm's ViT with the reference's ``forward_flex``: any input size (multiple of the patch), position
    embedding resized on every call, outputs of the hooked blocks."""

    def __init__(self, patch: int, dim: int, depth: int, num_heads: int, num_classes: int = 1000):
        super().__init__()
        grid = PRETRAIN_SIZE // patch
        self.patch_size = patch
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, grid * grid + 1, dim) * 0.02)
        self.patch_embed = PatchEmbed(patch, dim)
        self.blocks = nn.ModuleList([Block(dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)  # ImageNet head: in the checkpoints, never used

    def resized_pos_embed(self, gs_h: int, gs_w: int):
        """Grid part resized bilinearly (half-pixel centres) to ``gs_h x gs_w``; the class row kept."""
        cls_row, grid = self.pos_embed[:, :1], self.pos_embed[0, 1:]
        gs_old = int(len(grid) ** 0.5)
        grid = grid.reshape(1, gs_old, gs_old, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(gs_h, gs_w), mode="bilinear")
        grid = grid.permute(0, 2, 3, 1).reshape(1, gs_h * gs_w, -1)
        return torch.cat([cls_row, grid], dim=1)

    def forward_flex(self, x, hooks: Sequence[int]) -> List:
        """[B, 3, H, W] -> the raw outputs [B, 1 + H/p * W/p, C] of the blocks ``hooks`` (class token first)."""
        b, _, h, w = x.shape
        pos_embed = self.resized_pos_embed(h // self.patch_size, w // self.patch_size)
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(b, -1, -1), x), dim=1)
        x = x + pos_embed
        hooked = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in hooks:  # the reference reads these through forward hooks
                hooked.append(x)
        self.norm(x)  # computed by the reference, never used
        return hooked


# ---------------------------------------------------------------------------------------------------------------
# Readout and reassemble (net.pretrained.act_postprocess{1..4}.*)


class ProjectReadout(nn.Module):
    """``project`` readout: [patch token, class token] (2C) -> Linear -> exact GELU -> C."""

    def __init__(self, dim: int):
        super().__init__()
        self.project = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU())

    def forward(self, x):  # [B, 1 + T, C] -> [B, T, C]
        readout = x[:, 0].unsqueeze(1).expand_as(x[:, 1:])
        return self.project(torch.cat((x[:, 1:], readout), -1))


class Transpose(nn.Module):
    def __init__(self, dim0: int, dim1: int):
        super().__init__()
        self.dim0, self.dim1 = dim0, dim1

    def forward(self, x):
        return x.transpose(self.dim0, self.dim1)


def _postprocess(dim: int, out: int, resize: int) -> nn.Sequential:
    """Index 0 readout, 1 transpose, 2 the fixed-size unflatten (skipped by the forward: it unflattens to the
    actual grid), 3 the 1x1 conv, 4 the transposed conv k = s = ``resize`` (> 0) or, for ``resize == -2``, the
    3x3 stride-2 conv."""
    layers = [ProjectReadout(dim), Transpose(1, 2), nn.Identity(), nn.Conv2d(dim, out, kernel_size=1)]
    if resize > 0:
        layers.append(nn.ConvTranspose2d(out, out, kernel_size=resize, stride=resize))
    elif resize == -2:
        layers.append(nn.Conv2d(out, out, kernel_size=3, stride=2, padding=1))
    return nn.Sequential(*layers)


class Pretrained(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.model = VisionTransformer(cfg["patch"], cfg["width"], cfg["depth"], cfg["heads"])
        self.hooks = cfg["hooks"]
        for i, (out, resize) in enumerate(zip(cfg["features"], cfg["resize"]), start=1):
            setattr(self, f"act_postprocess{i}", _postprocess(cfg["width"], out, resize))

    def forward(self, x) -> List:
        """``forward_vit``: [B, 3, H, W] -> the four reassembled maps (H/4, H/8, H/16, H/32 for both variants)."""
        h, w = x.shape[2:]
        p = self.model.patch_size
        layers = []
        for i, tokens in enumerate(self.model.forward_flex(x, self.hooks), start=1):
            post = getattr(self, f"act_postprocess{i}")
            y = post[0:2](tokens).unflatten(2, (h // p, w // p))
            layers.append(post[3:](y))
        return layers


# ---------------------------------------------------------------------------------------------------------------
# Decoder (net.scratch.*)


class ResidualConvUnit(nn.Module):
    """``x + BN(conv3x3(ReLU(BN(conv3x3(ReLU(x))))))``, bias-free convs, BatchNorm eps 1e-5."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(features)
        self.bn2 = nn.BatchNorm2d(features)
        self.activation = nn.ReLU(False)

    def forward(self, x):
        out = self.bn1(self.conv1(self.activation(x)))
        out = self.bn2(self.conv2(self.activation(out)))
        return out + x


class FeatureFusionBlock(nn.Module):
    """``out_conv(up2(RCU2(x + RCU1(skip))))``, the 1x1 conv after the x2 (``align_corners=True``) upsample."""

    def __init__(self, features: int):
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, kernel_size=1)
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x, skip=None):
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class Scratch(nn.Module):
    def __init__(self, in_features: Sequence[int]):
        super().__init__()
        for i, c in enumerate(in_features, start=1):
            setattr(self, f"layer{i}_rn", nn.Conv2d(c, DECODER_WIDTH, 3, padding=1, bias=False))
        for i in range(1, 5):
            setattr(self, f"refinenet{i}", FeatureFusionBlock(DECODER_WIDTH))
        self.head1 = nn.Conv2d(DECODER_WIDTH, EMBED_DIM, kernel_size=1)

    def forward(self, layers):
        """Four reassembled maps -> unnormalised pixel embeddings [B, 512, H/2, W/2]."""
        l1, l2, l3, l4 = (getattr(self, f"layer{i}_rn")(x) for i, x in enumerate(layers, start=1))
        path = self.refinenet4(l4)  # refinenet4.resConfUnit1 is never used
        path = self.refinenet3(path, l3)
        path = self.refinenet2(path, l2)
        path = self.refinenet1(path, l1)
        return self.head1(path)


# ---------------------------------------------------------------------------------------------------------------
# OpenAI CLIP ViT-B/32 (net.clip_pretrained.*): the text tower runs, the image tower is only held


class LayerNorm(nn.LayerNorm):
    """CLIP's LayerNorm: computed in float32 (eps 1e-5)."""

    def forward(self, x):
        return super().forward(x.type(torch.float32)).type(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, attn_mask=None):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(c_fc=nn.Linear(width, width * 4), gelu=QuickGELU(), c_proj=nn.Linear(width * 4, width))
        )
        self.ln_2 = LayerNorm(width)
        self.attn_mask = attn_mask  # a plain attribute, not in the state dict

    def forward(self, x):  # [L, N, D]
        mask = self.attn_mask.to(dtype=x.dtype, device=x.device) if self.attn_mask is not None else None
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, attn_mask=None):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, attn_mask) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class ClipVisual(nn.Module):
    """CLIP's image tower: in the checkpoints and resident in the original, never on LSeg's forward path."""

    def __init__(self, width: int = 768, layers: int = 12, heads: int = 12, patch: int = 32, resolution: int = 224):
        super().__init__()
        scale = width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((resolution // patch) ** 2 + 1, width))
        self.proj = nn.Parameter(scale * torch.randn(width, EMBED_DIM))
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)


class CLIP(nn.Module):
    """OpenAI CLIP ViT-B/32 with ``encode_text`` (width 512, 12 layers, 8 heads, context 77)."""

    def __init__(self, width: int = 512, layers: int = 12, heads: int = 8, vocab: int = 49408):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(CONTEXT_LENGTH, width) * 0.01)
        self.text_projection = nn.Parameter(torch.randn(width, EMBED_DIM) * width**-0.5)
        self.logit_scale = nn.Parameter(torch.ones([]) * np.log(1 / 0.07))  # CLIP's own, unused by LSeg
        self.visual = ClipVisual()
        mask = torch.empty(CONTEXT_LENGTH, CONTEXT_LENGTH).fill_(float("-inf")).triu_(1)
        self.transformer = Transformer(width, layers, heads, attn_mask=mask)
        self.token_embedding = nn.Embedding(vocab, width)
        self.ln_final = LayerNorm(width)

    def encode_text(self, text):
        """int64 tokens [N, 77] -> raw text features [N, 512] (the end-of-text token's feature, projected)."""
        x = self.token_embedding(text) + self.positional_embedding
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection


# ---------------------------------------------------------------------------------------------------------------
# The network


def tokenize_labels(labels: Sequence[str]) -> np.ndarray:
    """CLIP BPE ids [N, 77] (the package's tokenizer, imported without MindSpore when the package is not loaded)."""
    import_package()
    from mindcv_lseg.text.tokenizer import tokenize

    return tokenize(list(labels), context_length=CONTEXT_LENGTH)


class TorchLSeg(nn.Module):
    """The reference ``LSegNet`` (``arch_option`` 0, ``project`` readout), float32.

    ``forward(x, labels)``: ``x`` float32 [B, 3, H, W] normalised with mean = std = 0.5, H and W multiples of 32;
    ``labels`` a list of strings, tokenised and encoded on every call as the reference does -> logits
    [B, N, H, W].
    """

    def __init__(self, model: str):
        super().__init__()
        if model not in VARIANTS:
            raise ValueError(f"unknown model {model!r}; choose one of {', '.join(VARIANTS)}")
        cfg = VARIANTS[model]
        self.model_name = model
        self.clip_pretrained = CLIP()
        self.pretrained = Pretrained(cfg)
        self.scratch = Scratch(cfg["features"])
        self.logit_scale = LOGIT_SCALE  # a plain tensor attribute, as in the reference

    def pixel_embeddings(self, x):
        """[B, 3, H, W] -> unnormalised ``head1`` output [B, 512, H/2, W/2]."""
        return self.scratch(self.pretrained(x))

    def forward(self, x, labels: Sequence[str]):
        text = torch.from_numpy(tokenize_labels(labels).astype(np.int64))
        image_features = self.pixel_embeddings(x)
        text_features = self.clip_pretrained.encode_text(text)
        b, c, h, w = image_features.shape
        image_features = image_features.permute(0, 2, 3, 1).reshape(-1, c)
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        logits = self.logit_scale * image_features @ text_features.t()  # (scale * image) @ text^T
        logits = logits.view(b, h, w, -1).permute(0, 3, 1, 2)
        return F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=True)


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints in the official layout

PREFIX = "net."


def _clip_float16_names(clip: CLIP) -> set:
    """Names (under ``clip_pretrained.``) of the tensors the official checkpoints hold in float16: what
    ``clip.load`` converts (conv/linear weights and biases, attention in/out projections, ``text_projection``,
    ``visual.proj``)."""
    names = set()
    for mod_name, module in clip.named_modules():
        prefix = f"clip_pretrained.{mod_name}." if mod_name else "clip_pretrained."
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            names.update(prefix + p for p, v in module.named_parameters(recurse=False) if v is not None)
        elif isinstance(module, nn.MultiheadAttention):
            names.update(prefix + p for p in ("in_proj_weight", "in_proj_bias"))
    names.update(("clip_pretrained.text_projection", "clip_pretrained.visual.proj"))
    return names


def official_state_dict(net: TorchLSeg) -> "OrderedDict[str, torch.Tensor]":
    """A copy of ``net``'s weights as an official checkpoint's ``state_dict`` holds them: keys under ``net.``,
    CLIP's converted tensors in float16, the rest float32, BatchNorm counters int64."""
    half = _clip_float16_names(net.clip_pretrained)
    return OrderedDict(
        (PREFIX + k, v.detach().to(torch.float16) if k in half else v.detach().clone())
        for k, v in net.state_dict().items()
    )


def load_official(net: TorchLSeg, state: Dict[str, "torch.Tensor"], where: str = "state dict") -> TorchLSeg:
    """Load an official ``state_dict`` (keys under ``net.``) strictly; float16 tensors are upcast on copy."""
    if not state or not all(k.startswith(PREFIX) for k in state):
        raise ValueError(f"{where}: not an official LSeg state dict (every key must start with {PREFIX!r})")
    state = {k[len(PREFIX) :]: v for k, v in state.items()}
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise ValueError(
            f"{where} does not fit {net.model_name}: {len(missing)} missing keys {missing[:2]}, {len(unexpected)} "
            f"unexpected {unexpected[:2]}, {len(wrong)} of another shape {wrong[:2]}; is it a checkpoint of another "
            f"backbone?"
        )
    net.load_state_dict(state, strict=True)
    return net


def build(model: str, ckpt: Optional[str] = None) -> TorchLSeg:
    """The network in eval mode: weights from ``ckpt`` (an official Lightning checkpoint, ``torch.load``-ed whole
    as Lightning does), or random weights loaded from an in-memory copy in the official layout (``ckpt=None``)."""
    with torch.no_grad():
        net = TorchLSeg(model)
        if ckpt:
            # trusted input, as for the reference's own loader: Lightning checkpoints pickle more than tensors
            state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
            where = ckpt
        else:
            state, where = official_state_dict(net), "random weights"
        load_official(net, state, where)
        del state
    return net.eval()


# ---------------------------------------------------------------------------------------------------------------
# Timing


def measure(
    model: str,
    size: Tuple[int, int] = (384, 384),
    labels: Union[int, Sequence[str]] = 5,
    warmup: int = 2,
    runs: int = 5,
    ckpt: Optional[str] = None,
    threads: Optional[int] = None,
) -> dict:
    """Time the baseline's forward (tokenisation and text encoding included in every call), float32,
    ``torch.inference_mode()``, ``threads`` (default: all cores). Run it in a process of its own: the peak RSS
    it reports is the process's, weights loading included."""
    threads = threads or os.cpu_count()
    torch.set_num_threads(threads)
    labels = labels_for(labels) if isinstance(labels, int) else list(labels)
    h, w = size
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (1, 3, h, w)).astype(np.float32))
    start = time.perf_counter()
    net = build(model, ckpt)
    load = time.perf_counter() - start
    with torch.inference_mode():
        start = time.perf_counter()
        out = net(x, labels)
        first = time.perf_counter() - start
        if tuple(out.shape) != (1, len(labels), h, w):
            raise RuntimeError(f"unexpected output shape {tuple(out.shape)}")
        median = median_time(lambda: net(x, labels), max(warmup - 1, 0), runs)
    return dict(
        model=model,
        impl="torch",
        torch_version=torch.__version__,
        threads=threads,
        size=[h, w],
        labels=len(labels),
        weights=ckpt or "random",
        load_s=load,
        first_s=first,
        forward_s=median,
        peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    )


def median_forward_s(model: str, size=(384, 384), labels: Union[int, Sequence[str]] = 5, warmup=2, runs=5) -> float:
    """Median time of one baseline call (text included) with random weights; see :func:`measure`."""
    return measure(model, size, labels, warmup, runs)["forward_s"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, choices=sorted(VARIANTS))
    ap.add_argument("--ckpt", default="", help="official Lightning checkpoint (default: random weights)")
    ap.add_argument(
        "--size", type=int, nargs="+", default=[384, 384], metavar="SIZE", help="input H or H W (default 384)"
    )
    ap.add_argument("--labels", type=int, default=5, help="5: the parity labels; more: the first N ADE20K labels")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    args = ap.parse_args(argv)
    try:
        size = input_size(args.size)
    except ValueError as e:
        ap.error(str(e))
    if args.ckpt and not os.path.isfile(args.ckpt):
        ap.error(f"--ckpt: no such file: {args.ckpt}")
    if not 1 <= args.labels <= MAX_LABELS:
        ap.error(f"--labels must be between 1 and {MAX_LABELS}, got {args.labels}")
    res = measure(args.model, size, args.labels, args.warmup, args.runs, args.ckpt or None, args.threads)
    print("RESULT " + json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
