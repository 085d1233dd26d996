"""The benchmarks' PyTorch baseline (``benchmarks/torch_lseg.py``) computes what the reference computes.

It loads the public synthetic ViT-B/32 checkpoint in the official Lightning format (written by
``tests/parity_weights.py``) with ``torch.load`` and must reproduce the reference outputs of the parity fixture at
the strict tier of ``tests/test_model_parity.py``; its parameter names, shapes and (official) dtypes must be
exactly the manifests' for both ViT variants.
"""

import json
import sys

import numpy as np
import pytest
from _parity import assert_strict_tier
from _paths import REPO, fixture_file
from parity_weights import DIGESTS, write_lightning_ckpt

torch = pytest.importorskip("torch")

# the full package first: the baseline imports only the tokenizer, without MindSpore, when the package is not loaded,
# which would leave ``import mindcv_lseg`` without the model registration for later tests of the same session
import mindcv_lseg  # noqa: E402,F401

sys.path.insert(0, str(REPO / "benchmarks"))
import bench_settings  # noqa: E402
import torch_lseg  # noqa: E402

VARIANT_OF = {"lseg_vitb32": "clip_vitb32_384", "lseg_vitl16_384": "clip_vitl16_384"}


def _meta_net(model):
    with torch.device("meta"):  # names and shapes without allocating ViT-L/16's 2 GB
        return torch_lseg.TorchLSeg(model)


@pytest.mark.parametrize("model", sorted(VARIANT_OF))
def test_official_layout_matches_manifest(model):
    with open(fixture_file("parity", f"manifest_{VARIANT_OF[model]}.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    state = torch_lseg.official_state_dict(_meta_net(model))
    expected = [(k["name"], tuple(k["shape"]), k["dtype"]) for k in manifest["keys"]]
    got = [(k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in state.items()]
    assert got == expected


def test_checkpoint_of_another_backbone_is_refused():
    state = torch_lseg.official_state_dict(_meta_net("lseg_vitl16_384"))
    with pytest.raises(ValueError, match="does not fit lseg_vitb32: .*another backbone"):
        torch_lseg.load_official(_meta_net("lseg_vitb32"), state, "l16.ckpt")
    with pytest.raises(ValueError, match="not an official LSeg state dict"):
        torch_lseg.load_official(_meta_net("lseg_vitb32"), {k[4:]: v for k, v in state.items()}, "bare.ckpt")


@pytest.mark.parametrize("argv", [["--size", "384", "100"], ["--labels", "151"], ["--ckpt", "/nonexistent.ckpt"]])
def test_cli_rejects_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        torch_lseg.main(["--model", "lseg_vitb32", *argv])
    assert exc.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_benchmark_settings():
    assert bench_settings.labels_for(5) == ["other", "sky", "tree", "car", "person"]
    assert bench_settings.labels_for(2) == ["other", "sky"]
    ade = bench_settings.labels_for(150)
    assert len(ade) == 150 and ade[:3] == ["wall", "building", "sky"] and ade[58] == ade[130] == "screen"
    with pytest.raises(ValueError, match="between 1 and 150"):
        bench_settings.labels_for(0)
    assert bench_settings.input_size([384]) == (384, 384)
    assert bench_settings.input_size([480, 640]) == (480, 640)
    for bad in ([480, 100], [0], [384, 384, 384]):
        with pytest.raises(ValueError, match="--size"):
            bench_settings.input_size(bad)
    assert tuple(torch_lseg.VARIANTS) == bench_settings.TORCH_MODELS


@pytest.mark.slow  # writes the 0.79 GB official-format checkpoint and runs the real-size ViT-B/32 network
def test_reproduces_reference_on_parity_checkpoint(tmp_path, parity_expected):
    ckpt = tmp_path / "lseg_b32_s0.ckpt"
    assert write_lightning_ckpt(str(ckpt), "clip_vitb32_384", seed=0) == DIGESTS[("clip_vitb32_384", 0)]
    net = torch_lseg.build("lseg_vitb32", str(ckpt))
    ckpt.unlink()
    labels = [str(s) for s in parity_expected["labels"]]
    tokens = torch_lseg.tokenize_labels(labels)
    np.testing.assert_array_equal(tokens, parity_expected["tokens"])
    x = torch.from_numpy(parity_expected["input"])
    with torch.inference_mode():
        text = net.clip_pretrained.encode_text(torch.from_numpy(tokens.astype(np.int64))).numpy()
        hooked = [t.numpy() for t in net.pretrained.model.forward_flex(x, net.pretrained.hooks)]
        logits = net(x, labels).numpy()
    assert np.abs(text - parity_expected["text_features_fp32"]).max() <= 1e-4
    for i, tokens_out in enumerate(hooked, start=1):
        assert np.abs(tokens_out - parity_expected[f"inter_vit_block_out_{i}"]).max() <= 1e-4, f"hooked block {i}"
    ref = parity_expected["logits_fp32"]
    assert logits.shape == ref.shape == (1, 5, 384, 384)
    assert_strict_tier(logits, ref)


def test_random_mode_measures_a_forward():
    threads = torch.get_num_threads()
    try:
        res = torch_lseg.measure("lseg_vitb32", size=(64, 96), labels=7, warmup=0, runs=1, threads=1)
    finally:
        torch.set_num_threads(threads)
    assert res["weights"] == "random" and res["size"] == [64, 96] and res["labels"] == 7
    assert 0 < res["first_s"] and 0 < res["forward_s"] and res["peak_rss_gb"] > 1.0  # 1 GB of float32 weights
