"""The demo's request handling without a browser: limits, label/template/image checks, messages without server
paths, the result table and mask file, and what ``tools/demo.py`` serves by default (the quickstart's model)."""

import os
import subprocess
import sys

import numpy as np
import pytest
from _paths import REPO
from PIL import Image

from mindcv_lseg.demo import DemoInputError, DemoLimits, DemoService

LABELS = "sky, grass, water"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    import mindcv

    import mindcv_lseg  # noqa: F401
    from mindcv_lseg.eval.model_io import setup_context

    setup_context(1, "CPU")  # PYNATIVE: a handful of tiny calls, no compile
    net = mindcv.create_model("lseg_tiny_test")
    net.set_train(False)
    work = tmp_path_factory.mktemp("demo_service")
    limits = DemoLimits(max_file_mb=0.05, max_pixels=200_000, max_side=96, max_labels=5)
    return DemoService(
        net, "lseg_tiny_test", limits=limits, default_labels=["sky", "grass"], work_dir=str(work / "masks")
    )


def _png(path, size=(48, 40), seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return str(path)


def _no_path(msg, *paths):
    for p in paths:
        assert str(p) not in msg, f"message names a server path: {msg}"


def test_labels_checked_before_anything_else(service, tmp_path):
    img = _png(tmp_path / "a.png")
    with pytest.raises(DemoInputError, match="no labels given"):
        service.handle(img, "  ")
    with pytest.raises(DemoInputError, match="label 1 is empty"):
        service.handle(img, "sky,, grass")
    with pytest.raises(DemoInputError, match="too long for the CLIP text encoder"):
        service.handle(img, "sky, " + " ".join(["word"] * 80))
    with pytest.raises(DemoInputError, match="6 labels given; this server accepts at most 5"):
        service.handle(img, "a, b, c, d, e, f")
    with pytest.raises(DemoInputError, match="eval mode must be one of whole, slide, ms_flip"):
        service.handle(img, LABELS, mode="fast")
    labels, notes = service.parse_labels("sky, grass, sky")
    assert labels == ["sky", "grass", "sky"] and len(notes) == 1 and "duplicates id 0" in notes[0]


@pytest.mark.parametrize("text", ["a photo of a.", "a {} of {}.", "a {x} {}", "{}}"])
def test_bad_prompt_templates(service, text):
    with pytest.raises(DemoInputError, match="placeholder"):
        service.parse_templates(text)


def test_prompt_templates_parsed(service):
    assert service.parse_templates("") is None
    assert service.parse_templates(" a photo of a {}.\n\nthis is {}\n") == ("a photo of a {}.", "this is {}")


def test_bad_images_get_messages_without_paths(service, tmp_path):
    with pytest.raises(DemoInputError, match="no image"):
        service.handle(None, LABELS)
    text = tmp_path / "notes.png"
    text.write_bytes(b"not an image\n" * 10)
    with pytest.raises(DemoInputError, match="not an image") as e:
        service.handle(str(text), LABELS)
    _no_path(str(e.value), tmp_path)
    good = _png(tmp_path / "good.png", (64, 64))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(open(good, "rb").read()[:300])
    with pytest.raises(DemoInputError, match="could not be decoded|not an image") as e:
        service.handle(str(truncated), LABELS)
    _no_path(str(e.value), tmp_path)
    big = tmp_path / "big.png"
    Image.new("1", (1000, 1000)).save(big)  # 1 MP in a few hundred bytes: rejected before decoding
    assert os.path.getsize(big) < 10_000
    with pytest.raises(DemoInputError, match=r"1000x1000 = 1.0 MP; this server accepts at most 0.2 MP") as e:
        service.handle(str(big), LABELS)
    _no_path(str(e.value), tmp_path)
    heavy = tmp_path / "heavy.png"
    heavy.write_bytes(b"\0" * 60_000)
    with pytest.raises(DemoInputError, match=r"the file is 0.1 MB; this server accepts at most 0.05 MB"):
        service.handle(str(heavy), LABELS)


def test_request_result_table_and_mask(service, tmp_path):
    from mindcv_lseg import segment

    img = _png(tmp_path / "photo.png", (48, 40))
    out = service.handle(img, LABELS, client_name="../../etc/my photo?.png")
    ref = segment(service.net, img, LABELS)  # the same core, called directly
    np.testing.assert_array_equal(out.result.label_map, ref.label_map)
    assert os.path.basename(out.mask_path) == "my_photo_mask.png"
    assert os.path.dirname(os.path.dirname(out.mask_path)) == service.work_dir
    saved = Image.open(out.mask_path)
    assert saved.mode == "P" and np.array_equal(np.asarray(saved), out.result.label_map)
    counts = np.bincount(out.result.label_map.reshape(-1), minlength=3)
    assert [r[0] for r in out.table] == [0, 1, 2] and [r[1] for r in out.table] == ["sky", "grass", "water"]
    assert [r[3] for r in out.table] == [round(100.0 * c / (48 * 40), 2) for c in counts]
    assert out.overlay.size[0] > 48 and out.overlay.size[1] >= 40  # legend appended
    assert out.notes == []


def test_large_images_downscaled_and_said(service, tmp_path):
    img = _png(tmp_path / "wide.png", (200, 50))
    out = service.handle(img, LABELS)
    assert out.result.label_map.shape == (24, 96)
    assert out.notes == ["the image was downscaled from 200x50 to 96x24 (longest side limit 96 px)"]


@pytest.mark.slow
def test_mask_files_do_not_pile_up(service, tmp_path):
    img = _png(tmp_path / "p.png", (32, 32))
    paths = [service.handle(img, LABELS).mask_path for _ in range(10)]
    assert all(not os.path.exists(p) for p in paths[:2]) and all(os.path.exists(p) for p in paths[-8:])


def test_limits_validated():
    with pytest.raises(ValueError, match="max_side must be positive"):
        DemoLimits(max_side=0)
    with pytest.raises(ValueError, match="max_labels must be <= 256"):
        DemoLimits(max_labels=300)


def _run_demo(cwd, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "demo.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow  # tool subprocesses
def test_without_checkpoint_explains_and_exits_2(tmp_path):
    r = _run_demo(tmp_path)
    assert r.returncode == 2
    assert "python tools/quickstart.py" in r.stderr and "--ckpt_path" in r.stderr
    assert os.listdir(tmp_path) == []  # nothing created
    r = _run_demo(tmp_path, "--model", "lseg_vitb32")
    assert r.returncode == 2 and "no checkpoint given for lseg_vitb32" in r.stderr
    r = _run_demo(tmp_path, "--model", "lseg_vitb32", "--ckpt_path", "missing.ckpt")
    assert r.returncode == 2 and "checkpoint not found: missing.ckpt" in r.stderr


def test_default_is_the_quickstart_model(tmp_path, monkeypatch):
    from mindcv_lseg.data import make_toy_dataset
    from mindcv_lseg.demo.cli import build_parser, resolve_setup
    from mindcv_lseg.quickstart import QUICKSTART_DATA_DIR, QUICKSTART_MODEL, QUICKSTART_OUT_DIR

    monkeypatch.chdir(tmp_path)
    make_toy_dataset(QUICKSTART_DATA_DIR, num_train=1, num_val=5, size=32)
    os.makedirs(QUICKSTART_OUT_DIR)
    open(os.path.join(QUICKSTART_OUT_DIR, f"{QUICKSTART_MODEL}-0003.ckpt"), "wb").close()
    setup = resolve_setup(build_parser().parse_args([]))
    assert setup.model == QUICKSTART_MODEL
    assert setup.ckpt_path == os.path.join(QUICKSTART_OUT_DIR, f"{QUICKSTART_MODEL}-0003.ckpt")
    open(os.path.join(QUICKSTART_OUT_DIR, "best.ckpt"), "wb").close()
    setup = resolve_setup(build_parser().parse_args([]))
    assert setup.ckpt_path == os.path.join(QUICKSTART_OUT_DIR, "best.ckpt")
    assert setup.labels == ["sky", "grass", "water", "road", "red circle", "yellow square"]
    assert [os.path.basename(p) for p in setup.examples] == [f"val_000{i}.png" for i in range(4)]
    assert "quickstart's toy model" in setup.note
