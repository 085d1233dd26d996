"""Parity of the inference core on the public parity case (ViT-B/32, synthetic seed-0 weights, 384x384 image).

Single-scale whole-image inference through ``mindcv_lseg.eval`` must equal the network's own logits bit for bit,
and match the PyTorch reference logits within the documented float32 tolerance. Uses the session's converted
parity checkpoint (``parity_ckpt`` in conftest.py).
"""

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # the real-size ViT-B/32 parity network


@pytest.fixture(scope="module")
def parity_net(parity_ckpt, parity_expected):
    import mindcv

    import mindcv_lseg  # noqa: F401

    net = mindcv.create_model("lseg_vitb32", checkpoint_path=str(parity_ckpt), weight_init=False)
    net.set_train(False)
    return net, parity_expected


def test_whole_mode_equals_network_logits_and_reference(parity_net):
    import mindspore as ms

    from mindcv_lseg.eval import InferenceConfig, TextEmbeddingCache, normalize_image, run_inference, segment

    net, ref = parity_net
    labels = [str(s) for s in ref["labels"]]
    x = normalize_image(ref["image_uint8"])
    np.testing.assert_array_equal(x, ref["input"])  # same normalisation as ToTensor + Normalize(0.5, 0.5)
    cache = TextEmbeddingCache(net)
    text = cache(labels)
    direct = net(ms.Tensor(x), text).asnumpy()
    core = run_inference(net, x, text, InferenceConfig(mode="whole"))
    np.testing.assert_array_equal(core, direct)
    diff = np.abs(core - ref["logits_fp32"])
    assert diff.max() <= 1e-4 and diff.mean() <= 5e-6, (diff.max(), diff.mean())
    res = segment(net, ref["image_uint8"], labels, text_cache=cache)
    np.testing.assert_array_equal(res.label_map, direct[0].argmax(0))
    top2 = np.sort(ref["logits_fp32"][0], axis=0)[-2:]
    mism = res.label_map != ref["argmax_fp32"]
    assert np.all((top2[1] - top2[0])[mism] <= diff.max())  # only near-ties may flip
