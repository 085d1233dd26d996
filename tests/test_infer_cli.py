"""tools/infer.py end to end on a tiny-model checkpoint, and every bad input (specific message, exit code 2)."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import infer  # noqa: E402  (tools/infer.py)

from mindcv_lseg.viz import get_palette  # noqa: E402


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    import mindcv
    import mindspore as ms

    import mindcv_lseg  # noqa: F401

    d = tmp_path_factory.mktemp("infer")
    net = mindcv.create_model("lseg_tiny_test")
    ms.save_checkpoint(net, str(d / "tiny.ckpt"))
    other = mindcv.create_model("lseg_tiny_test", features=16)  # another architecture variant
    ms.save_checkpoint(other, str(d / "other_variant.ckpt"))
    imgs = d / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    img = np.zeros((48, 80, 3), np.uint8)
    img[:, :40] = (30, 90, 220)
    img[:, 40:] = (40, 180, 40)
    img = np.clip(img.astype(int) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(imgs / "scene.png")
    (imgs / "broken.jpg").write_bytes(b"this is not a jpeg")
    (d / "empty").mkdir()
    (d / "empty" / "notes.txt").write_text("no images here")
    return d


def _run(args, capsys):
    code = infer.main(args + ["--mode", "1"])  # PYNATIVE: do not switch the test process to GRAPH mode
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_end_to_end_files_palette_legend(assets, tmp_path, capsys):
    out_dir = tmp_path / "out"
    labels = ["water", "grass", "other"]
    code, out, err = _run(
        [
            "--model",
            "lseg_tiny_test",
            "--ckpt_path",
            str(assets / "tiny.ckpt"),
            "--labels",
            ", ".join(labels),
            "--input",
            str(assets / "imgs" / "scene.png"),
            "--output",
            str(out_dir),
            "--save_embeddings",
        ],
        capsys,
    )
    assert code == 0, err
    assert sorted(os.listdir(out_dir)) == ["labels.txt", "scene_emb.npy", "scene_mask.png", "scene_overlay.png"]
    assert (out_dir / "labels.txt").read_text().splitlines() == labels
    mask = Image.open(out_dir / "scene_mask.png")
    assert mask.mode == "P" and mask.size == (80, 48)
    ids = np.array(mask)
    assert ids.max() < len(labels)
    pal = np.array(mask.getpalette()[: 3 * len(labels)]).reshape(-1, 3)
    np.testing.assert_array_equal(pal, get_palette(len(labels)))
    # the ids are the argmax of the network's logits in label order
    import mindcv
    import mindspore as ms

    from mindcv_lseg.checkpoint import load_into_net
    from mindcv_lseg.eval.inference import normalize_image

    net = mindcv.create_model("lseg_tiny_test")
    load_into_net(net, str(assets / "tiny.ckpt"))
    net.set_train(False)
    x = normalize_image(np.array(Image.open(assets / "imgs" / "scene.png")))
    xp = np.full((1, 3, 64, 96), -1.0, np.float32)
    xp[:, :, :48, :80] = x
    logits = net(ms.Tensor(xp), net.encode_text(labels)).asnumpy()[0, :, :48, :80]
    np.testing.assert_array_equal(ids, logits.argmax(0))
    # overlay: image part + legend panel with every label's colour swatch
    ov = np.array(Image.open(out_dir / "scene_overlay.png").convert("RGB"))
    assert ov.shape[0] >= 48 and ov.shape[1] > 80
    legend = ov[:, 80:].reshape(-1, 3)
    for color in get_palette(len(labels)):
        assert (legend == color).all(axis=1).sum() >= 25, f"swatch {color} missing from the legend"
    emb = np.load(out_dir / "scene_emb.npy")
    assert emb.dtype == np.float32 and emb.shape == (64, 24, 40)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=0), 1.0, atol=1e-4)  # L2-normalised embeddings


def test_folder_with_a_bad_image_keeps_good_outputs(assets, tmp_path, capsys):
    out_dir = tmp_path / "out"
    code, out, err = _run(
        [
            "--model",
            "lseg_tiny_test",
            "--ckpt_path",
            str(assets / "tiny.ckpt"),
            "--labels",
            "sky,tree",
            "--input",
            str(assets / "imgs"),
            "--output",
            str(out_dir),
        ],
        capsys,
    )
    assert code == 3  # EXIT_SOME_FAILED
    assert "broken.jpg" in err and "cannot read image" in err and "1 of 2 image(s) failed" in err
    assert (out_dir / "scene_mask.png").is_file() and (out_dir / "scene_overlay.png").is_file()
    assert not (out_dir / "scene_emb.npy").exists()
    assert "1 of 2 image(s) segmented" in out


@pytest.mark.parametrize(
    "labels,needle",
    [
        ("", "no labels given"),
        ("dog,,grass", "label 1 is empty"),
        ("dog, " + " ".join(["word"] * 80), "label 1 is too long"),
    ],
)
def test_bad_labels(assets, tmp_path, capsys, labels, needle):
    code, _, err = _run(
        [
            "--model",
            "lseg_tiny_test",
            "--ckpt_path",
            str(assets / "tiny.ckpt"),
            "--labels",
            labels,
            "--input",
            str(assets / "imgs" / "scene.png"),
            "--output",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert code == 2 and needle in err, err


def test_bad_inputs_and_checkpoints(assets, tmp_path, capsys):
    base = ["--model", "lseg_tiny_test", "--labels", "a,b", "--output", str(tmp_path / "o")]
    ckpt = ["--ckpt_path", str(assets / "tiny.ckpt")]
    code, _, err = _run(base + ckpt + ["--input", str(assets / "empty")], capsys)
    assert code == 2 and "has no images" in err
    code, _, err = _run(base + ckpt + ["--input", str(tmp_path / "nope.jpg")], capsys)
    assert code == 2 and "input not found" in err
    img = ["--input", str(assets / "imgs" / "scene.png")]
    code, _, err = _run(base + img + ["--ckpt_path", str(tmp_path / "missing.ckpt")], capsys)
    assert code == 2 and "checkpoint not found" in err and "missing.ckpt" in err
    code, _, err = _run(base + img + ["--ckpt_path", str(assets / "other_variant.ckpt")], capsys)
    assert code == 2 and "does not match" in err and "another variant" in err, err
    code, _, err = _run(base + img + ckpt + ["--model", "lseg_nope"], capsys)
    assert code == 2 and "unknown model 'lseg_nope'" in err
    assert not (tmp_path / "o").exists()  # nothing written for bad input


def test_cli_subprocess_exit_code(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "infer.py"),
            "--model",
            "lseg_tiny_test",
            "--labels",
            "dog, ,cat",
            "--input",
            "x.jpg",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert r.returncode == 2
    assert "label 1 is empty" in r.stderr and "Traceback" not in r.stderr


def test_training_checkpoint_extras_load_but_foreign_params_fail(tmp_path):
    import mindcv
    import mindspore as ms

    from mindcv_lseg.eval.model_io import ModelLoadError, create_eval_model

    net = mindcv.create_model("lseg_tiny_test")
    ms.save_checkpoint(
        net, str(tmp_path / "train.ckpt"), append_dict={"epoch_num": 3, "best_miou": 0.5, "train_config": "lr: 0.01"}
    )
    loaded = create_eval_model("lseg_tiny_test", str(tmp_path / "train.ckpt"))
    name, p = next(iter(net.parameters_and_names()))
    np.testing.assert_array_equal(dict(loaded.parameters_and_names())[name].asnumpy(), p.asnumpy())
    extra = [{"name": n, "data": q} for n, q in net.parameters_and_names()]
    extra.append({"name": "scratch.extra_block.weight", "data": ms.Tensor(np.zeros((2, 2), np.float32))})
    ms.save_checkpoint(extra, str(tmp_path / "foreign.ckpt"))
    with pytest.raises(ModelLoadError, match="scratch.extra_block.weight"):
        create_eval_model("lseg_tiny_test", str(tmp_path / "foreign.ckpt"))
    with pytest.raises(ModelLoadError, match="no checkpoint given"):
        create_eval_model("lseg_tiny_test", "")
