"""Mixed precision (mindcv's amp_level): what runs in float16, what stays float32, and an O2 toy training run."""

import json
import os

import numpy as np
import pytest
from conftest import run_tool

import mindcv
import mindspore as ms
from mindcv.utils.amp import _OutputTo16
from mindspore import nn

import mindcv_lseg  # noqa: F401  (registers the lseg_* entries)
from mindcv_lseg.engine.config import ConfigError, parse_args
from mindcv_lseg.engine.train_step import build_train_cells, resolve_loss_scale_type
from mindcv_lseg.kernels.gemm import BlasMatMul
from mindcv_lseg.kernels.layernorm import layernorm_kernels
from mindcv_lseg.models.activations import ErfGELU
from mindcv_lseg.models.amp import AMP_BLACK_LIST, auto_mixed_precision
from mindcv_lseg.models.normalization import LeanLayerNorm


@pytest.fixture(autouse=True)
def _pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)  # GRAPH-mode float16 graphs take minutes to compile here
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


def _pair(impl):
    ms.set_seed(0)
    ref = mindcv.create_model("lseg_tiny_test", impl=impl)
    net = mindcv.create_model("lseg_tiny_test", impl=impl)
    ms.load_param_into_net(net, {p.name: p for p in ref.get_parameters()}, strict_load=True)
    ref.set_train(False)
    net.set_train(False)
    return ref, net


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["lean", "native"])
def test_o2_converts_the_image_branch_only(impl):
    ref, net = _pair(impl)
    names = [p.name for p in net.get_parameters()]
    assert auto_mixed_precision(net, "O2") is net and net.amp_level == "O2"
    assert [p.name for p in net.get_parameters()] == names  # checkpoints still load
    assert all(p.dtype == ms.float32 for p in net.get_parameters())
    wrapped = [c._op for _, c in net.cells_and_names() if isinstance(c, _OutputTo16)]
    assert wrapped and all(isinstance(c, AMP_BLACK_LIST) for c in wrapped)
    assert any(isinstance(c, nn.BatchNorm2d) for c in wrapped) and any(isinstance(c, nn.LayerNorm) for c in wrapped)
    assert not any(isinstance(c, _OutputTo16) for _, c in net.clip_text.cells_and_names())
    # the float32-only compiled kernels step aside in the image branch (MindSpore casts every op's inputs in a
    # converted cell); the float32 text tower keeps them
    image_cells = [c for part in (net.encoder, net.scratch) for _, c in part.cells_and_names()]
    assert not any(c.use_blas for c in image_cells if isinstance(c, BlasMatMul))
    assert not any(c.use_kernels for c in image_cells if isinstance(c, (ErfGELU, LeanLayerNorm)))
    text_norms = [c for _, c in net.clip_text.cells_and_names() if isinstance(c, nn.LayerNorm)]
    expected = impl == "lean" and layernorm_kernels() is not None
    assert text_norms and all(getattr(c, "use_kernels", False) == expected for c in text_norms)

    x = ms.Tensor(np.random.RandomState(0).randn(1, 3, 64, 64).astype(np.float32))
    labels = ["grass", "a dog", "sky"]
    text = net.encode_text(labels)
    np.testing.assert_array_equal(text.asnumpy(), ref.encode_text(labels).asnumpy())  # text tower: float32
    emb, emb_ref = net.forward_features(x), ref.forward_features(x)
    assert emb.dtype == ms.float32
    norms = np.sqrt((emb.asnumpy() ** 2).sum(1))
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)  # normalised in float32
    diff = np.abs(emb.asnumpy() - emb_ref.asnumpy()).max()
    assert 0 < diff < 0.05, diff  # float16 image branch: close to, not equal to, the float32 one
    logits = net(x, text)
    assert logits.dtype == ms.float32
    assert np.abs(logits.asnumpy() - ref(x, text).asnumpy()).max() < 0.1


def test_amp_level_validation():
    _, net = _pair("lean")
    with pytest.raises(ValueError, match="amp_level must be one of O0, O1, O2, O3, got 'O4'"):
        auto_mixed_precision(net, "O4")
    auto_mixed_precision(net, "O3")
    with pytest.raises(ValueError, match="already converted to amp_level O3"):
        auto_mixed_precision(net, "O2")
    with pytest.raises(ConfigError, match="amp_level"):
        parse_args(["--amp_level", "O5"])
    with pytest.raises(ConfigError, match="loss_scale_type"):
        parse_args(["--loss_scale_type", "static"])
    with pytest.raises(ConfigError, match="impl"):
        parse_args(["--impl", "fast"])


def test_loss_scale_type():
    assert resolve_loss_scale_type("auto", "O2") == "dynamic"
    assert resolve_loss_scale_type("auto", "O0") == resolve_loss_scale_type("auto", "O3") == "fixed"
    assert resolve_loss_scale_type("dynamic", "O0") == "dynamic"
    with pytest.raises(ValueError, match="grad_accumulation 1 only"):
        build_train_cells(None, None, grad_accumulation=2, loss_scale_type="dynamic")


@pytest.mark.slow
def test_train_o2_on_cpu_loss_falls(tmp_path):
    """``tools/train.py -c configs/lseg_toy.yaml --amp_level O2`` (GRAPH mode; cut down: 16 images of 64 px,
    4 epochs; dynamic loss scale). Most of its time is the first step's graph compilation."""
    out = tmp_path / "out"
    proc = run_tool(
        "tools/train.py",
        "-c",
        "configs/lseg_toy.yaml",
        "--amp_level",
        "O2",
        "--data_dir",
        str(tmp_path / "toy"),
        "--ckpt_save_dir",
        str(out),
        "--num_samples",
        "16",
        "--crop_size",
        "64",
        "--base_size",
        "64",
        "--batch_size",
        "4",
        "--epoch_size",
        "4",
        "--val_while_train",
        "false",
        "--progress_bar",
        "false",
        "--loss_scale_type",
        "auto",
        "--loss_scale",
        "1024",
        timeout=900,
    )
    log = proc.stdout + proc.stderr
    assert "amp_level O2, loss scale dynamic 1024" in log, log[-2000:]
    with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
        rows = json.load(f)
    losses = [r["train_loss"] for r in rows]
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.slow
def test_validate_and_infer_accept_amp_level_and_impl(tmp_path, capsys):
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
    import infer
    import validate
    from PIL import Image

    from mindcv_lseg.data import make_toy_dataset

    ckpt = tmp_path / "tiny.ckpt"
    ms.save_checkpoint(mindcv.create_model("lseg_tiny_test"), str(ckpt))
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(tmp_path / "img.png")
    common = ["--model", "lseg_tiny_test", "--ckpt_path", str(ckpt), "--mode", "1"]
    code = infer.main(
        common
        + [
            "--amp_level",
            "O2",
            "--impl",
            "native",
            "--labels",
            "sky, grass",
            "--input",
            str(tmp_path / "img.png"),
            "--output",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "img_mask.png").is_file()
    assert infer.main(common + ["--amp_level", "O9", "--labels", "a", "--input", str(tmp_path / "img.png")]) == 2
    assert "amp_level" in capsys.readouterr().err

    data = make_toy_dataset(str(tmp_path / "toy"), num_train=2, num_val=2, size=64, seed=0)
    code = validate.main(
        common
        + [
            "-c",
            "configs/lseg_toy.yaml",
            "--data_dir",
            data,
            "--amp_level",
            "O2",
            "--eval_output",
            str(tmp_path / "val"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    with open(tmp_path / "val" / "metrics.json", encoding="utf-8") as f:
        assert json.load(f)["config"]["amp_level"] == "O2"
