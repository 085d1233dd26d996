"""Converting zero-shot (``LSegRNNetZS``) Lightning checkpoints into ``lseg_rn101``.

A small network of the same layout is written as a Lightning ``.ckpt`` with torch (a test extra): its ResNet is a
torchvision-v1.5 Bottleneck ResNet built here from torch layers, wrapped as the reference does
(``pretrained.layer1`` = Sequential(conv1, bn1, relu, maxpool, layer1)); CLIP and decoder keys come from the shared
layout helpers. The converted MindSpore encoder must reproduce the torch stage outputs (this also checks the stem
max pool's padding), every parameter must carry its source value (float16 upcast exactly), and the full-size key list
of the released files must map onto ``lseg_rn101`` one to one.
"""

import json
from collections import OrderedDict

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from _convert_synth import F32, I64, clip_layout, synth  # noqa: E402
from _paths import fixture_file  # noqa: E402

import mindcv  # noqa: E402
import mindspore as ms  # noqa: E402

import mindcv_lseg  # noqa: E402,F401
from mindcv_lseg.convert import convert_checkpoint  # noqa: E402
from mindcv_lseg.convert.keymap import drop_reason, official_to_mindspore_name  # noqa: E402
from mindcv_lseg.convert.pipeline import model_param_shapes  # noqa: E402

pytestmark = pytest.mark.slow  # builds networks and runs tool subprocesses

LAYERS = (2, 1, 1, 1)
SMALL = dict(layers=LAYERS, features=32, text_width=64, text_layers=2, text_heads=2, embed_dim=64)
CLIP_SMALL = dict(
    text_width=64,
    text_layers=2,
    embed_dim=64,
    vocab=49408,
    context=77,
    clip_vis_width=32,
    clip_vis_layers=1,
    clip_vis_patch=16,
    clip_vis_image=32,
)


class TorchBottleneck(nn.Module):
    def __init__(self, cin, width, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, 4 * width, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * width)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != 4 * width:
            self.downsample = nn.Sequential(nn.Conv2d(cin, 4 * width, 1, stride, bias=False), nn.BatchNorm2d(4 * width))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class TorchPretrained(nn.Module):
    """The reference's ``net.pretrained`` for ``clip_resnet101``: four Sequentials, the stem inside ``layer1``."""

    def __init__(self, layers):
        super().__init__()
        stages, cin = [], 64
        for i, (n, width) in enumerate(zip(layers, (64, 128, 256, 512))):
            blocks = [
                TorchBottleneck(cin if b == 0 else 4 * width, width, (1 if i == 0 else 2) if b == 0 else 1)
                for b in range(n)
            ]
            stages.append(nn.Sequential(*blocks))
            cin = 4 * width
        self.layer1 = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1), stages[0]
        )
        self.layer2, self.layer3, self.layer4 = stages[1:]

    def forward(self, x):
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        return c1, c2, c3, self.layer4(c3)


def _scratch_layout(features, embed, widths=(256, 512, 1024, 2048), prefix="net.scratch."):
    out = [(f"{prefix}layer{k}_rn.weight", (features, widths[k - 1], 3, 3), F32) for k in range(1, 5)]
    for k in range(1, 5):
        r = f"{prefix}refinenet{k}."
        out += [(r + "out_conv.weight", (features, features, 1, 1), F32), (r + "out_conv.bias", (features,), F32)]
        for u in (1, 2):
            cu = r + f"resConfUnit{u}."
            out += [
                (cu + "conv1.weight", (features, features, 3, 3), F32),
                (cu + "conv2.weight", (features, features, 3, 3), F32),
            ]
            for bn in ("bn1.", "bn2."):
                out += [(cu + bn + n, (features,), F32) for n in ("weight", "bias", "running_mean", "running_var")]
                out.append((cu + bn + "num_batches_tracked", (), I64))
    return out + [(prefix + "head1.weight", (embed, features, 1, 1), F32), (prefix + "head1.bias", (embed,), F32)]


