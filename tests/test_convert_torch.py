"""PyTorch formats read WITHOUT torch (torch is used here only to write the test files):
Lightning checkpoints, bare / legacy state_dicts, TorchScript CLIP archives, malicious pickles, corrupt archives,
and the public parity checkpoint (Lightning .ckpt vs .npz -> bit-identical conversions).
"""

import argparse
import os
import subprocess
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _convert_synth import REPO, tiny_official  # noqa: E402

from mindcv_lseg.checkpoint import CheckpointTruncatedError, load_checkpoint_checked  # noqa: E402
from mindcv_lseg.convert import (  # noqa
    UnsafePickleError,
    convert_checkpoint,
    convert_state,
    model_param_shapes,
    read_checkpoint,
)
from mindcv_lseg.convert.keymap import official_to_mindspore_name  # noqa: E402


@pytest.fixture(scope="module")
def tiny_shapes():
    return model_param_shapes("lseg_tiny_test")


def _ckpt(path):
    return OrderedDict((k, v.asnumpy()) for k, v in load_checkpoint_checked(path).items())


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a)) if a.ndim else torch.tensor(a)


class LossLogger:  # stands for a Lightning callback class used as a dict key / pickled object
    def __init__(self):
        self.best = 0.5


# ---- readers: dtypes, views ------------------------------------------------------------------------------------------
def test_reader_dtypes_and_views(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    sd = OrderedDict(
        half=torch.tensor([1.0, -2.0, 65504.0, 6e-8], dtype=torch.float16),
        bf16=torch.tensor([1.0, -3.5, 3.140625, 1e30], dtype=torch.bfloat16),
        i64=torch.tensor([2**40, -1, 100], dtype=torch.int64),
        transposed=base.t(),  # strides (1, 6)
        sliced=base[1:3, 2:5],  # storage offset 8, row stride 6
        shared_a=base,
        scalar=torch.tensor(7.25),
    )
    path = str(tmp_path / "x.pt")
    torch.save(sd, path)
    st = read_checkpoint(path)
    assert st.kind == "torch" and list(st.tensors) == list(sd)
    for k, v in sd.items():
        got = st.tensors[k]
        want = v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
        assert got.dtype == want.dtype and got.shape == want.shape, k
        np.testing.assert_array_equal(got, want, err_msg=k)
    assert st.meta["bfloat16"] == ["bf16"]


# ---- Lightning / bare / legacy -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_lightning(tmp_path_factory):
    d = tmp_path_factory.mktemp("pl")
    sd = tiny_official(seed=5)
    ckpt = {
        "epoch": 199,
        "global_step": 1234,
        "pytorch-lightning_version": "1.4.9",
        "state_dict": OrderedDict((k, _t(v)) for k, v in sd.items()),
        "callbacks": {LossLogger: {"best_model_score": torch.tensor(0.5), "dirpath": "ckpts/"}},
        "optimizer_states": [{"state": {0: {"momentum_buffer": torch.ones(3)}}, "param_groups": [{"lr": 0.1}]}],
        "lr_schedulers": [{"last_epoch": 3}],
        "hyper_parameters": argparse.Namespace(backbone="clip_vitl16_384"),
        "logger_obj": LossLogger(),
    }
    path = str(d / "tiny_pl.ckpt")
    torch.save(ckpt, path)
    npz = str(d / "tiny.npz")
    np.savez(npz, **sd)
    return path, npz, sd


def test_lightning_checkpoint_equals_npz(tiny_lightning, tiny_shapes, tmp_path):
    path, npz, sd = tiny_lightning
    a, b = str(tmp_path / "from_pl.ckpt"), str(tmp_path / "from_npz.ckpt")
    rep = convert_checkpoint("lseg_tiny_test", path, a, shapes=tiny_shapes)
    convert_checkpoint("lseg_tiny_test", npz, b, shapes=tiny_shapes)
    assert rep.kind == "torch" and rep.layout == "lseg"
    assert "test_convert_torch.LossLogger" in rep.placeholders and "argparse.Namespace" in rep.placeholders
    assert "optimizer_states" in rep.container_keys
    ga, gb = _ckpt(a), _ckpt(b)
    assert set(ga) == set(gb) == set(tiny_shapes)
    for k in ga:
        assert ga[k].dtype == np.float32 and np.array_equal(ga[k], gb[k]), k
    # float16 -> float32 exact, against the source values
    k16 = "net.clip_pretrained.transformer.resblocks.1.mlp.c_fc.weight"
    assert sd[k16].dtype == np.float16
    np.testing.assert_array_equal(ga[official_to_mindspore_name(k16)], sd[k16].astype(np.float32))
    with open(a, "rb") as fa, open(b, "rb") as fb:
        assert fa.read() == fb.read()


@pytest.mark.parametrize("legacy", [False, True])
def test_bare_state_dict_no_prefix_and_legacy_format(tmp_path, tiny_shapes, legacy):
    sd = tiny_official(seed=6, prefix=False)
    path = str(tmp_path / "bare.pth")
    torch.save(OrderedDict((k, _t(v)) for k, v in sd.items()), path, _use_new_zipfile_serialization=not legacy)
    rep = convert_checkpoint("lseg_tiny_test", path, str(tmp_path / "o.ckpt"), shapes=tiny_shapes)
    assert rep.kind == ("torch-legacy" if legacy else "torch")
    got = _ckpt(str(tmp_path / "o.ckpt"))
    for k, v in sd.items():
        n = official_to_mindspore_name(k)
        if n in tiny_shapes:
            np.testing.assert_array_equal(got[n], v.astype(np.float32), err_msg=k)


# ---- TorchScript CLIP ------------------------------------------------------------------------------------------------
class _MLP(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.c_fc = torch.nn.Linear(w, 4 * w)
        self.c_proj = torch.nn.Linear(4 * w, w)

    def forward(self, x):
        x = self.c_fc(x)
        return self.c_proj(x * torch.sigmoid(1.702 * x))


class _Block(torch.nn.Module):
    def __init__(self, w, heads, mask: torch.Tensor):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(w, heads)
        self.ln_1 = torch.nn.LayerNorm(w)
        self.mlp = _MLP(w)
        self.ln_2 = torch.nn.LayerNorm(w)
        self.attn_mask = mask  # plain tensor attribute, as in CLIP: in the archive, not in the state_dict

    def forward(self, x):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=self.attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class _Transformer(torch.nn.Module):
    def __init__(self, w, layers, heads, mask):
        super().__init__()
        self.resblocks = torch.nn.Sequential(*[_Block(w, heads, mask) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class _Visual(torch.nn.Module):
    def __init__(self, w, patch, image, embed):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, w, patch, patch, bias=False)
        self.class_embedding = torch.nn.Parameter(torch.randn(w))
        self.positional_embedding = torch.nn.Parameter(torch.randn((image // patch) ** 2 + 1, w))
        self.ln_pre = torch.nn.LayerNorm(w)
        self.transformer = _Transformer(w, 1, 2, torch.zeros(5, 5))
        self.ln_post = torch.nn.LayerNorm(w)
        self.proj = torch.nn.Parameter(torch.randn(w, embed))

    def forward(self, x):
        x = self.conv1(x).flatten(2).permute(2, 0, 1)
        return self.ln_post(self.transformer(self.ln_pre(x)))[0] @ self.proj


class _TinyCLIP(torch.nn.Module):
    """OpenAI CLIP module structure (names as in clip/model.py) at lseg_tiny_test's text size."""

    def __init__(self, width=64, layers=2, heads=2, embed=64, vocab=49408, ctx=77):
        super().__init__()
        mask = torch.full((ctx, ctx), float("-inf")).triu_(1)
        self.visual = _Visual(32, 16, 32, embed)
        self.transformer = _Transformer(width, layers, heads, mask)
        self.token_embedding = torch.nn.Embedding(vocab, width)
        self.positional_embedding = torch.nn.Parameter(torch.randn(ctx, width) * 0.01)
        self.ln_final = torch.nn.LayerNorm(width)
        self.text_projection = torch.nn.Parameter(torch.randn(width, embed))
        self.logit_scale = torch.nn.Parameter(torch.ones([]) * 4.6052)

    def forward(self, text):
        x = self.token_embedding(text) + self.positional_embedding
        x = self.ln_final(self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2))
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection


def _half_like_clip(model):
    """clip.model.convert_weights: Linear / Conv / MHA weights+biases, text_projection, proj -> float16."""
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            m.weight.data = m.weight.data.half()
            if m.bias is not None:
                m.bias.data = m.bias.data.half()
        if isinstance(m, torch.nn.MultiheadAttention):
            m.in_proj_weight.data = m.in_proj_weight.data.half()
            m.in_proj_bias.data = m.in_proj_bias.data.half()
    model.text_projection.data = model.text_projection.data.half()
    model.visual.proj.data = model.visual.proj.data.half()
    return model


def test_torchscript_clip_text_part(tmp_path, tiny_shapes):
    torch.manual_seed(0)
    model = _half_like_clip(_TinyCLIP())
    scripted = torch.jit.script(model)
    path = str(tmp_path / "ViT-B-32.pt")
    torch.jit.save(scripted, path)
    sd = torch.jit.load(path).state_dict()
    dst = str(tmp_path / "text.ckpt")
    rep = convert_checkpoint("lseg_tiny_test", path, dst, shapes=tiny_shapes)  # --part text implied
    assert rep.kind == "torchscript" and rep.layout == "clip" and rep.parts == ("text",)
    got = _ckpt(dst)
    assert set(got) == {k for k in tiny_shapes if k.startswith("clip_text.")}
    seen = set()
    for k, v in sd.items():
        n = official_to_mindspore_name("net.clip_pretrained." + k)
        if n is None:
            assert k.startswith("visual.") or k == "logit_scale", k
            continue
        np.testing.assert_array_equal(got[n], v.float().numpy(), err_msg=k)
        seen.add(n)
    assert seen == set(got)
    assert any(k.endswith("attn_mask") for k, _ in rep.dropped)
    assert len(rep.upcast) == 2 * 8 + 1
    with pytest.raises(ValueError, match="--part text"):
        convert_checkpoint("lseg_tiny_test", path, dst, part="image", shapes=tiny_shapes)


# ---- malicious pickles -----------------------------------------------------------------------------------------------
class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def _zip_with_pickle(path, payload):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/version", "3\n")


@pytest.mark.parametrize("how", ["os.system", "subprocess", "eval", "legacy", "handmade", "unknown_reduce"])
def test_malicious_pickle_refused(tmp_path, how):
    marker = tmp_path / "PWNED"
    cmd = "touch %s" % marker
    path = str(tmp_path / "evil.ckpt")
    good = {"net.scratch.head1.bias": torch.ones(2)}
    if how == "os.system":
        torch.save({"state_dict": good, "callbacks": _Evil(os.system, cmd)}, path)
    elif how == "subprocess":
        torch.save({"state_dict": good, "x": _Evil(subprocess.call, ["sh", "-c", cmd])}, path)
    elif how == "eval":
        torch.save({"state_dict": good, "x": _Evil(eval, "__import__('os').system(%r)" % cmd)}, path)
    elif how == "legacy":
        torch.save({"state_dict": good, "x": _Evil(os.system, cmd)}, path, _use_new_zipfile_serialization=False)
    elif how == "handmade":  # raw opcodes: GLOBAL posix.system, args tuple, REDUCE
        payload = b"\x80\x02cposix\nsystem\nX" + len(cmd).to_bytes(4, "little") + cmd.encode() + b"\x85R."
        _zip_with_pickle(path, payload)
    else:  # a __reduce__ to a harmless-looking but non-allow-listed callable is refused too
        from collections import Counter

        torch.save({"state_dict": good, "x": _Evil(Counter, "abc")}, path)
    with pytest.raises(UnsafePickleError) as ei:
        read_checkpoint(path)
    assert "refusing" in str(ei.value)
    assert not marker.exists()
    # and via the CLI: exit 2, clear message, no traceback
    if how in ("os.system", "handmade"):
        r = subprocess.run(
            [
                sys.executable,
                os.path.join(REPO, "tools", "convert.py"),
                "--model",
                "lseg_tiny_test",
                "--src",
                path,
                "--dst",
                str(tmp_path / "o.ckpt"),
            ],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 2 and "could execute code" in r.stderr and "Traceback" not in r.stderr
        assert not marker.exists() and not (tmp_path / "o.ckpt").exists()


def test_placeholders_are_inert_but_kept(tmp_path):
    path = str(tmp_path / "pl.ckpt")
    torch.save({"state_dict": {"a": torch.ones(2)}, "cb": LossLogger(), "cls": LossLogger}, path)
    st = read_checkpoint(path)
    assert list(st.tensors) == ["a"] and "test_convert_torch.LossLogger" in st.meta["placeholders"]


# ---- corrupt archives ------------------------------------------------------------------------------------------------
def test_truncated_and_corrupt_torch_zip(tmp_path, tiny_lightning):
    data = open(tiny_lightning[0], "rb").read()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) - 3000])
    with pytest.raises(CheckpointTruncatedError, match="truncated or corrupt zip"):
        read_checkpoint(str(cut))
    # flip bytes inside the largest storage: the zip is intact but the CRC check fails when the tensor is read
    with zipfile.ZipFile(tiny_lightning[0]) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    bad = bytearray(data)
    off = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 100
    bad[off : off + 4] = bytes(4 - i for i in range(4)) if bad[off : off + 4] != b"\x04\x03\x02\x01" else b"\0\0\0\0"
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(bytes(bad))
    st = read_checkpoint(str(corrupt))
    key = info.filename.rsplit("/", 1)[-1]
    with pytest.raises(CheckpointTruncatedError, match="CRC"):
        for k in st.tensors:
            st.tensors[k]  # noqa: B018
    assert key


# ---- the public parity checkpoint: Lightning .ckpt vs .npz ---------------------------------------------------------
@pytest.fixture(scope="module")
def parity_files(tmp_path_factory):
    script = os.path.join(REPO, "tests", "parity_weights.py")
    d = tmp_path_factory.mktemp("parity")
    out, procs = {}, []
    for fmt in ("ckpt", "npz"):  # both formats generated concurrently
        path = str(d / ("b32_s0." + fmt))
        procs.append(
            subprocess.Popen(
                [sys.executable, script, "--variant", "clip_vitb32_384", "--seed", "0", "--out", path],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
        out[fmt] = path
    for p in procs:
        _, err = p.communicate()
        assert p.returncode == 0, err.decode()[-2000:]
    out["dir"] = d
    return out


@pytest.mark.slow  # writes the 0.79 GB public checkpoint twice
def test_parity_lightning_ckpt_bit_identical_to_npz(parity_files):
    shapes = model_param_shapes("lseg_vitb32")
    src_ckpt = read_checkpoint(parity_files["ckpt"])
    assert src_ckpt.kind == "torch" and "hyper_parameters" in src_ckpt.meta["container_keys"]
    a, fa = convert_state(src_ckpt, shapes, src_name="ckpt")
    b, fb = convert_state(read_checkpoint(parity_files["npz"]), shapes, src_name="npz")
    assert list(a) == list(b) == list(shapes) and len(fa["upcast"]) == 97
    for k in a:
        assert a[k].dtype == b[k].dtype == np.float32 and a[k].tobytes() == b[k].tobytes(), k
    z = np.load(parity_files["npz"])
    np.testing.assert_array_equal(
        a["clip_text.text_projection"], z["net.clip_pretrained.text_projection"].astype(np.float32)
    )


@pytest.mark.slow
def test_parity_wrong_variant_cli(parity_files):
    """The real-size ViT-B/32 file into another variant: exit 2, keys + shapes, the right --model suggested."""
    dst = parity_files["dir"] / "wrong.ckpt"
    r = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "convert.py"),
            "--model",
            "lseg_tiny_test",
            "--src",
            parity_files["npz"],
            "--dst",
            str(dst),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert (
        "net.clip_pretrained.positional_embedding -> clip_text.positional_embedding: (77, 512) vs (77, 64)" in r.stderr
    )
    assert "use --model lseg_vitb32" in r.stderr and not dst.exists()


def test_cuda_storage_types_from_gpu_saved_files(tmp_path):
    """Older torch pickled GPU tensors with torch.cuda.*Storage: read them as CPU data."""
    src = str(tmp_path / "cpu.ckpt")
    sd = {"state_dict": {"w": torch.arange(6, dtype=torch.float16).reshape(2, 3), "b": torch.ones(3)}}
    torch.save(sd, src)
    dst = str(tmp_path / "gpu.ckpt")
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("data.pkl"):
                assert b"ctorch\nHalfStorage\n" in data
                data = data.replace(b"ctorch\nHalfStorage\n", b"ctorch.cuda\nHalfStorage\n")
                data = data.replace(b"ctorch\nFloatStorage\n", b"ctorch.cuda\nFloatStorage\n")
            zout.writestr(info.filename, data)
    st = read_checkpoint(dst)
    np.testing.assert_array_equal(st.tensors["w"], np.arange(6, dtype=np.float16).reshape(2, 3))
    np.testing.assert_array_equal(st.tensors["b"], np.ones(3, np.float32))


def test_truncated_legacy_file(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(1000), "b": torch.zeros(10)}, str(path), _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    for cut in (len(data) - 100, 40):  # inside the storages / inside the pickles
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointTruncatedError):
            read_checkpoint(str(path))
