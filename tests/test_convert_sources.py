"""Conversion without torch: npz (official layout, big_vision), safetensors (timm), MindSpore round trip, failures.

All files are tiny (lseg_tiny_test) but use the exact key layouts of the real releases.
"""

import json
import os
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
from _convert_synth import REPO, TINY, VITB32, VITL16, official_layout, synth, tiny_official, to_big_vision
from parity_weights import load_manifest

from mindcv_lseg.checkpoint import (
    CheckpointFormatError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    CheckpointTruncatedError,
    load_checkpoint_checked,
)
from mindcv_lseg.convert import ConvertError, convert_checkpoint, convert_state, model_param_shapes, read_checkpoint
from mindcv_lseg.convert.keymap import official_to_mindspore_name
from mindcv_lseg.convert.readers import LazyStateDict, SourceState


@pytest.fixture(scope="module")
def tiny_shapes():
    return model_param_shapes("lseg_tiny_test")


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    sd = tiny_official(seed=1)
    path = str(tmp_path_factory.mktemp("src") / "tiny_official.npz")
    np.savez(path, **sd)
    return path, sd


def _ckpt(path):
    return OrderedDict((k, v.asnumpy()) for k, v in load_checkpoint_checked(path).items())


def _expect_from_official(sd, shapes):
    """Expected MindSpore params: official value (float16 upcast exactly) under the keymap's name."""
    out = {}
    for k, v in sd.items():
        n = official_to_mindspore_name(k)
        if n is not None and n in shapes:
            out[n] = v.astype(np.float32)
    return out


# ---- layout helper is the real layout -----------------------------------------------------------------------------
@pytest.mark.parametrize("variant,cfg", [("clip_vitb32_384", VITB32), ("clip_vitl16_384", VITL16)])
def test_synthetic_layout_equals_public_manifest(variant, cfg):
    manifest = load_manifest(variant)["keys"]
    want = [(e["name"], tuple(e["shape"]), e["dtype"]) for e in manifest]
    assert official_layout(cfg) == want


# ---- official layout .npz ------------------------------------------------------------------------------------------
def test_npz_official_exact(tiny_npz, tiny_shapes, tmp_path):
    path, sd = tiny_npz
    dst = str(tmp_path / "out.ckpt")
    report = convert_checkpoint("lseg_tiny_test", path, dst, shapes=tiny_shapes)
    got = _ckpt(dst)
    want = _expect_from_official(sd, tiny_shapes)
    assert set(got) == set(tiny_shapes) == set(want)
    for n in got:
        assert got[n].dtype == np.float32
        np.testing.assert_array_equal(got[n], want[n], err_msg=n)
    # float16 CLIP weights were upcast exactly
    n16 = [k for k, v in sd.items() if v.dtype == np.float16 and official_to_mindspore_name(k)]
    assert sorted(report.upcast) == sorted(n16) and len(n16) == 2 * 8 + 1
    text = "\n".join(report.lines())
    assert "net.clip_pretrained.visual.*  (CLIP image tower, unused by LSeg)" in text
    assert "net.pretrained.model.head.*" in text
    assert "17 float16 tensors upcast exactly to float32" in text
    assert sorted(os.listdir(tmp_path)) == ["out.ckpt"]


def test_bare_state_dict_without_net_prefix(tmp_path, tiny_shapes):
    sd = tiny_official(seed=2, prefix=False)
    src = str(tmp_path / "bare.npz")
    np.savez(src, **sd)
    convert_checkpoint("lseg_tiny_test", src, str(tmp_path / "o.ckpt"), shapes=tiny_shapes)
    got = _ckpt(str(tmp_path / "o.ckpt"))
    want = _expect_from_official(sd, tiny_shapes)
    assert set(got) == set(want)
    assert all(np.array_equal(got[n], want[n]) for n in got)


def test_part_text_from_lseg_and_mindspore_roundtrip(tiny_npz, tiny_shapes, tmp_path):
    path, sd = tiny_npz
    full = str(tmp_path / "full.ckpt")
    convert_checkpoint("lseg_tiny_test", path, full, shapes=tiny_shapes)
    # MindSpore checkpoint of this project -> same bytes again (round trip, kind detected from content)
    again = str(tmp_path / "again.safetensors")
    rep = convert_checkpoint("lseg_tiny_test", full, again, shapes=tiny_shapes)
    assert rep.kind == "mindspore" and rep.layout == "mindspore"
    a, b = _ckpt(full), OrderedDict((k, v.asnumpy()) for k, v in load_checkpoint_checked(again).items())
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    # --part text from an LSeg checkpoint: only clip_text.*
    part = str(tmp_path / "text.ckpt")
    rep = convert_checkpoint("lseg_tiny_test", path, part, part="text", shapes=tiny_shapes)
    got = _ckpt(part)
    assert got and all(k.startswith("clip_text.") for k in got)
    assert set(got) == {k for k in tiny_shapes if k.startswith("clip_text.")}
    assert any(k.startswith("scratch.") for k in rep.not_converted)


