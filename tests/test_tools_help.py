"""tools/train.py, validate.py and infer.py: own options, allowed values, examples, defaults from -c, fast --help
(MindSpore is imported only after parsing), and config errors as one message with exit code 2."""

import os
import subprocess
import sys
import time

import pytest
from _paths import REPO

TOOLS = ("train", "validate", "infer")


def _tool(name, *args, cwd=REPO, importtime=False):
    cmd = [sys.executable] + (["-X", "importtime"] if importtime else []) + [str(REPO / "tools" / f"{name}.py")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd + list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return proc, time.perf_counter() - t0


def _imported_modules(importtime_stderr):
    """Top-level package names from ``python -X importtime`` lines (``import time: self | cumulative | name``)."""
    names = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


@pytest.mark.parametrize("tool", TOOLS)
def test_help_does_not_import_mindspore_and_is_fast(tool):
    proc, seconds = _tool(tool, "--help", importtime=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules = _imported_modules(proc.stderr)
    assert "mindcv_lseg" in modules and "yaml" in modules  # the parse really ran through the package
    assert not {"mindspore", "mindcv", "numpy", "PIL"} & modules
    # about 0.1-0.3 s on an idle machine; the bound leaves room for a machine shared with other jobs
    assert seconds < 5.0, f"--help took {seconds:.1f} s"


def test_help_content_per_tool():
    out = {t: _tool(t, "--help")[0].stdout for t in TOOLS}
    for t in TOOLS:
        assert out[t].startswith(f"usage: tools/{t}.py")
        assert "examples:" in out[t] and f"python tools/{t}.py" in out[t].split("examples:")[1]
        assert "--eval_mode {whole,slide,ms_flip}" in out[t] and "--mode {0,1}" in out[t]
    assert "--opt {momentum,sgd,adamw}" in out["train"]
    assert "--weight_decay_filter {disable,norm_and_bias}" in out["train"]
    assert "--momentum FLOAT" in out["train"] and "[0..1]" in out["train"].split("--momentum FLOAT")[1][:200]
    for flag in ("--lr", "--opt", "--momentum", "--batch_size", "--scheduler", "--resume", "--seed"):
        assert flag + " " not in out["infer"], flag
        assert flag + " " not in out["validate"], flag
    # the tool's own options come first
    infer_groups = [ln for ln in out["infer"].splitlines() if ln.endswith("options:")]
    assert infer_groups[:2] == ["options:", "Inference options:"]
    assert out["infer"].index("--labels") < out["infer"].index("--model")
    assert out["validate"].index("--eval_output") < out["validate"].index("--data_dir")


def test_help_shows_the_config_files_values():
    plain = _tool("train", "--help")[0].stdout
    toy = _tool("train", "-c", "configs/lseg_toy.yaml", "--help")[0].stdout

    def line(text, flag):
        i = text.index(f"  {flag} ")
        return " ".join(text[i : text.index("\n  --", i + 1)].split())

    assert "(default: 0.004)" in line(plain, "--lr") and "(default: 0.01)" in line(toy, "--lr")
    assert "(default: lseg_vitl16_384)" in line(plain, "--model")
    assert "(default: lseg_tiny_test)" in line(toy, "--model")
    assert "(default: 128)" in line(toy, "--crop_size")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--crop_size", "100"], "config key 'crop_size' (command line or default): 100 is not a multiple of 32"),
        (["--lr", "nan"], "config key 'lr' (command line or default): must be a finite number"),
        (["--momentum", "5"], "config key 'momentum' (command line or default): 5.0 is out of range (allowed: 0..1)"),
    ],
)
def test_config_errors_exit_2_before_anything_runs(tmp_path, args, needle):
    proc, _ = _tool("train", "-c", str(REPO / "configs" / "lseg_toy.yaml"), *args, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"train.py: config error: {needle}") and proc.stderr.count("\n") == 1
    assert os.listdir(tmp_path) == []  # no rank_0/ graph dump, no output folder, no data


def test_config_file_errors_in_validate_and_infer(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: lseg_tiny_test\ncrop_size: 96\ncrop_size: 100\n")
    for tool in ("validate", "infer"):
        proc, _ = _tool(tool, "-c", str(bad), cwd=tmp_path)
        assert proc.returncode == 2
        assert f"{bad}: duplicate config key 'crop_size' (lines 2 and 3)" in proc.stderr
        assert "Traceback" not in proc.stderr