@pytest.fixture(scope="module")
def small_zs_ckpt(tmp_path_factory):
    """(Lightning .ckpt path, official state dict, torch ResNet in eval mode) of a small zero-shot network."""
    torch.manual_seed(0)
    resnet = TorchPretrained(LAYERS)
    with torch.no_grad():
        for m in resnet.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, so eval-mode BN is really exercised
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(7)
    resnet.eval()
    sd = OrderedDict((k, torch.from_numpy(v)) for k, v in synth(clip_layout(CLIP_SMALL), seed=1).items())
    sd.update(("net.pretrained." + k, v.clone()) for k, v in resnet.state_dict().items())
    sd.update((k, torch.from_numpy(v)) for k, v in synth(_scratch_layout(32, 64), seed=2).items())
    path = tmp_path_factory.mktemp("zs_conv") / "pascal_fold0_small.ckpt"
    torch.save(
        {
            "epoch": 49,
            "global_step": 100,
            "pytorch-lightning_version": "1.4.9",
            "state_dict": sd,
            "optimizer_states": [],
            "lr_schedulers": [],
            "callbacks": {},
        },
        str(path),
    )
    return path, sd, resnet


@pytest.fixture(scope="module")
def small_net():
    return mindcv.create_model("lseg_rn101", **SMALL)


def test_converted_checkpoint_holds_every_source_value(small_zs_ckpt, small_net, tmp_path):
    path, sd, _ = small_zs_ckpt
    shapes = OrderedDict((p.name, tuple(p.shape)) for _, p in small_net.parameters_and_names())
    dst = tmp_path / "small.ckpt"
    report = convert_checkpoint("lseg_rn101", str(path), str(dst), shapes=shapes)
    assert report.kind == "torch" and report.layout == "lseg" and not report.not_converted
    loaded = {k: v.asnumpy() for k, v in ms.load_checkpoint(str(dst)).items()}
    assert set(loaded) == set(shapes)
    used = 0
    for key, value in sd.items():
        name = official_to_mindspore_name(key)
        if name is None:
            assert drop_reason(key) is not None, key  # CLIP image tower, BN counters, unused refinenet4 unit
            continue
        used += 1
        np.testing.assert_array_equal(loaded[name], value.numpy().astype(np.float32), err_msg=key)
    assert used == len(shapes)
    assert "net.pretrained.layer1.0.weight" in sd and "net.pretrained.layer2.0.downsample.1.running_var" in sd
    assert (
        official_to_mindspore_name("net.pretrained.layer2.0.downsample.1.running_var")
        == "encoder.resnet.layer2.0.down_sample.1.moving_variance"
    )


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE])
def test_converted_encoder_reproduces_torch_resnet(small_zs_ckpt, small_net, tmp_path, mode):
    path, _, resnet = small_zs_ckpt
    shapes = OrderedDict((p.name, tuple(p.shape)) for _, p in small_net.parameters_and_names())
    dst = tmp_path / "small.ckpt"
    convert_checkpoint("lseg_rn101", str(path), str(dst), shapes=shapes)
    ms.load_param_into_net(small_net, ms.load_checkpoint(str(dst)), strict_load=True)
    small_net.set_train(False)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 96)).astype(np.float32)
    with torch.no_grad():
        ref = [t.numpy() for t in resnet(torch.from_numpy(x))]
    try:
        ms.set_context(mode=mode)
        got = [t.asnumpy() for t in small_net.encoder(ms.Tensor(x))]
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    for k, (g, r) in enumerate(zip(got, ref), start=1):
        assert g.shape == r.shape
        assert np.abs(g - r).max() <= 1e-4 * max(1.0, np.abs(r).max()), f"stage {k}"


def test_released_key_list_maps_onto_lseg_rn101():
    manifest = json.loads(fixture_file("parity", "manifest_zs_clip_resnet101.json").read_text())
    entries = manifest["keys"]
    shapes = model_param_shapes("lseg_rn101")
    mapped = {}
    for e in entries:
        name = official_to_mindspore_name(e["name"])
        if name is None:
            continue
        assert name in shapes, e["name"]
        assert tuple(e["shape"]) == shapes[name], e["name"]
        mapped[name] = e["name"]
    assert len(entries) == 1036
    assert set(mapped) == set(shapes)  # every parameter comes from exactly one key


def test_wrong_model_is_named(small_zs_ckpt, tmp_path):
    """A zero-shot ResNet checkpoint given for a ViT model: refused, nothing written, the right --model suggested."""
    from mindcv_lseg.checkpoint import CheckpointError

    path, _, _ = small_zs_ckpt
    dst = tmp_path / "out.ckpt"
    with pytest.raises(CheckpointError, match="use --model lseg_rn101"):
        convert_checkpoint("lseg_tiny_test", str(path), str(dst), shapes=model_param_shapes("lseg_tiny_test"))
    assert not dst.exists()