# ---- timm safetensors / big_vision npz ------------------------------------------------------------------------------
def _tiny_timm(seed=3):
    from _convert_synth import vit_layout

    return synth(vit_layout(TINY, prefix=""), seed)


def test_timm_safetensors_image_part(tmp_path, tiny_shapes):
    from safetensors.numpy import save_file

    sd = _tiny_timm()
    src = str(tmp_path / "vit.bin")  # extension says nothing: detected from content
    save_file(dict(sd), src)
    dst = str(tmp_path / "vit.ckpt")
    rep = convert_checkpoint("lseg_tiny_test", src, dst, shapes=tiny_shapes)
    assert rep.kind == "safetensors" and rep.layout == "timm" and rep.parts == ("image",)
    got = _ckpt(dst)
    assert set(got) == {k for k in tiny_shapes if k.startswith("encoder.vit.")}
    want = _expect_from_official(OrderedDict(("net.pretrained.model." + k, v) for k, v in sd.items()), tiny_shapes)
    for n in got:
        np.testing.assert_array_equal(got[n], want[n], err_msg=n)
    assert any(k.startswith("encoder.reassemble.") for k in rep.not_converted)
    with pytest.raises(ConvertError, match="--part image"):
        convert_checkpoint("lseg_tiny_test", src, dst, part="text", shapes=tiny_shapes)


@pytest.mark.parametrize("augreg", [True, False])
def test_big_vision_npz_mapped_exactly(tmp_path, tiny_shapes, augreg):
    sd = _tiny_timm(seed=4)
    bv = to_big_vision(sd, num_heads=2, augreg=augreg)
    src = str(tmp_path / "bv.npz")
    np.savez(src, **bv)
    dst = str(tmp_path / "bv.ckpt")
    rep = convert_checkpoint("lseg_tiny_test", src, dst, shapes=tiny_shapes)
    assert rep.layout == "big_vision"
    assert ("pre_logits/kernel", "big_vision pre-logits / extras, unused by LSeg") in rep.dropped
    got = _ckpt(dst)
    want = _expect_from_official(OrderedDict(("net.pretrained.model." + k, v) for k, v in sd.items()), tiny_shapes)
    assert set(got) == {k for k in tiny_shapes if k.startswith("encoder.vit.")}
    for n in got:
        np.testing.assert_array_equal(got[n], want[n], err_msg=n)


