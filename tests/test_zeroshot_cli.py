"""``tools/validate.py -c configs/lseg_zs_fss.yaml`` end to end on a generated fake FSS-1000 tree (tiny model),
its numbers checked against an in-process recomputation, and its refusals of bad input (exit 2)."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_tool

import mindcv
import mindspore as ms

import mindcv_lseg  # noqa: F401  (registers the lseg_* entries)
from mindcv_lseg.data.fewshot import FSS1000Dataset
from mindcv_lseg.data.fewshot_fake import make_fake_fss
from mindcv_lseg.eval.zeroshot import predict_zeroshot
from mindcv_lseg.eval.zeroshot_metrics import episode_inter_union

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.slow  # builds networks and runs tool subprocesses


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    work = tmp_path_factory.mktemp("zs_cli")
    make_fake_fss(str(work / "fss"), classes=("bus", "accordion"), images_per_class=2, size=32)
    ckpt = work / "tiny.ckpt"
    ms.set_seed(0)
    ms.save_checkpoint(mindcv.create_model("lseg_tiny_test"), str(ckpt))
    return work, ckpt


def test_validate_zeroshot_fss_end_to_end(tiny_setup):
    work, ckpt = tiny_setup
    out = work / "out"
    proc = run_tool(
        "tools/validate.py",
        "-c",
        "configs/lseg_zs_fss.yaml",
        "--data_dir",
        str(work / "fss"),
        "--ckpt_path",
        str(ckpt),
        "--model",
        "lseg_tiny_test",
        "--crop_size",
        "64",
        "--mode",
        "1",
        "--eval_output",
        str(out),
        "--progress_bar",
        "false",
    )
    data = json.loads((out / "metrics.json").read_text())
    assert set(data) >= {"mIoU", "FB_IoU", "per_class", "num_episodes", "fold", "split_file"}
    assert data["num_episodes"] == 4 and [r["name"] for r in data["per_class"]] == ["accordion", "bus"]
    line = re.search(r"^Fold 0, 0-shot: mIoU +([\d.]+), FB-IoU +([\d.]+)$", proc.stdout, re.M)
    assert line, proc.stdout
    assert float(line.group(1)) == pytest.approx(100 * data["mIoU"], abs=0.006)
    assert float(line.group(2)) == pytest.approx(100 * data["FB_IoU"], abs=0.006)
    assert re.search(r"^\s+760\s+accordion\s+[\d.]+\s+2$", proc.stdout, re.M), proc.stdout

    # the same numbers, recomputed here episode by episode
    net = mindcv.create_model("lseg_tiny_test", checkpoint_path=str(ckpt))
    net.set_train(False)
    ds = FSS1000Dataset(str(work / "fss"), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), img_size=64)
    inter, union = np.zeros((2, 2)), np.zeros((2, 2))
    for i in range(len(ds)):
        ep = ds.episode(i)
        pred = predict_zeroshot(net, ep.image[None], [ep.class_name])[0]
        ii, uu = episode_inter_union(pred, ep.mask)
        inter[:, ep.class_id - 760] += ii
        union[:, ep.class_id - 760] += uu
    miou = np.mean(inter[1] / np.maximum(union[1], 1))
    fb = 0.5 * (inter[0].sum() / union[0].sum() + inter[1].sum() / union[1].sum())
    assert data["mIoU"] == pytest.approx(miou, abs=1e-12)
    assert data["FB_IoU"] == pytest.approx(fb, abs=1e-12)


def test_validate_zeroshot_refuses_bad_input(tiny_setup, tmp_path, capsys):
    work, ckpt = tiny_setup
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import validate

    common = ["--model", "lseg_tiny_test", "--crop_size", "64", "--mode", "1", "--progress_bar", "false"]
    code = validate.main(
        ["-c", "configs/lseg_zs_fss.yaml", "--data_dir", str(tmp_path), "--ckpt_path", str(ckpt), *common]
    )
    assert code == 2 and "has no FSS-1000/ folder" in capsys.readouterr().err
    code = validate.main(
        [
            "-c",
            "configs/lseg_zs_fss.yaml",
            "--data_dir",
            str(work / "fss"),
            "--ckpt_path",
            str(tmp_path / "none.ckpt"),
            *common,
        ]
    )
    assert code == 2 and "checkpoint not found" in capsys.readouterr().err
    code = validate.main(
        [
            "-c",
            "configs/lseg_zs_pascal.yaml",
            "--data_dir",
            str(work / "fss"),
            "--ckpt_path",
            str(ckpt),
            "--fold",
            "5",
            *common,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "has no VOC2012/ folder" in err


@pytest.mark.skipif(
    shutil.which("msrun", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")) is None,
    reason="msrun not installed",
)
def test_validate_zeroshot_under_msrun_equals_single_process(tiny_setup, capsys):
    """Two data-parallel ranks split the episodes; the summed counts give exactly the single-process metrics."""
    work, ckpt = tiny_setup
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import validate

    args = [
        "-c",
        os.path.join(ROOT, "configs", "lseg_zs_fss.yaml"),
        "--data_dir",
        str(work / "fss"),
        "--ckpt_path",
        str(ckpt),
        "--model",
        "lseg_tiny_test",
        "--crop_size",
        "64",
        "--mode",
        "1",
        "--progress_bar",
        "false",
    ]
    assert validate.main([*args, "--eval_output", str(work / "single")]) == 0
    capsys.readouterr()
    env = dict(os.environ)
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")  # msrun starts a bare `python`
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        os.path.join(bindir, "msrun") if os.path.exists(os.path.join(bindir, "msrun")) else "msrun",
        "--worker_num",
        "2",
        "--local_worker_num",
        "2",
        "--master_port",
        str(port),
        "--log_dir",
        str(work / "msrun_logs"),
        "--join",
        "True",
        "python",
        os.path.join(ROOT, "tools", "validate.py"),
        *args,
        "--distribute",
        "--eval_output",
        str(work / "dist"),
    ]
    r = subprocess.run(cmd, cwd=str(work), env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    single = json.loads((work / "single" / "metrics.json").read_text())
    dist = json.loads((work / "dist" / "metrics.json").read_text())
    assert dist["num_ranks"] == 2 and dist["num_episodes"] == single["num_episodes"] == 4
    assert dist["per_class"] == single["per_class"]
    assert dist["mIoU"] == single["mIoU"] and dist["FB_IoU"] == single["FB_IoU"]
