"""Shared test fixtures: the reference outputs of the public parity case and its converted synthetic checkpoint."""

import subprocess
import sys

import pytest
from _paths import REPO, fixture_file
from parity_weights import write_npz


def run_tool(*args: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run ``python <args>`` from the repository root, capturing output."""
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


@pytest.fixture(scope="session")
def parity_expected():
    """The reference outputs of the public case (clip_vitb32_384, seed 0)."""
    import numpy as np

    with np.load(fixture_file("parity", "expected_clip_vitb32_384_seed0.npz")) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="session")
def parity_ckpt(tmp_path_factory):
    """The public synthetic checkpoint (npz form, ``tests/parity_weights.py``) converted with ``tools/convert.py``."""
    work = tmp_path_factory.mktemp("parity")
    npz, ckpt = work / "lseg_b32_s0.npz", work / "lseg_b32_s0.ckpt"
    write_npz(str(npz), "clip_vitb32_384", seed=0)
    run_tool("tools/convert.py", "--model", "lseg_vitb32", "--src", str(npz), "--dst", str(ckpt))
    npz.unlink()  # 0.75 GB; the converted file is all the tests need
    return ckpt


def pytest_unconfigure(config):
    """Free the test networks while MindSpore is still alive: otherwise ``Cell.__del__`` prints harmless
    ``total_instance_count`` tracebacks at interpreter exit, after pytest's summary line."""
    import gc

    gc.collect()


@pytest.fixture(scope="session")
def tiny_lseg(tmp_path_factory):
    """``(checkpoint path, network in eval mode)`` of a randomly initialised ``lseg_tiny_test``."""
    import mindcv
    import mindspore as ms

    import mindcv_lseg  # noqa: F401  (registers the model)

    net = mindcv.create_model("lseg_tiny_test")
    path = tmp_path_factory.mktemp("tiny_lseg") / "tiny.ckpt"
    ms.save_checkpoint(net, str(path))
    net.set_train(False)
    return path, net
