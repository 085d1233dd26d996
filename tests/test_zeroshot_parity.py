"""``lseg_rn101`` reproduces the reference zero-shot network (``LSegRNNetZS``) on the public synthetic checkpoint.

The zs_clip_resnet101 seed-0 synthetic checkpoint (``tests/parity_weights.py``; the layout of the released ``pascal_fold*`` / ``coco_fold*`` /
``fss_rn101`` files) is generated, converted with ``tools/convert.py`` and run on the public 480x480 image with the
label pair ``["others", "dog"]``. Strict tier against the float32 reference logits: max abs <= 1e-4, mean abs
<= 5e-6; tokens bit-exact; raw text features <= 1e-4; per-channel means of the four ResNet stages <= 1e-4.
"""

import numpy as np
import pytest
from _parity import assert_strict_tier
from _paths import fixture_file
from conftest import run_tool
from parity_weights import write_npz

import mindcv
import mindspore as ms

import mindcv_lseg  # noqa: F401  (registers the lseg_* entries)
from mindcv_lseg.eval.zeroshot import zeroshot_labels, zeroshot_text_features

pytestmark = pytest.mark.slow  # builds networks and runs tool subprocesses


@pytest.fixture(scope="module")
def zs_expected():
    with np.load(fixture_file("parity", "expected_zs_clip_resnet101_seed0.npz")) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def zs_ckpt(tmp_path_factory):
    work = tmp_path_factory.mktemp("zs_parity")
    npz, ckpt = work / "zs_rn101_s0.npz", work / "zs_rn101_s0.ckpt"
    write_npz(str(npz), "zs_clip_resnet101", seed=0)
    proc = run_tool("tools/convert.py", "--model", "lseg_rn101", "--src", str(npz), "--dst", str(ckpt))
    npz.unlink()
    assert "753 parameters" in proc.stdout, proc.stdout
    return ckpt


@pytest.fixture(scope="module")
def zs_outputs(zs_ckpt, zs_expected):
    """(tokens, text features [1,2,512], logits, stage channel means) in GRAPH and in PYNATIVE mode."""
    x = ms.Tensor(zs_expected["input"])
    names = [str(zs_expected["labels"][0, 1])]
    outputs = {}
    try:
        for mode_name, mode in (("graph", ms.GRAPH_MODE), ("pynative", ms.PYNATIVE_MODE)):
            ms.set_context(mode=mode)
            net = mindcv.create_model("lseg_rn101", checkpoint_path=str(zs_ckpt))
            net.set_train(False)
            text = zeroshot_text_features(net, names)
            logits = net(x, text).asnumpy()
            stages = [s.asnumpy().mean(axis=(0, 2, 3)) for s in net.encoder(x)]
            outputs[mode_name] = (net.tokenize(zeroshot_labels(names[0])), text.asnumpy(), logits, stages)
            del net
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    return outputs


@pytest.mark.parametrize("mode", ["graph", "pynative"])
def test_tokens_and_text_features(zs_outputs, zs_expected, mode):
    tokens, text, _, _ = zs_outputs[mode]
    assert list(zs_expected["labels"][0]) == ["others", "dog"]
    np.testing.assert_array_equal(tokens, zs_expected["tokens"][0])
    assert text.shape == (1, 2, 512) and text.dtype == np.float32
    assert np.abs(text - zs_expected["text_features_fp32"]).max() <= 1e-4


@pytest.mark.parametrize("mode", ["graph", "pynative"])
def test_resnet_stages_match_reference(zs_outputs, zs_expected, mode):
    stages = zs_outputs[mode][3]
    for k, mean in enumerate(stages, start=1):
        ref = zs_expected[f"chanmean_stage_{k}"].reshape(-1)
        assert mean.shape == ref.shape == (256 * 2 ** (k - 1),)
        assert np.abs(mean - ref).max() <= 1e-4, f"stage {k}"


@pytest.mark.parametrize("mode", ["graph", "pynative"])
def test_logits_match_reference_strict(zs_outputs, zs_expected, mode):
    logits = zs_outputs[mode][2]
    ref = zs_expected["logits_fp32"]
    assert logits.shape == ref.shape == (1, 2, 480, 480)
    assert_strict_tier(logits, ref, ref_pred=zs_expected["argmax_fp32"][0])
