"""mindcv_lseg.checkpoint: atomic save, checked load, strict load into a net."""

import os
import stat

import numpy as np
import pytest

from mindcv_lseg.checkpoint import (
    CheckpointFormatError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    CheckpointTruncatedError,
    load_checkpoint_checked,
    load_into_net,
    match_state,
    save_checkpoint_atomic,
)


def _net(width=4):
    from mindspore import nn

    return nn.SequentialCell(nn.Dense(3, width), nn.BatchNorm1d(width))


def test_save_roundtrip_mode_and_no_temp(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    dst = tmp_path / "w.ckpt"
    save_checkpoint_atomic({"a": a, "h": np.ones(3, np.float16)}, str(dst), append_dict={"epoch": 7})
    assert sorted(os.listdir(tmp_path)) == ["w.ckpt"]
    assert stat.S_IMODE(os.stat(dst).st_mode) == 0o644
    d = load_checkpoint_checked(str(dst))
    np.testing.assert_array_equal(d["a"].asnumpy(), a)
    assert d["h"].asnumpy().dtype == np.float16
    assert int(d["epoch"].asnumpy()) == 7
    # overwrite an existing (read-only) file
    os.chmod(dst, 0o400)
    save_checkpoint_atomic({"a": a * 2}, str(dst))
    np.testing.assert_array_equal(load_checkpoint_checked(str(dst))["a"].asnumpy(), a * 2)


def test_failed_save_leaves_old_file_and_no_temp(tmp_path):
    dst = tmp_path / "w.ckpt"
    save_checkpoint_atomic({"a": np.zeros(2, np.float32)}, str(dst))
    before = dst.read_bytes()
    with pytest.raises(Exception):
        save_checkpoint_atomic({"a": np.ones(2, np.float32)}, str(dst), append_dict={"bad": object()})
    assert sorted(os.listdir(tmp_path)) == ["w.ckpt"] and dst.read_bytes() == before


def test_safetensors_roundtrip(tmp_path):
    a = np.arange(4, dtype=np.float32)
    dst = tmp_path / "w.safetensors"
    save_checkpoint_atomic({"a": a}, str(dst))
    np.testing.assert_array_equal(load_checkpoint_checked(str(dst))["a"].asnumpy(), a)


def test_load_errors(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="not found"):
        load_checkpoint_checked(str(tmp_path / "nope.ckpt"))
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"<html>not a checkpoint</html>")
    with pytest.raises(CheckpointFormatError, match="not a MindSpore checkpoint"):
        load_checkpoint_checked(str(junk))
    good = tmp_path / "good.ckpt"
    save_checkpoint_atomic({"a": np.zeros((64, 64), np.float32)}, str(good))
    data = good.read_bytes()
    trunc = tmp_path / "trunc.ckpt"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointTruncatedError, match="truncated"):
        load_checkpoint_checked(str(trunc))


def test_load_into_net_strict(tmp_path):
    net = _net(4)
    path = tmp_path / "n.ckpt"
    save_checkpoint_atomic(net, str(path), append_dict={"epoch": 1})
    w = net[0].weight.asnumpy().copy()
    net2 = _net(4)
    assert load_into_net(net2, str(path)) == ([], [])
    np.testing.assert_array_equal(net2[0].weight.asnumpy(), w)
    with pytest.raises(CheckpointMismatchError) as ei:
        load_into_net(_net(5), str(path))
    assert "0.weight: (4, 3) vs (5, 3)" in str(ei.value)
    partial = tmp_path / "p.ckpt"
    # "0.extra" looks like a network parameter -> unexpected; optimizer / training state is not
    save_checkpoint_atomic(
        {"0.weight": w, "0.extra": w, "moments.0.weight": w, "adam_m.0.weight": w},
        str(partial),
        append_dict={"epoch": 3, "train_config": "model: x"},
    )
    with pytest.raises(CheckpointMismatchError) as ei:
        load_into_net(_net(4), str(partial))
    msg = str(ei.value)
    assert "0.bias" in msg and "0.extra" in msg and "moments" not in msg and "epoch" not in msg
    missing, unexpected = load_into_net(_net(4), str(partial), strict=False)
    assert "0.bias" in missing and unexpected == ["0.extra"]


