"""Scripts that import mindcv_lseg exit quietly: no deprecation warning per loaded tensor, no ``Cell.__del__``
tracebacks at interpreter exit (item 12 of the first-hour review)."""

import os
import subprocess
import sys
import textwrap

import pytest
from _paths import REPO

pytestmark = pytest.mark.slow  # tool subprocesses in GRAPH mode

NOISE = ("Exception ignored", "Cell.__del__", "total_instance_count", "dtype_to_nptype", "Traceback")

# a network in a module global (alive at interpreter exit), a compiled GRAPH-mode forward, a checkpoint whose
# decoder is stored as float16 (so loading casts), loaded with the project's loader
SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import mindspore as ms
    import mindcv
    {import_lseg}
    from mindcv_lseg.checkpoint import load_into_net, save_checkpoint_atomic

    ms.set_context(mode=ms.GRAPH_MODE)
    net = mindcv.create_model("lseg_tiny_test")
    sd = {{p.name: (p.asnumpy().astype(np.float16) if p.name.startswith("scratch.") else p.asnumpy())
          for p in net.get_parameters()}}
    save_checkpoint_atomic(sd, sys.argv[1])
    net2 = mindcv.create_model("lseg_tiny_test")
    load_into_net(net2, sys.argv[1])
    got = {{p.name: p.asnumpy() for p in net2.get_parameters()}}
    assert all(got[k].dtype == np.float32 and np.array_equal(got[k], sd[k].astype(np.float32)) for k in got)
    net2.set_train(False)
    out = net2(ms.Tensor(np.zeros((1, 3, 64, 64), np.float32)), net2.encode_text(["a", "b"]))
    print("shape", out.shape)
""")


def _run(tmp_path, import_lseg):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(import_lseg=import_lseg))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path / "w.ckpt")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_script_importing_mindcv_lseg_exits_cleanly(tmp_path):
    proc = _run(tmp_path, "import mindcv_lseg")
    assert proc.returncode == 0, proc.stderr
    assert "shape (1, 2, 64, 64)" in proc.stdout
    noisy = [line for line in proc.stderr.splitlines() if any(n in line for n in NOISE)]
    assert not noisy, "\n".join(noisy[:10])


def test_the_exit_hook_is_what_silences_cell_del(tmp_path):
    """Control: the same script with the hook taken out again prints MindSpore's exit tracebacks."""
    proc = _run(
        tmp_path,
        "import atexit, mindcv_lseg, mindcv_lseg.shutdown as s; " "atexit.unregister(s._quiet_cell_finalizers)",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("total_instance_count") > 50


def test_infer_tool_exits_cleanly_and_announces_compilation(tmp_path):
    """A tool run end to end in GRAPH mode: no exit noise, and the graph compilations are announced and timed."""
    import numpy as np
    from PIL import Image

    import mindcv
    import mindspore as ms

    import mindcv_lseg  # noqa: F401

    ms.save_checkpoint(mindcv.create_model("lseg_tiny_test"), str(tmp_path / "tiny.ckpt"))
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 70, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "infer.py"),
            "--model",
            "lseg_tiny_test",
            "--ckpt_path",
            "tiny.ckpt",
            "--labels",
            "sky, other",
            "--input",
            "a.png",
            "--output",
            "out",
            "--save_embeddings",
            "--mode",
            "0",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["a_emb.npy", "a_mask.png", "a_overlay.png", "labels.txt"]
    noisy = [line for line in proc.stderr.splitlines() if any(n in line for n in NOISE)]
    assert not noisy, "\n".join(noisy[:10])
    lines = proc.stderr.splitlines()
    assert "compiling the forward graph for input 1x3x64x96 (first call at this size, ~" in proc.stderr
    assert any(ln.startswith("forward graph for input 1x3x64x96 compiled and ran in ") for ln in lines)
    assert "compiling the embedding graph for input 1x3x64x96 (net.forward_features is a second graph" in proc.stderr
    assert any(ln.startswith("embedding graph for input 1x3x64x96 compiled and ran in ") for ln in lines)
