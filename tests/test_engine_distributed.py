"""Data-parallel training under msrun (2 CPU workers): the run completes and both ranks end with identical
parameters (gradients averaged over ranks, BatchNorm statistics synchronised at epoch ends); only rank 0 writes
checkpoints and logs. Tiny: lseg_tiny_test, 8 toy images of 64 px, batch 2 per rank, 2 epochs."""

import os
import shutil
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # two msrun workers training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(
    shutil.which("msrun", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")) is None,
    reason="msrun not installed",
)
def test_msrun_two_workers_identical_params(tmp_path):
    from mindcv_lseg.data import make_toy_dataset

    data = make_toy_dataset(str(tmp_path / "toy"), num_train=8, num_val=2, size=64, seed=0)
    out, digests, logs = tmp_path / "out", tmp_path / "digests", tmp_path / "msrun_logs"
    env = dict(os.environ)
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")  # msrun starts a bare `python`: the venv's first
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        os.path.join(bindir, "msrun") if os.path.exists(os.path.join(bindir, "msrun")) else "msrun",
        "--worker_num",
        "2",
        "--local_worker_num",
        "2",
        "--master_port",
        str(_free_port()),
        "--log_dir",
        str(logs),
        "--join",
        "True",
        "python",
        os.path.join(ROOT, "tools", "train.py"),
        "-c",
        os.path.join(ROOT, "configs", "lseg_toy.yaml"),
        "--distribute",
        "--data_dir",
        data,
        "--ckpt_save_dir",
        str(out),
        "--param_digest_dir",
        str(digests),
        "--crop_size",
        "64",
        "--base_size",
        "64",
        "--batch_size",
        "2",
        "--epoch_size",
        "2",
        "--val_interval",
        "2",
        "--progress_bar",
        "false",
        "--lr",
        "0.01",
    ]
    r = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    worker_logs = ""
    if logs.is_dir():
        for f in sorted(os.listdir(logs)):
            worker_logs += f"--- {f}\n" + (logs / f).read_text(errors="replace")[-2000:]
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:] + worker_logs
    d0 = (digests / "params_rank0.txt").read_text()
    d1 = (digests / "params_rank1.txt").read_text()
    assert "__all__" in d0 and len(d0.splitlines()) > 50
    assert d0 == d1, "the two data-parallel replicas ended with different parameters"
    # only rank 0 wrote: one set of checkpoints, the log says 2 ranks and 2 steps/epoch (8 images / 2 ranks / 2)
    assert sorted(f for f in os.listdir(out) if f.endswith(".ckpt")) == [
        "best.ckpt",
        "lseg_tiny_test-0001.ckpt",
        "lseg_tiny_test-0002.ckpt",
    ]
    log = (out / "train.log").read_text()
    assert "2 rank(s)" in log and "2 steps/epoch" in log and "val mIoU" in log
