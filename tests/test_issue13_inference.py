"""Regression tests for issue 13 ("a new user's first hour"), inference side: items 2, 3, 4, 5, 8, 10.

Each test is named after the issue item and uses the input the issue names (a 4000x3000 photo, a 16-bit image, a
decompression bomb, a label with a newline, ``--output`` naming a file, templates ``{x}`` / two ``{}``), run in
PYNATIVE mode on the tiny model so that nothing compiles.
"""

import os
import stat
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import infer  # noqa: E402  (tools/infer.py)

from mindcv_lseg.data.io import read_image  # noqa: E402
from mindcv_lseg.eval import api  # noqa: E402
from mindcv_lseg.eval.inference import DEFAULT_MAX_WHOLE_PIXELS, InferenceConfig, plan_inference  # noqa: E402


@pytest.fixture
def tiny(tiny_lseg):
    """(folder holding tiny.ckpt, network)."""
    path, net = tiny_lseg
    return path.parent, net


def _scene(h=48, w=80, seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (30, 90, 220)
    img[:, w // 2 :] = (40, 180, 40)
    return np.clip(img.astype(int) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)


def _infer(args, capsys, d):
    code = infer.main(["--model", "lseg_tiny_test", "--ckpt_path", str(d / "tiny.ckpt"), "--mode", "1"] + args)
    out = capsys.readouterr()
    return code, out.out, out.err


def _png_bomb(path, side=20000):
    """A real decompression bomb: a valid 1-bit PNG of side x side pixels (400 MP) that is a few kB on disk."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    raw = zlib.compress(row * side, 9)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


# ------------------------------------------------------------------------------------------------- item 2
def test_issue13_item2_4000x3000_photo_whole_mode_plans_sliding_windows():
    cfg, note = plan_inference(InferenceConfig(mode="whole"), 3000, 4000)
    assert cfg.mode == "slide" and cfg.scales is None and cfg.crop_size == 480
    assert "4000x3000" in note and "sliding 480x480 windows" in note
    # below the budget nothing changes; no limit keeps "whole"
    assert plan_inference(InferenceConfig(mode="whole"), 768, 1024) == (InferenceConfig(mode="whole"), None)
    assert plan_inference(InferenceConfig(mode="whole", max_whole_pixels=None), 3000, 4000)[0].mode == "whole"
    assert DEFAULT_MAX_WHOLE_PIXELS == 1024 * 1024
    with pytest.raises(ValueError, match="max_whole_pixels must be positive"):
        InferenceConfig(max_whole_pixels=0)


def test_issue13_item2_infer_4000x3000_photo_with_max_size(tiny, tmp_path, capsys):
    d, _ = tiny
    photo = tmp_path / "photo.jpg"
    big = np.asarray(Image.fromarray(_scene(60, 80)).resize((4000, 3000), Image.NEAREST))
    Image.fromarray(big).save(photo, quality=90)
    code, out, err = _infer(
        ["--labels", "water, grass", "--input", str(photo), "--output", str(tmp_path / "o"), "--max_size", "160"],
        capsys,
        d,
    )
    assert code == 0, err
    assert "resized 4000x3000 -> 160x120 (max_size 160)" in out
    mask = Image.open(tmp_path / "o" / "photo_mask.png")
    assert mask.size == (4000, 3000)  # the mask keeps the photo's size


@pytest.mark.slow
def test_issue13_item2_whole_above_budget_slides_and_says_so(tiny, tmp_path, capsys):
    """The same path as the 4000x3000 photo, scaled down: a 64x100 image against a budget of 2048 pixels."""
    d, net = tiny
    img = _scene(64, 100, seed=3)
    Image.fromarray(img).save(tmp_path / "big.png")
    code, out, err = _infer(
        [
            "--labels",
            "water, grass, other",
            "--input",
            str(tmp_path / "big.png"),
            "--output",
            str(tmp_path / "o"),
            "--max_whole_pixels",
            "2048",
            "--crop_size",
            "64",
        ],
        capsys,
        d,
    )
    assert code == 0, err
    assert "100x64 image (0.0 MP padded) is above the whole-image budget" in out
    assert "using sliding 64x64 windows" in out and ", slide)" in out
    ids = np.array(Image.open(tmp_path / "o" / "big_mask.png"))
    # segment() reports the switch too, and gives exactly the sliding-window result
    res = api.segment(net, img, ["water", "grass", "other"], crop_size=64, max_whole_pixels=2048)
    assert res.mode == "slide" and "sliding 64x64 windows" in res.notes[0]
    np.testing.assert_array_equal(ids, res.label_map)
    ref = api.segment(net, img, ["water", "grass", "other"], mode="slide", crop_size=64)
    assert ref.mode == "slide" and ref.notes == []
    np.testing.assert_array_equal(ids, ref.label_map)
    # embeddings would need the whole forward: a clear error instead of a crash
    with pytest.raises(ValueError, match="pass max_size"):
        api.segment(net, img, ["water", "grass"], crop_size=64, max_whole_pixels=2048, return_embeddings=True)


# ------------------------------------------------------------------------------------------------- item 3
def test_issue13_item3_16bit_image_is_not_white_in_infer_and_segment(tiny, tmp_path, capsys):
    d, net = tiny
    g8 = _scene(48, 80)[:, :, 1]
    g16 = g8.astype(np.uint16) * 257 + 100  # 16-bit grayscale; round(v / 257) == g8
    path = tmp_path / "g16.png"
    Image.fromarray(g16).save(path)
    assert Image.open(path).mode.startswith("I")
    expected = np.repeat(g8[:, :, None], 3, axis=2)
    # one reader: the datasets' read_image, segment()'s load_image (path and PIL image) agree
    np.testing.assert_array_equal(read_image(str(path)), expected)
    np.testing.assert_array_equal(np.asarray(api.load_image(str(path))), expected)
    np.testing.assert_array_equal(np.asarray(api.load_image(Image.open(path))), expected)
    np.testing.assert_array_equal(np.asarray(api.load_image(g16)), expected)
    res16 = api.segment(net, str(path), ["dark", "bright"])
    res8 = api.segment(net, expected, ["dark", "bright"])
    np.testing.assert_array_equal(np.asarray(res16.image), expected)
    np.testing.assert_array_equal(res16.label_map, res8.label_map)
    code, _, err = _infer(
        ["--labels", "dark, bright", "--input", str(path), "--output", str(tmp_path / "o")], capsys, d
    )
    assert code == 0, err
    np.testing.assert_array_equal(np.array(Image.open(tmp_path / "o" / "g16_mask.png")), res8.label_map)


# ------------------------------------------------------------------------------------------------- item 4
def test_issue13_item4_decompression_bomb_does_not_stop_the_folder(tiny, tmp_path, capsys):
    d, _ = tiny
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(_scene(seed=1)).save(folder / "a_first.png")
    _png_bomb(folder / "b_bomb.png")
    assert (folder / "b_bomb.png").stat().st_size < 200_000
    (folder / "c_truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    Image.fromarray(_scene(seed=2)).save(folder / "d_last.png")
    code, out, err = _infer(
        ["--labels", "water, grass", "--input", str(folder), "--output", str(tmp_path / "o")], capsys, d
    )
    assert code == infer_exit_some_failed() == 3
    assert "FAILED" in err and "b_bomb.png" in err and "too large to decode safely" in err
    assert "c_truncated.jpg" in err and "cannot read image" in err
    assert "2 of 4 image(s) failed" in err and "2 of 4 image(s) segmented" in out
    assert "Traceback" not in err
    for name in ("a_first", "d_last"):  # the images before AND after the bad ones are processed
        assert (tmp_path / "o" / f"{name}_mask.png").is_file() and (tmp_path / "o" / f"{name}_overlay.png").is_file()
    assert not any(n.startswith("b_bomb") or n.startswith("c_truncated") for n in os.listdir(tmp_path / "o"))


def infer_exit_some_failed():
    from mindcv_lseg.eval.folder import EXIT_SOME_FAILED

    return EXIT_SOME_FAILED


def test_issue13_item4_error_during_inference_is_reported_per_image(tiny, tmp_path, monkeypatch, capsys):
    """Any per-image error (here: the network fails on one image) is reported and the rest are processed."""
    d, _ = tiny
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(_scene(seed=i)).save(folder / f"img{i}.png")
    real = api.run_inference
    calls = []

    def flaky(net, x, text, cfg):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("allocation of 17.7 GB failed\n<long MindSpore dump>")
        return real(net, x, text, cfg)

    monkeypatch.setattr(api, "run_inference", flaky)
    code, out, err = _infer(
        ["--labels", "water, grass", "--input", str(folder), "--output", str(tmp_path / "o")], capsys, d
    )
    assert code == 3
    assert "img1.png: RuntimeError: allocation of 17.7 GB failed" in err and "long MindSpore dump" not in err
    assert sorted(n for n in os.listdir(tmp_path / "o") if n.endswith("_mask.png")) == [
        "img0_mask.png",
        "img2_mask.png",
    ]


# ------------------------------------------------------------------------------------------------- item 5
@pytest.mark.parametrize(
    "labels,needle",
    [("dog\ngrass, other", "U+000A LINE FEED"), ("dog, gr\tass", "U+0009 TAB"), ("dog, bell\x07", "U+0007")],
)
def test_issue13_item5_label_with_newline_refused_before_anything_is_written(tiny, tmp_path, capsys, labels, needle):
    d, _ = tiny
    Image.fromarray(_scene()).save(tmp_path / "scene.png")
    out_dir = tmp_path / "o"
    code, _, err = _infer(
        ["--labels", labels, "--input", str(tmp_path / "scene.png"), "--output", str(out_dir)], capsys, d
    )
    assert code == 2 and needle in err and "control character" in err, err
    assert not out_dir.exists()
    with pytest.raises(ValueError, match="line break or control character"):
        api.parse_labels(["sky", "tree\rx"])


# ------------------------------------------------------------------------------------------------- item 8
def test_issue13_item8_output_pointing_at_a_file(tiny, tmp_path, capsys):
    d, _ = tiny
    Image.fromarray(_scene()).save(tmp_path / "scene.png")
    target = tmp_path / "result.png"
    target.write_bytes(b"keep me")
    code, _, err = _infer(
        ["--labels", "a, b", "--input", str(tmp_path / "scene.png"), "--output", str(target)], capsys, d
    )
    assert code == 2 and "is a file, not a folder" in err and "Traceback" not in err
    assert target.read_bytes() == b"keep me"
    code, _, err = _infer(
        ["--labels", "a, b", "--input", str(tmp_path / "scene.png"), "--output", str(target / "sub")], capsys, d
    )
    assert code == 2 and "is a file" in err


@pytest.mark.parametrize(
    "templates,needle",
    [
        ("a photo of a {x} {}.", "has the field(s) {x}"),
        ("{} next to {}", "has 2 '{}' fields"),
        ("a photo", "has 0 '{}' fields"),
        ("a {", "malformed"),
    ],
)
def test_issue13_item8_prompt_templates_with_extra_fields(tiny, tmp_path, capsys, templates, needle):
    d, _ = tiny
    Image.fromarray(_scene()).save(tmp_path / "scene.png")
    code, _, err = _infer(
        [
            "--labels",
            "a, b",
            "--input",
            str(tmp_path / "scene.png"),
            "--output",
            str(tmp_path / "o"),
            "--prompt_templates",
            f"a photo of a {{}}.|{templates}",
        ],
        capsys,
        d,
    )
    assert code == 2 and "--prompt_templates" in err and needle in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_issue13_item8_write_errors_name_the_users_path_not_the_temp_file(tmp_path):
    from mindcv_lseg.fileio import atomic_save, atomic_write_text

    dest = tmp_path / "metrics.json"

    def broken_writer(tmp):  # fails with an OSError about the temp file, as PIL/numpy writers do
        open(os.path.join(tmp, "x"), "w")

    with pytest.raises(OSError) as e:
        atomic_save(broken_writer, str(dest))
    assert str(dest) in str(e.value) and ".tmp_" not in str(e.value) and e.value.filename == str(dest)
    assert os.listdir(tmp_path) == []  # no temp file left behind
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OSError) as e:
        atomic_write_text(str(tmp_path / "afile" / "labels.txt"), "a\n")
    assert "labels.txt" in str(e.value) and ".tmp_" not in str(e.value)


# ------------------------------------------------------------------------------------------------- item 10
def test_issue13_item10_outputs_respect_the_umask(tiny, tmp_path, capsys):
    from mindcv_lseg.engine.config import parse_args, save_config
    from mindcv_lseg.fileio import atomic_write_text

    d, _ = tiny
    Image.fromarray(_scene()).save(tmp_path / "scene.png")
    old = os.umask(0o022)
    try:
        code, _, err = _infer(
            ["--labels", "a, b", "--input", str(tmp_path / "scene.png"), "--output", str(tmp_path / "o")], capsys, d
        )
        assert code == 0, err
        for name in ("labels.txt", "scene_mask.png", "scene_overlay.png"):
            assert stat.S_IMODE(os.stat(tmp_path / "o" / name).st_mode) == 0o644, name
        save_config(parse_args([]), str(tmp_path / "config.yaml"))
        assert stat.S_IMODE(os.stat(tmp_path / "config.yaml").st_mode) == 0o644
        os.umask(0o027)
        atomic_write_text(str(tmp_path / "m.csv"), "a,b\n")
        assert stat.S_IMODE(os.stat(tmp_path / "m.csv").st_mode) == 0o640
        os.umask(0o002)
        atomic_write_text(str(tmp_path / "m.csv"), "a,b\n")
        assert stat.S_IMODE(os.stat(tmp_path / "m.csv").st_mode) == 0o664
    finally:
        os.umask(old)


def test_issue13_item10_subprocess_inherits_umask(tmp_path):
    """The mode comes from the process's umask (read from /proc), not from a constant."""
    code = (
        "import os, stat, sys; sys.path.insert(0, sys.argv[1]); from mindcv_lseg.fileio import atomic_write_bytes;"
        "atomic_write_bytes(sys.argv[2], b'x'); print(oct(stat.S_IMODE(os.stat(sys.argv[2]).st_mode)))"
    )
    r = subprocess.run(
        ["sh", "-c", f"umask 007 && {sys.executable} -c \"{code}\" {ROOT} {tmp_path / 'f.bin'}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0o660"


def test_issue13_item8_checkpoint_write_error_names_the_users_path(tmp_path, monkeypatch):
    import mindspore as ms

    from mindcv_lseg.checkpoint import CheckpointError, save_checkpoint_atomic

    def failing_save(obj, file_name, **kwargs):  # MindSpore quotes the file name it was given
        with open(file_name, "wb") as f:
            f.write(b"partial")
        raise RuntimeError(f"Failed to save the checkpoint file {file_name}: No space left on device")

    monkeypatch.setattr(ms, "save_checkpoint", failing_save)
    dest = tmp_path / "best.ckpt"
    with pytest.raises(CheckpointError) as e:
        save_checkpoint_atomic({"w": np.zeros(3, np.float32)}, str(dest))
    assert str(e.value).startswith(f"cannot write checkpoint {dest}") and "No space left" in str(e.value)
    assert ".tmp" not in str(e.value).replace(str(tmp_path), "")
    assert os.listdir(tmp_path) == []