def test_load_into_net_streams_ckpt_and_safetensors(tmp_path):
    src = _net(4)
    want = {n: p.asnumpy().copy() for n, p in src.parameters_and_names()}
    for ext in ("ckpt", "safetensors"):
        path = tmp_path / ("s." + ext)
        save_checkpoint_atomic(src, str(path))
        dst = _net(4)
        assert load_into_net(dst, str(path)) == ([], [])
        for n, p in dst.parameters_and_names():
            np.testing.assert_array_equal(p.asnumpy(), want[n], err_msg=n)


def test_load_into_net_refuses_before_touching_the_net(tmp_path):
    path = tmp_path / "m.ckpt"
    good = _net(4)
    bad = {n: p.asnumpy() + 1 for n, p in good.parameters_and_names()}
    bad["0.bias"] = np.zeros(7, np.float32)  # one mis-shaped entry
    save_checkpoint_atomic(bad, str(path))
    target = _net(4)
    before = target[0].weight.asnumpy().copy()
    with pytest.raises(CheckpointMismatchError, match=r"0\.bias: \(7,\) vs \(4,\)"):
        load_into_net(target, str(path))
    np.testing.assert_array_equal(target[0].weight.asnumpy(), before)


def test_match_state_kinds_scope_and_required():
    net = {"encoder.w": (2, 3), "encoder.b": (2,), "scratch.w": (4,), "top": ()}
    ckpt = {
        "encoder.w": (3, 3),
        "scratch.w": (4,),
        "scratch.extra": (1,),
        "top": (),
        "moments.encoder.w": (2, 3),
        "epoch": (),
    }
    m = match_state(ckpt, net)
    assert m.missing == ["encoder.b"] and m.unexpected == ["scratch.extra"]  # training state is out of scope
    assert m.mismatched == [("encoder.w", (3, 3), (2, 3))] and m
    text = m.message("header")
    assert text.splitlines()[0] == "header" and "encoder.w: (3, 3) vs (2, 3)" in text and "moments" not in text
    only_scratch = match_state(ckpt, net, required=("scratch.",))  # the encoder is neither required nor checked
    assert only_scratch.missing == [] and only_scratch.mismatched == [] and only_scratch.unexpected == ["scratch.extra"]
    assert not match_state({"scratch.w": (4,)}, net, required=("scratch.",), scope=())


def test_load_into_net_one_part(tmp_path):
    from mindspore import nn

    def two_part_net():
        return nn.CellDict({"encoder": nn.Dense(3, 4), "scratch": nn.Dense(4, 2)})

    src = two_part_net()
    enc = {p.name: p.asnumpy() + 1 for p in src.get_parameters() if p.name.startswith("encoder.")}
    part = tmp_path / "encoder.ckpt"
    save_checkpoint_atomic(dict(enc, epoch=np.int64(3)), str(part))
    dst = two_part_net()
    scratch_before = {p.name: p.asnumpy().copy() for p in dst.get_parameters() if p.name.startswith("scratch.")}
    assert load_into_net(dst, str(part), prefix="encoder.") == ([], [])
    got = {p.name: p.asnumpy() for p in dst.get_parameters()}
    for n, v in enc.items():
        np.testing.assert_array_equal(got[n], v)
    for n, v in scratch_before.items():
        np.testing.assert_array_equal(got[n], v)  # the other part is untouched
    # a file with the decoder too: its decoder tensors are unexpected for an encoder-only load
    full = tmp_path / "full.ckpt"
    save_checkpoint_atomic(src, str(full))
    with pytest.raises(CheckpointMismatchError, match=r"unexpected .*\n  scratch\.weight"):
        load_into_net(two_part_net(), str(full), prefix="encoder.")
    assert load_into_net(two_part_net(), str(full), strict=False, prefix="encoder.")[1] == [
        "scratch.weight",
        "scratch.bias",
    ]
    # the trainer's backbone_ckpt / text_ckpt loading: the same check, with the part named in the message
    from mindcv_lseg.engine.trainer import load_partial_weights

    assert load_partial_weights(two_part_net(), str(part), "encoder.", "image-encoder") == []
    with pytest.raises(CheckpointMismatchError, match=r"image-encoder checkpoint .*full\.ckpt holds parameters that"):
        load_partial_weights(two_part_net(), str(full), "encoder.", "image-encoder")
    empty = tmp_path / "state_only.ckpt"
    save_checkpoint_atomic({"moments.encoder.weight": enc["encoder.weight"]}, str(empty))
    with pytest.raises(CheckpointMismatchError, match="contains no parameter of the network under encoder."):
        load_partial_weights(two_part_net(), str(empty), "encoder.", "image-encoder")
