"""Zero-shot inference helpers: label pairs, per-sample text features [B, 2, C], a batch whose samples name different
classes equals per-sample runs, ties go to background."""

import numpy as np
import pytest

import mindcv
import mindspore as ms

import mindcv_lseg  # noqa: F401
from mindcv_lseg.eval.zeroshot import OTHERS, ZeroShotText, predict_zeroshot, zeroshot_labels

pytestmark = pytest.mark.slow  # builds networks and runs tool subprocesses


@pytest.fixture(scope="module")
def tiny():
    ms.set_seed(0)
    net = mindcv.create_model("lseg_tiny_test")
    net.set_train(False)
    return net


def test_label_pair():
    assert OTHERS == "others" and zeroshot_labels("dog") == ["others", "dog"]


def test_mixed_class_batch_equals_per_sample_runs(tiny):
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32)
    text = ZeroShotText(tiny)
    feats = text(["bus", "cat"])
    assert feats.shape == (2, 2, 64)
    np.testing.assert_array_equal(feats.asnumpy()[1], tiny.encode_text(["others", "cat"]).asnumpy())
    logits = tiny(ms.Tensor(x), feats).asnumpy()
    for b, name in enumerate(["bus", "cat"]):
        single = tiny(ms.Tensor(x[b : b + 1]), tiny.encode_text(["others", name])).asnumpy()
        np.testing.assert_allclose(logits[b], single[0], atol=1e-5)
    pred = predict_zeroshot(tiny, x, ["bus", "cat"], text)
    np.testing.assert_array_equal(pred, logits.argmax(axis=1))
    assert pred.shape == (2, 64, 64) and set(np.unique(pred)) <= {0, 1}
    with pytest.raises(ValueError, match="2 images but 1 class names"):
        predict_zeroshot(tiny, x, ["bus"])


def test_tie_goes_to_background(tiny):
    """Same text for both channels -> identical logits -> every pixel is background (argmax takes the first)."""

    class Same(ZeroShotText):
        def pair(self, name):
            row = self.net.encode_text([name]).asnumpy()
            return np.concatenate([row, row])

    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    assert not predict_zeroshot(tiny, x, ["dog"], Same(tiny)).any()


def test_evaluation_names_the_bad_episode(tiny, tmp_path):
    from mindcv_lseg.data.fewshot import FSS1000Dataset
    from mindcv_lseg.data.fewshot_fake import make_fake_fss
    from mindcv_lseg.data.io import SegDataError
    from mindcv_lseg.eval.zeroshot import evaluate_zeroshot

    make_fake_fss(str(tmp_path), classes=("bus",), images_per_class=2, size=16)
    (tmp_path / "FSS-1000" / "bus" / "2.jpg").write_bytes(b"\xff\xd8 truncated")
    ds = FSS1000Dataset(str(tmp_path), (0.5,) * 3, (0.5,) * 3, img_size=64)
    with pytest.raises(SegDataError, match=r"episode 1 \(class 760 'bus', query .*2\.jpg\): cannot read image"):
        evaluate_zeroshot(tiny, ds, progress=False)
