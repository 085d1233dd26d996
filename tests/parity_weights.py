"""Synthetic LSeg checkpoints in the official key layout, for the parity tests (numpy only; torch for ``.ckpt``).

The expected outputs in ``tests/fixtures/parity/`` were computed by the official PyTorch implementation on weights
that depend only on ``(seed, key name)``. This module regenerates those weights bit-exactly from the manifests in the
same folder (key order, shape, dtype and owning module type of every tensor), so no large file has to be stored::

    python tests/parity_weights.py --variant clip_vitb32_384 --seed 0 --out lseg_b32_s0.npz
    python tests/parity_weights.py --variant zs_clip_resnet101 --seed 0 --out lseg_zs_rn101_s0.ckpt  # needs torch

Each run prints the checkpoint digest: sha256 over (name, dtype, shape, little-endian bytes) of every tensor in
manifest order. The published digests are in ``DIGESTS``.

The rule (docs/reference_numerics.md, "Synthetic parity weights", says why):

* noise: for each key, a PCG64 stream seeded with ``SeedSequence([seed, crc32(utf-8 key)])``; each raw 64-bit word
  keeps its top 24 bits ``b`` and becomes ``z = (2 * (b + 0.5) / 2**24 - 1) * sqrt(3)`` in float64 (zero mean, unit
  variance, only exactly-rounded operations);
* value = ``z * std + mean`` in float64, rounded once to the manifest dtype;
* ``(mean, std)`` per key, first matching row wins:

  ============================================================  ==========================================
  key                                                           mean, std
  ============================================================  ==========================================
  ResNet bottleneck ``<stage>.<i>.bn3.weight`` (BatchNorm)      g, 0.1 g with g = 1/sqrt(blocks in stage)
  int64 (BatchNorm ``num_batches_tracked``)                     constant 100
  ``logit_scale``                                               constant ln(1/0.07)
  LayerNorm/BatchNorm weight, bias, running_mean, running_var   1, 0.1 / 0, 0.05 / 0, 0.1 / 1, 0.15
  position/class embeddings, ``cls_token``                      0, 0.2
  token embedding                                               0, 0.5
  any bias (also ``in_proj_bias``)                              0, 0.02
  weights and projections                                       0, gain / sqrt(fan_in)
  ============================================================  ==========================================

  ``gain`` is 1/sqrt(number of blocks of that transformer) for the output projections of residual branches
  (``attn.proj``, ``mlp.fc2``, ``attn.out_proj``, ``mlp.c_proj``), else 1. ``fan_in``: Linear ``in``; Conv2d
  ``in * kh * kw``; ConvTranspose2d ``in * (kh / sh) * (kw / sw)``; CLIP's ``text_projection`` and ``visual.proj``
  (applied as ``x @ P``): ``shape[0]``.
"""

import argparse
import hashlib
import json
import math
import os
import re
import sys
import zipfile
import zlib
from collections import OrderedDict
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

FIXTURE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "parity")
GENERATOR = "lseg-parity-synth-v1"
VARIANTS = ("clip_vitb32_384", "clip_vitl16_384", "zs_clip_resnet101")
DIGESTS = {
    ("clip_vitb32_384", 0): "ec5b7cfcf9ca37a03d7f7e7d858e75496be71006b2d2b01a74d174a9286383a2",
    ("clip_vitl16_384", 0): "0141898f773f5c62969899f074c0187c3ad0175852815394f425e948c8ce95c7",
    ("zs_clip_resnet101", 0): "1a889c7c4d232df54cb9ca2af5379f1dbf8ce0f4bfb50d2ae02dd8c6f766d1c7",
}

_TRANSFORMER_BLOCK = re.compile(r"^(?P<stack>.*\.(?:blocks|resblocks))\.(?P<index>\d+)\.")
_RESIDUAL_OUTPUT = re.compile(r"\.(?:attn\.proj|mlp\.fc2|attn\.out_proj|mlp\.c_proj)\.weight$")
# torchvision bottleneck: '<stage>.<i>.bn3.weight', the stage being 'pretrained.layerK' or 'pretrained.layer1.4'
_BOTTLENECK_BN3 = re.compile(r"^(?P<stack>.*\.pretrained\.layer\d(?:\.\d+)?)\.(?P<index>\d+)\.bn3\.weight$")
_NORM_STATS = {"weight": (1.0, 0.1), "bias": (0.0, 0.05), "running_mean": (0.0, 0.1), "running_var": (1.0, 0.15)}
_EMBEDDINGS = ("cls_token", "pos_embed", "positional_embedding", "class_embedding")


