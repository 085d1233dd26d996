"""Exports of the tiny model with impl="native" (what tools/export.py uses by default), checked against the eager
native network in the runtime that loads them: MINDIR in MindSpore (GraphCell) and ONNX in ONNX Runtime.

Default tier (seconds): the real-size ViT-B/32 exports are checked against the reference in test_deploy_export.py.
"""

import json
import os
import sys

import numpy as np
import pytest
from _paths import REPO

import mindspore as ms

sys.path.insert(0, str(REPO / "tools"))

import export as export_tool  # noqa: E402  (tools/export.py)

SIZE = 64
NUM_LABELS = 3
LABELS = ["dog", "a red car", "sky", "grass", "the other thing", "water", "road"]


@pytest.fixture(scope="module")
def tiny_native(tmp_path_factory):
    """(checkpoint, eager native network in eval mode) of a randomly initialised lseg_tiny_test."""
    import mindcv

    import mindcv_lseg  # noqa: F401

    ms.set_seed(0)
    net = mindcv.create_model("lseg_tiny_test", impl="native")
    path = tmp_path_factory.mktemp("tiny_native") / "tiny.ckpt"
    ms.save_checkpoint(net, str(path))
    net.set_train(False)
    return path, net


def _export(ckpt, out, fmt):
    try:
        code = export_tool.main(
            [
                "--model",
                "lseg_tiny_test",
                "--ckpt_path",
                str(ckpt),
                "--file_format",
                fmt,
                "--image_size",
                str(SIZE),
                str(SIZE),
                "--num_labels",
                str(NUM_LABELS),
                "--output_dir",
                str(out),
            ]
        )
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert code == 0
    return json.loads((out / "lseg_tiny_test_deploy.json").read_text())


@pytest.mark.parametrize("fmt", ["MINDIR", "ONNX"])
def test_native_export_matches_eager_native(tiny_native, tmp_path, capsys, fmt):
    if fmt == "ONNX":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnx")
    from mindcv_lseg.deploy import load_deployed

    ckpt, net = tiny_native
    info = _export(ckpt, tmp_path / "out", fmt)
    if fmt == "ONNX":  # deploy/onnx_optimize.py found the patterns it rewrites for ONNX Runtime
        assert "image graph rewritten for ONNX Runtime: merge_head_convs, l2_norm_as_conv, erf_gelu" in (
            capsys.readouterr().out
        )
    assert info["file_format"] == fmt
    assert info["image"]["input_shape"] == [1, 3, SIZE, SIZE]
    assert info["image"]["output_shape"] == [1, net.embed_dim, SIZE // 2, SIZE // 2]
    # label count and token columns dynamic (-1): MINDIR as exported, ONNX rewritten by deploy/onnx_optimize.py
    text_in = [-1, -1]
    assert info["text"]["input_shape"] == text_in
    assert info["text"]["output_shape"] == [text_in[0], net.embed_dim]
    deployed = load_deployed(str(tmp_path / "out"))
    assert deployed.runtime == {"MINDIR": "mindspore", "ONNX": "onnxruntime"}[fmt]

    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, SIZE, SIZE)).astype(np.float32)
    feats = deployed.forward_features(x)
    eager = net.forward_features(ms.Tensor(x)).asnumpy()
    assert feats.shape == eager.shape == (1, net.embed_dim, SIZE // 2, SIZE // 2)
    # MINDIR: the same native graph (bit-identical in practice); ONNX: the onnx_compat formulations (PolyGELU,
    # decomposed LayerNorm, matmul resizes) agree to float32 rounding
    np.testing.assert_allclose(feats, eager, atol=2e-5 if fmt == "ONNX" else 1e-6, rtol=0)

    text = deployed.encode_text(LABELS)  # 7 labels: more than the exported 3 rows (chunks, or a dynamic axis)
    eager_text = net.encode_text(LABELS).asnumpy()
    assert text.shape == eager_text.shape == (len(LABELS), net.embed_dim)
    np.testing.assert_allclose(text, eager_text, atol=2e-5 if fmt == "ONNX" else 1e-5, rtol=0)
    # the graph itself, dynamic: one label with 16 token columns and with all 77 gives the same features
    tokens = net.tokenize(["a red car"]).astype(np.int32)
    full = deployed._text(tokens)  # noqa: SLF001
    assert full.shape == (1, net.embed_dim)
    np.testing.assert_allclose(deployed._text(np.ascontiguousarray(tokens[:, :16])), full, atol=1e-5, rtol=0)  # noqa
    np.testing.assert_allclose(full, eager_text[1:2], atol=2e-5, rtol=0)

    logits = deployed(x, text)
    eager_logits = net(ms.Tensor(x), ms.Tensor(eager_text)).asnumpy()
    assert logits.shape == eager_logits.shape == (1, len(LABELS), SIZE, SIZE)
    np.testing.assert_allclose(logits, eager_logits, atol=5e-4, rtol=0)  # logits are ~1/0.07 x the cosines
    assert sorted(os.listdir(tmp_path / "out"))[0] == "lseg_tiny_test_deploy.json"


def test_text_rewrite_refuses_an_unknown_shape_constant():
    """A reshape that folds the example's N x L tokens into one axis is not a form make_text_dynamic knows."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from mindcv_lseg.deploy.onnx_optimize import OnnxRewriteError, make_text_dynamic

    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["tokens"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("Reshape", ["f", "flat"], ["text_features"]),
        ],
        "g",
        [helper.make_tensor_value_info("tokens", TensorProto.INT32, [2, 77])],
        [helper.make_tensor_value_info("text_features", TensorProto.FLOAT, [154])],
        [helper.make_tensor("flat", TensorProto.INT64, [1], [154])],
    )
    with pytest.raises(OnnxRewriteError, match=r"Reshape .* to \[154\]: unknown use of the example shape"):
        make_text_dynamic(helper.make_model(graph))


def test_static_onnx_text_graph_chunks_and_pads(tiny_native, tmp_path):
    """Without the rewrite (no onnx package, or export_lseg(onnx_optimize=False)) the ONNX text graph keeps the
    export shape [N, 77], the JSON says so, and the runner cuts 7 labels into chunks of 3 (the last one padded)."""
    pytest.importorskip("onnxruntime")
    from mindcv_lseg.deploy import check_export_args, export_lseg, load_deployed

    ckpt, net = tiny_native
    spec = check_export_args("lseg_tiny_test", str(ckpt), "text", "ONNX", (SIZE, SIZE), NUM_LABELS, str(tmp_path))
    try:
        ms.set_context(mode=ms.GRAPH_MODE)
        info = export_lseg(spec, log=lambda *a: None, onnx_optimize=False)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert info["image"] is None
    assert info["text"]["input_shape"] == [NUM_LABELS, 77]
    deployed = load_deployed(str(tmp_path))
    assert (deployed.num_labels, deployed.text_length) == (NUM_LABELS, 77)
    text = deployed.encode_text(LABELS)
    np.testing.assert_allclose(text, net.encode_text(LABELS).asnumpy(), atol=2e-5, rtol=0)
