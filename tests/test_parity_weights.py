"""The in-repo generator of the synthetic parity weights reproduces the published checkpoints (by digest), writes
them as npz and as Lightning .ckpt with the same tensors, and follows its documented rule."""

import math
import zlib

import numpy as np
import pytest
from parity_weights import (
    DIGESTS,
    load_manifest,
    state_digest,
    synthetic_tensors,
    unit_noise,
    write_lightning_ckpt,
    write_npz,
)


def _some(variant, names, seed=0):
    return dict(synthetic_tensors(load_manifest(variant), seed, names))


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["clip_vitb32_384", "zs_clip_resnet101"])
def test_published_digest(variant):
    assert state_digest(synthetic_tensors(load_manifest(variant), seed=0)) == DIGESTS[(variant, 0)]


def test_unit_noise_follows_the_rule():
    key, seed = "net.scratch.head1.bias", 3
    raw = np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(key.encode())])).random_raw(4)
    want = [(2 * ((int(r) >> 40) + 0.5) / 2**24 - 1) * math.sqrt(3) for r in raw]
    np.testing.assert_array_equal(unit_noise(key, seed, 4), want)
    z = unit_noise("net.pretrained.model.pos_embed", 0, 200_000)
    assert abs(z.mean()) < 0.01 and abs(z.var() - 1) < 0.01 and np.abs(z).max() < math.sqrt(3)


def test_values_depend_on_seed_and_key_only():
    names = ["net.clip_pretrained.text_projection", "net.scratch.head1.weight"]
    b32 = _some("clip_vitb32_384", names)
    rn101 = _some("zs_clip_resnet101", names)
    other_seed = _some("clip_vitb32_384", names, seed=1)
    for name in names:
        assert b32[name].tobytes() == rn101[name].tobytes()  # same key, same values in another variant
        assert b32[name].tobytes() != other_seed[name].tobytes()
    assert b32["net.clip_pretrained.text_projection"].dtype == np.float16  # CLIP weights as released (half)
    assert abs(b32["net.scratch.head1.weight"].std() - 1 / math.sqrt(256)) < 2e-3  # std = 1/sqrt(fan_in)


def test_scale_rules():
    names = [
        "net.pretrained.model.blocks.0.attn.proj.weight",  # residual output: 1/sqrt(12 blocks * fan_in 768)
        "net.scratch.refinenet1.resConfUnit1.bn1.running_var",
        "net.scratch.refinenet1.resConfUnit1.bn1.num_batches_tracked",
        "net.clip_pretrained.logit_scale",
    ]
    t = _some("clip_vitb32_384", names)
    assert abs(t[names[0]].std() * math.sqrt(12 * 768) - 1) < 0.01
    assert 0.73 < t[names[1]].min() and t[names[1]].max() < 1.27
    assert t[names[2]].dtype == np.int64 and t[names[2]].shape == () and t[names[2]] == 100
    assert t[names[3]] == np.float32(math.log(1 / 0.07))
    stage = _some("zs_clip_resnet101", ["net.pretrained.layer3.7.bn3.weight"])
    assert abs(stage["net.pretrained.layer3.7.bn3.weight"].mean() - 1 / math.sqrt(23)) < 0.01  # 23 blocks in layer3


def test_npz_and_lightning_ckpt_hold_the_same_tensors(tmp_path):
    torch = pytest.importorskip("torch")
    names = [
        "net.clip_pretrained.positional_embedding",
        "net.pretrained.act_postprocess1.4.weight",
        "net.scratch.refinenet2.resConfUnit2.bn2.num_batches_tracked",
    ]
    want = _some("clip_vitb32_384", names)
    digest = write_npz(str(tmp_path / "w.npz"), "clip_vitb32_384", 0, names=names)
    assert digest == write_lightning_ckpt(str(tmp_path / "w.ckpt"), "clip_vitb32_384", 0, names=names)
    assert digest == state_digest(want)
    with np.load(tmp_path / "w.npz") as npz:
        assert list(npz.files) == names
        for name in names:
            assert npz[name].dtype == want[name].dtype and npz[name].tobytes() == want[name].tobytes()
    ckpt = torch.load(tmp_path / "w.ckpt", map_location="cpu", weights_only=True)
    assert list(ckpt["state_dict"]) == names and ckpt["synthetic_weights"]["sha256"] == digest
    assert ckpt["hyper_parameters"]["backbone"] == "clip_vitb32_384"
    for name in names:
        assert ckpt["state_dict"][name].numpy().tobytes() == want[name].tobytes()