def manifest_path(variant: str) -> str:
    return os.path.join(FIXTURE_DIR, f"manifest_{variant}.json")


def load_manifest(variant: str) -> dict:
    """The manifest of ``variant``: ``keys`` is the list of tensors in checkpoint order."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    with open(manifest_path(variant), encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest["variant"] != variant:
        raise ValueError(f"{manifest_path(variant)} describes {manifest['variant']!r}, not {variant!r}")
    return manifest


def _stack_sizes(entries, pattern) -> Dict[str, int]:
    """Number of distinct block indices under each stack prefix matched by ``pattern``."""
    indices: Dict[str, set] = {}
    for entry in entries:
        m = pattern.match(entry["name"])
        if m:
            indices.setdefault(m.group("stack"), set()).add(m.group("index"))
    return {stack: len(ids) for stack, ids in indices.items()}


def _fan_in(entry) -> int:
    shape, kind, leaf = entry["shape"], entry["module_type"], entry["name"].rsplit(".", 1)[-1]
    if leaf in ("text_projection", "proj") and kind in ("CLIP", "VisionTransformer"):
        return shape[0]
    if kind == "ConvTranspose2d":
        (kh, kw), (sh, sw) = shape[2:], entry["stride"]
        return shape[0] * max(1, kh // sh) * max(1, kw // sw)
    if len(shape) == 4:
        return shape[1] * shape[2] * shape[3]
    if len(shape) == 2:
        return shape[1]
    raise ValueError(f"no fan-in for {entry['name']} {shape}")


class _Rule:
    """Chooses ``(mean, std, constant)`` for each manifest entry of one variant."""

    def __init__(self, entries):
        self.transformer_depth = _stack_sizes(entries, _TRANSFORMER_BLOCK)
        self.stage_blocks = _stack_sizes(entries, _BOTTLENECK_BN3)

    def __call__(self, entry) -> Tuple[float, float, bool]:
        name, kind = entry["name"], entry["module_type"]
        leaf = name.rsplit(".", 1)[-1]
        bn3 = _BOTTLENECK_BN3.match(name)
        if bn3 and kind == "BatchNorm2d":
            g = 1.0 / math.sqrt(self.stage_blocks[bn3.group("stack")])
            return g, 0.1 * g, False
        if entry["dtype"] == "int64":
            return 100.0, 0.0, True
        if leaf == "logit_scale":
            return float(np.log(1.0 / 0.07)), 0.0, True
        if kind in ("LayerNorm", "BatchNorm2d") and leaf in _NORM_STATS:
            return _NORM_STATS[leaf] + (False,)
        if leaf in _EMBEDDINGS:
            return 0.0, 0.2, False
        if kind == "Embedding" and leaf == "weight":
            return 0.0, 0.5, False
        if leaf in ("bias", "in_proj_bias"):
            return 0.0, 0.02, False
        if leaf in ("weight", "in_proj_weight", "text_projection", "proj"):
            gain = 1.0
            if _RESIDUAL_OUTPUT.search(name):
                gain = 1.0 / math.sqrt(self.transformer_depth[_TRANSFORMER_BLOCK.match(name).group("stack")])
            return 0.0, gain / math.sqrt(_fan_in(entry)), False
        raise ValueError(f"no rule for {name} ({kind}, {entry['shape']})")


def unit_noise(key: str, seed: int, count: int) -> np.ndarray:
    """``count`` float64 values uniform on (-sqrt 3, sqrt 3), a function of (seed, key) only."""
    stream = np.random.PCG64(np.random.SeedSequence([int(seed), zlib.crc32(key.encode("utf-8"))]))
    top24 = (stream.random_raw(count).astype(np.uint64) >> np.uint64(40)).astype(np.float64)
    return (2.0 * ((top24 + 0.5) * 2.0**-24) - 1.0) * math.sqrt(3.0)


def synthetic_tensors(
    manifest: dict, seed: int, names: Optional[Sequence[str]] = None
) -> Iterator[Tuple[str, np.ndarray]]:
    """Yield ``(key, array)`` in manifest order, one tensor at a time (ViT-L/16 holds 1.65 GiB in total);
    only the keys in ``names`` if given (their values do not change)."""
    rule = _Rule(manifest["keys"])
    for entry in manifest["keys"]:
        if names is not None and entry["name"] not in names:
            continue
        mean, std, constant = rule(entry)
        shape = tuple(entry["shape"])
        count = math.prod(shape)
        values = np.full(count, mean) if constant else unit_noise(entry["name"], seed, count) * std + mean
        yield entry["name"], values.astype(entry["dtype"]).reshape(shape)


class Digest:
    """sha256 over (name, dtype, shape, little-endian C-order bytes) of each tensor, fed in checkpoint order."""

    def __init__(self):
        self._sha = hashlib.sha256()

    def update(self, name: str, array: np.ndarray) -> None:
        for part in (name, str(array.dtype), str(tuple(array.shape))):
            self._sha.update(part.encode("utf-8"))
        self._sha.update(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes())

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def state_digest(tensors) -> str:
    """Digest of an iterable of ``(name, array)`` pairs (or a mapping) in the given order."""
    digest = Digest()
    for name, array in tensors.items() if hasattr(tensors, "items") else tensors:
        digest.update(name, np.asarray(array))
    return digest.hexdigest()


def write_npz(path: str, variant: str, seed: int, names: Optional[Sequence[str]] = None) -> str:
    """Write the tensors (only ``names`` if given) as ``path``, an ``np.load``-able ``.npz`` keyed by the official
    names, one tensor at a time. Returns the digest."""
    digest = Digest()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in synthetic_tensors(load_manifest(variant), seed, names):
            digest.update(name, array)
            with archive.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
    return digest.hexdigest()


def train_sh_hyper_parameters(manifest: dict) -> dict:
    """The argparse namespace of lang-seg's ``train_lseg.py`` as its ``train.sh`` runs it (informative only: the
    official module never saves its hyper-parameters, so loaders must not rely on them)."""
    kw = manifest["lsegnet_kwargs"]
    return {
        "dataset": "ade20k",
        "data_path": "../datasets",
        "batch_size": 1,
        "exp_name": f"lseg_ade20k_{kw['backbone']}",
        "base_lr": 0.004,
        "weight_decay": 1e-4,
        "momentum": 0.9,
        "max_epochs": 240,
        "accumulate_grad_batches": 2,
        "backbone": kw["backbone"],
        "num_features": kw["features"],
        "arch_option": kw["arch_option"],
        "block_depth": kw["block_depth"],
        "activation": kw["activation"],
        "widehead": True,
        "no_scaleinv": False,
        "ignore_index": -1,
        "aux": False,
        "se_loss": False,
    }


def write_lightning_ckpt(
    path: str, variant: str, seed: int, hyper_parameters: bool = True, names: Optional[Sequence[str]] = None
) -> str:
    """Write a PyTorch-Lightning style checkpoint (``torch.save`` of a dict with ``state_dict``) as the official
    releases are. Zero-shot variants never carry ``hyper_parameters``. Needs torch. Returns the digest."""
    import torch

    manifest = load_manifest(variant)
    digest, state = Digest(), OrderedDict()
    for name, array in synthetic_tensors(manifest, seed, names):
        digest.update(name, array)
        state[name] = torch.from_numpy(array)
    sha = digest.hexdigest()
    ckpt = {
        "epoch": 199,
        "global_step": 0,
        "pytorch-lightning_version": "1.4.9",
        "state_dict": state,
        "callbacks": {},
        "optimizer_states": [],
        "lr_schedulers": [],
        "synthetic_weights": {"generator": GENERATOR, "variant": variant, "seed": seed, "sha256": sha},
    }
    if hyper_parameters and not variant.startswith("zs_"):
        ckpt["hyper_parameters"] = train_sh_hyper_parameters(manifest)
    torch.save(ckpt, path)
    return sha


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic LSeg checkpoint in the official key layout.")
    parser.add_argument("--variant", required=True, choices=VARIANTS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="*.npz (numpy only) or *.ckpt (Lightning layout, needs torch)")
    parser.add_argument("--no-hparams", action="store_true", help="omit 'hyper_parameters' from a .ckpt")
    args = parser.parse_args(argv)
    if args.out.endswith(".npz"):
        sha = write_npz(args.out, args.variant, args.seed)
    else:
        sha = write_lightning_ckpt(args.out, args.variant, args.seed, hyper_parameters=not args.no_hparams)
    expected = DIGESTS.get((args.variant, args.seed))
    print(json.dumps({"variant": args.variant, "seed": args.seed, "out": args.out, "sha256": sha}))
    if expected and sha != expected:
        print(f"error: digest differs from the published {expected}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