def test_big_vision_layout_by_hand():
    """q/k/v kernels [D, heads, hd] -> fused qkv rows; out kernel [heads, hd, D]; conv kernel HWIO -> OIHW."""
    from mindcv_lseg.convert.sources import to_official

    d, h = 4, 2
    q = np.arange(d * d, dtype=np.float32).reshape(d, h, d // h)
    k, v = q + 100, q + 200
    bv = {
        "cls": np.zeros((1, 1, d), np.float32),
        "embedding/kernel": np.arange(2 * 2 * 3 * d, dtype=np.float32).reshape(2, 2, 3, d),
        "embedding/bias": np.zeros(d, np.float32),
        "Transformer/posembed_input/pos_embedding": np.zeros((1, 5, d), np.float32),
        "Transformer/encoder_norm/scale": np.ones(d, np.float32),
        "Transformer/encoder_norm/bias": np.zeros(d, np.float32),
    }
    b = "Transformer/encoderblock_0/"
    m = b + "MultiHeadDotProductAttention_1/"
    bv.update(
        {
            m + "query/kernel": q,
            m + "key/kernel": k,
            m + "value/kernel": v,
            m + "query/bias": np.array([[1, 2], [3, 4]], np.float32),
            m + "key/bias": np.zeros((h, 2), np.float32),
            m + "value/bias": np.zeros((h, 2), np.float32),
            m + "out/kernel": np.arange(d * d, dtype=np.float32).reshape(h, d // h, d),
            m + "out/bias": np.zeros(d, np.float32),
        }
    )
    for ln in ("LayerNorm_0", "LayerNorm_2"):
        bv[b + ln + "/scale"], bv[b + ln + "/bias"] = np.ones(d, np.float32), np.zeros(d, np.float32)
    for r in (0, 1):
        bv[b + "MlpBlock_3/Dense_%d/kernel" % r] = np.arange(d * d, dtype=np.float32).reshape(d, d)
        bv[b + "MlpBlock_3/Dense_%d/bias" % r] = np.zeros(d, np.float32)
    st = to_official(LazyStateDict({n: (lambda a=a: a) for n, a in bv.items()}, {n: a.shape for n, a in bv.items()}))
    p = "net.pretrained.model."
    qkv = st.tensors[p + "blocks.0.attn.qkv.weight"]
    # row o of q = output feature o = (head o//2, dim o%2); column i = input feature i: W[o, i] = q[i, o//2, o%2]
    for o in range(d):
        for i in range(d):
            assert qkv[o, i] == q[i, o // 2, o % 2] and qkv[d + o, i] == k[i, o // 2, o % 2]
            assert qkv[2 * d + o, i] == v[i, o // 2, o % 2]
    np.testing.assert_array_equal(st.tensors[p + "blocks.0.attn.qkv.bias"][:4], [1, 2, 3, 4])
    out = bv[m + "out/kernel"]
    proj = st.tensors[p + "blocks.0.attn.proj.weight"]
    assert all(proj[o, i] == out[i // 2, i % 2, o] for o in range(d) for i in range(d))
    conv = st.tensors[p + "patch_embed.proj.weight"]
    assert conv.shape == (d, 3, 2, 2) and conv[1, 2, 0, 1] == bv["embedding/kernel"][0, 1, 2, 1]
    assert np.array_equal(st.tensors[p + "blocks.0.mlp.fc1.weight"], bv[b + "MlpBlock_3/Dense_0/kernel"].T)


# ---- failures ------------------------------------------------------------------------------------------------------
def test_missing_keys_and_atomicity(tiny_npz, tiny_shapes, tmp_path):
    _, sd = tiny_npz
    sd = OrderedDict(sd)
    del sd["net.scratch.head1.bias"], sd["net.clip_pretrained.ln_final.weight"]
    src = str(tmp_path / "broken.npz")
    np.savez(src, **sd)
    dst = tmp_path / "dst.ckpt"
    dst.write_bytes(b"previous content")
    with pytest.raises(CheckpointMismatchError) as ei:
        convert_checkpoint("lseg_tiny_test", src, str(dst), shapes=tiny_shapes)
    msg = str(ei.value)
    assert "missing" in msg and "scratch.head1.bias" in msg and "clip_text.ln_final.gamma" in msg
    assert dst.read_bytes() == b"previous content"
    assert sorted(os.listdir(tmp_path)) == ["broken.npz", "dst.ckpt"]


@pytest.mark.slow
def test_wrong_variant_names_keys_and_shapes():
    """ViT-L/16 official keys against lseg_vitb32: keys and both shapes in the message, variant guessed."""
    shapes = model_param_shapes("lseg_vitb32")
    layout = official_layout(VITL16)
    zero = np.zeros((), np.float32)
    state = LazyStateDict(
        {n: (lambda s=s: np.broadcast_to(zero, s)) for n, s, _ in layout}, {n: s for n, s, _ in layout}
    )
    with pytest.raises(CheckpointMismatchError) as ei:
        convert_state(SourceState("vitl16.ckpt", "torch", state), shapes, src_name="vitl16.ckpt")
    msg = str(ei.value)
    assert "net.pretrained.model.pos_embed" in msg and "(1, 577, 1024) vs (1, 145, 768)" in msg
    assert "net.pretrained.model.blocks.12.norm1.weight" in msg  # unexpected (ViT-L has 24 blocks)
    assert "use --model lseg_vitl16_384" in msg


def test_not_a_checkpoint_truncated_missing(tmp_path, tiny_npz):
    with pytest.raises(CheckpointNotFoundError):
        read_checkpoint(str(tmp_path / "nope.ckpt"))
    html = tmp_path / "demo_e200.ckpt"
    html.write_bytes(b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>")
    with pytest.raises(CheckpointFormatError, match="HTML page"):
        read_checkpoint(str(html))
    data = open(tiny_npz[0], "rb").read()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(CheckpointTruncatedError, match="truncated"):
        read_checkpoint(str(cut))
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointTruncatedError, match="empty"):
        read_checkpoint(str(empty))


def test_safetensors_truncated(tmp_path):
    from safetensors.numpy import save_file

    src = str(tmp_path / "a.safetensors")
    save_file({"cls_token": np.ones((1, 1, 8), np.float32), "pos_embed": np.ones((1, 5, 8), np.float32)}, src)
    data = open(src, "rb").read()
    open(src, "wb").write(data[:-16])
    with pytest.raises(CheckpointTruncatedError, match="truncated"):
        read_checkpoint(src)


def test_safetensors_bf16_f16_decoded(tmp_path):
    """Hand-built safetensors (our own header parser): F16 kept, BF16 decoded exactly to float32."""
    vals = np.array([1.0, -2.5, 3.140625, 1e-3], np.float32)
    bf = (vals.view(np.uint32) >> 16).astype("<u2")  # exact for these values' top halves
    f16 = vals.astype("<f2")
    header = {
        "a": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]},
        "b": {"dtype": "F16", "shape": [4], "data_offsets": [8, 16]},
    }
    hb = json.dumps(header).encode()
    path = tmp_path / "h.safetensors"
    path.write_bytes(len(hb).to_bytes(8, "little") + hb + bf.tobytes() + f16.tobytes())
    st = read_checkpoint(str(path))
    a = st.tensors["a"]
    assert a.dtype == np.float32 and a.shape == (2, 2)
    np.testing.assert_array_equal(a.ravel(), (bf.astype(np.uint32) << 16).view(np.float32))
    assert st.tensors["b"].dtype == np.float16 and np.array_equal(st.tensors["b"], f16)
    assert st.meta["bfloat16"] == ["a"]


# ---- CLI ---------------------------------------------------------------------------------------------------------
def _cli(*args):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "convert.py"), *args], capture_output=True, text=True, timeout=300
    )


def test_cli_success_and_help(tiny_npz, tmp_path):
    dst = str(tmp_path / "cli.ckpt")
    r = _cli("--model", "lseg_tiny_test", "--src", tiny_npz[0], "--dst", dst)
    assert r.returncode == 0, r.stderr
    assert "dropped" in r.stdout and "kept" in r.stdout and "summary:" in r.stdout
    assert set(_ckpt(dst)) == set(model_param_shapes("lseg_tiny_test"))
    h = _cli("--help")
    assert h.returncode == 0 and "TorchScript" in h.stdout and "--part" in h.stdout and "big_vision" in h.stdout


@pytest.mark.slow
def test_cli_failures_exit_2_no_traceback(tmp_path, tiny_npz):
    html = tmp_path / "page.ckpt"
    html.write_bytes(b"<html><body>Sorry</body></html>")
    cut = tmp_path / "cut.npz"
    data = open(tiny_npz[0], "rb").read()
    cut.write_bytes(data[: len(data) // 2])
    cases = {str(tmp_path / "missing.ckpt"): "not found", str(html): "not a checkpoint", str(cut): "truncated"}
    dst = tmp_path / "out.ckpt"
    for src, words in cases.items():
        r = _cli("--model", "lseg_tiny_test", "--src", src, "--dst", str(dst))
        assert r.returncode == 2, (src, r.stdout, r.stderr)
        assert words in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not dst.exists()


def test_training_checkpoint_as_source(tiny_npz, tiny_shapes, tmp_path):
    """A training checkpoint (params + optimizer state + scalars + strings) converts to the bare network weights."""
    from mindcv_lseg.checkpoint import save_checkpoint_atomic

    path, _ = tiny_npz
    full = str(tmp_path / "full.ckpt")
    convert_checkpoint("lseg_tiny_test", path, full, shapes=tiny_shapes)
    params = _ckpt(full)
    train = dict(params)
    train.update({"moments." + k: np.zeros_like(v) for k, v in list(params.items())[:5]})
    save_checkpoint_atomic(train, str(tmp_path / "train.ckpt"), append_dict={"epoch": 4, "train_config": "lr: 1"})
    out = str(tmp_path / "clean.ckpt")
    rep = convert_checkpoint("lseg_tiny_test", str(tmp_path / "train.ckpt"), out, shapes=tiny_shapes)
    assert rep.layout == "mindspore"
    got = _ckpt(out)
    assert set(got) == set(params) and all(np.array_equal(got[k], params[k]) for k in got)


def test_timm_224_weights_for_384_model_hint(tmp_path, tiny_shapes):
    """A ViT pre-trained at another resolution: the message says so (pos_embed tokens and pixel sizes)."""
    from safetensors.numpy import save_file

    sd = _tiny_timm()
    sd["pos_embed"] = np.zeros((1, 10, 64), np.float32)  # 3x3 grid (48 px) instead of 4x4 (64 px)
    src = str(tmp_path / "vit48.safetensors")
    save_file(dict(sd), src)
    with pytest.raises(
        CheckpointMismatchError, match=r"has 10 tokens \(48 px images\) but this model needs 17 \(64 px\)"
    ):
        convert_checkpoint("lseg_tiny_test", src, str(tmp_path / "o.ckpt"), shapes=tiny_shapes)
