"""Exact resume: a toy run killed with SIGKILL after a checkpoint and resumed with ``--resume auto`` ends with the
same parameters (bit for bit) as an uninterrupted run with the same seed. Also: checkpoint contents, keep-last-k,
best.ckpt, resolved config, metrics/plot files, and clear errors for bad resume paths.

Tiny on purpose: lseg_tiny_test, 8 toy images of 64 px, batch 2 (4 steps/epoch), 3 epochs, grad accumulation 2.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.slow  # several toy trainings in subprocesses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "tools", "train.py")


def _toy(tmp_path_factory):
    from mindcv_lseg.data import make_toy_dataset

    root = str(tmp_path_factory.mktemp("toy") / "toy")
    make_toy_dataset(root, num_train=8, num_val=2, size=64, seed=0)
    return root


def _argv(data_dir, out, *extra):
    return [
        sys.executable,
        TRAIN,
        "-c",
        os.path.join(ROOT, "configs", "lseg_toy.yaml"),
        "--data_dir",
        data_dir,
        "--ckpt_save_dir",
        out,
        "--crop_size",
        "64",
        "--base_size",
        "64",
        "--batch_size",
        "2",
        "--epoch_size",
        "3",
        "--gradient_accumulation_steps",
        "2",
        "--val_interval",
        "1",
        "--keep_checkpoint_max",
        "2",
        "--progress_bar",
        "false",
        "--log_interval",
        "1",
        "--lr",
        "0.01",
        "--seed",
        "7",
        *extra,
    ]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _params(path):
    from mindcv_lseg.checkpoint import load_checkpoint_checked

    return {k: (v if isinstance(v, str) else v.asnumpy()) for k, v in load_checkpoint_checked(path).items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    data = _toy(tmp_path_factory)
    base = tmp_path_factory.mktemp("runs")
    full, killed = str(base / "full"), str(base / "killed")
    cwd = str(base)
    r = subprocess.run(_argv(data, full), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=420)
    assert r.returncode == 0, r.stderr[-3000:]

    # second run: SIGKILL as soon as the epoch-1 checkpoint exists (mid epoch 2), then resume
    proc = subprocess.Popen(
        _argv(data, killed), cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    first = os.path.join(killed, "lseg_tiny_test-0001.ckpt")
    t0 = time.time()
    while not os.path.exists(first):
        assert proc.poll() is None, "training exited before writing its first checkpoint"
        assert time.time() - t0 < 420, "no checkpoint after 420 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = sorted(f for f in os.listdir(killed) if f.endswith(".ckpt") and not f.startswith("."))
    r2 = subprocess.run(
        _argv(data, killed, "--resume", "auto"), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=420
    )
    assert r2.returncode == 0, r2.stderr[-3000:]
    return {
        "full": full,
        "killed": killed,
        "killed_at": killed_at,
        "data": data,
        "cwd": cwd,
        "full_output": r.stdout + r.stderr,
        "resumed_output": r2.stdout + r2.stderr,
    }


def test_resume_after_sigkill_is_bit_exact(runs):
    assert "lseg_tiny_test-0003.ckpt" not in runs["killed_at"], "the kill came too late to test anything"
    a = _params(os.path.join(runs["full"], "lseg_tiny_test-0003.ckpt"))
    b = _params(os.path.join(runs["killed"], "lseg_tiny_test-0003.ckpt"))
    weights = [
        k for k in a if not isinstance(a[k], str) and k not in ("epoch", "step", "best_miou", "best_epoch", "seed")
    ]
    assert any(k.startswith("moments.") for k in weights) and "global_step" in weights
    assert set(weights) <= set(b)
    for k in weights:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), f"{k} differs after resume"
    assert int(a["epoch"]) == int(b["epoch"]) == 3
    assert int(a["step"]) == int(b["step"]) == 12  # 3 epochs x 4 micro-batches
    assert int(a["global_step"][0]) == 6  # 12 micro-batches / accumulation 2


def test_training_really_changed_the_weights_and_froze_clip(runs):
    import mindcv
    import mindspore as ms

    import mindcv_lseg  # noqa: F401
    import mindcv_lseg.models  # noqa: F401

    ms.set_seed(7)
    init = {p.name: p.asnumpy() for p in mindcv.create_model("lseg_tiny_test").get_parameters()}
    final = _params(os.path.join(runs["full"], "lseg_tiny_test-0003.ckpt"))
    changed = [k for k in init if k.startswith(("encoder.", "scratch.")) and not np.array_equal(init[k], final[k])]
    assert len(changed) > 10
    clip = [k for k in init if k.startswith("clip_text.")]
    assert clip and all(np.array_equal(init[k], final[k]) for k in clip)


def test_checkpoint_files_and_logs(runs):
    out = runs["full"]
    files = sorted(os.listdir(out))
    # keep_checkpoint_max = 2: epoch 1 deleted
    assert [f for f in files if f.startswith("lseg_tiny_test-")] == [
        "lseg_tiny_test-0002.ckpt",
        "lseg_tiny_test-0003.ckpt",
    ]
    assert "best.ckpt" in files and not [f for f in files if f.startswith(".")]
    for f in ("config.yaml", "train.log", "metrics.csv", "metrics.json", "curves.png"):
        assert f in files, f
    with open(os.path.join(out, "config.yaml")) as fh:
        cfg = yaml.safe_load(fh)
    assert cfg["model"] == "lseg_tiny_test" and cfg["gradient_accumulation_steps"] == 2 and cfg["seed"] == 7
    ck = _params(os.path.join(out, "lseg_tiny_test-0003.ckpt"))
    assert yaml.safe_load(ck["train_config"])["crop_size"] == 64
    import json

    rows = json.loads(ck["train_history"])
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all("val_miou" in r for r in rows)
    with open(os.path.join(out, "metrics.json")) as fh:
        assert [r["epoch"] for r in json.load(fh)] == [1, 2, 3]

    best = _params(os.path.join(out, "best.ckpt"))
    # stored as a float32 tensor in the checkpoint, logged as a float64 number
    assert float(best["best_miou"]) == pytest.approx(max(r["val_miou"] for r in rows), rel=1e-6)
    # the resumed run rebuilt the same history (epochs 1..3, no duplicates)
    with open(os.path.join(runs["killed"], "metrics.json")) as fh:
        assert [r["epoch"] for r in json.load(fh)] == [1, 2, 3]
    # a training checkpoint loads as a plain network checkpoint (optimizer state ignored)
    import mindcv

    import mindcv_lseg.models  # noqa: F401
    from mindcv_lseg.checkpoint import load_into_net

    net = mindcv.create_model("lseg_tiny_test", weight_init=False)
    assert load_into_net(net, os.path.join(out, "best.ckpt"), strict=True) == ([], [])


def test_bad_resume_path_is_a_clear_error(runs, tmp_path):
    r = subprocess.run(
        _argv(runs["data"], str(tmp_path / "x"), "--resume", str(tmp_path / "nope.ckpt")),
        cwd=runs["cwd"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 1
    assert "resume checkpoint not found" in r.stderr and "Traceback" not in r.stderr


def test_bad_config_exit_code(runs, tmp_path):
    r = subprocess.run(
        _argv(runs["data"], str(tmp_path / "y"), "--opt", "rmsprop"),
        cwd=runs["cwd"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "'opt'" in r.stderr and "Traceback" not in r.stderr


def test_compilation_is_announced_and_the_output_is_quiet(runs):
    with open(os.path.join(runs["full"], "train.log")) as fh:
        log = fh.read()
    for graph in (
        "the training graph for input 2x3x64x64 (first step, ~40 s on a 2-core CPU)",
        "the optimizer-update graph (first update)",
    ):
        assert log.count(f"compiling {graph}...") == 1, graph
    assert log.count("training graph for input 2x3x64x64 compiled and ran in ") == 1
    assert "forward graph for input 1x3x64x64" in runs["full_output"]  # validation (stderr)
    assert "compiling the training graph" in runs["resumed_output"]  # a new process compiles again, and says so
    for output in (runs["full_output"], runs["resumed_output"]):
        for noise in ("Exception ignored", "Cell.__del__", "dtype_to_nptype", "warmup_epochs + decay_epochs"):
            assert noise not in output, noise
