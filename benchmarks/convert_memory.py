#!/usr/bin/env python
"""Peak RSS of ``tools/convert.py`` on a full-size synthetic LSeg checkpoint, relative to the file size.

The checkpoint comes from tests/parity_weights.py (a ``.ckpt`` needs torch, only to WRITE the file; the conversion
itself never imports torch). Each conversion runs in its own process; its peak RSS is taken from ``os.wait4`` (that
child only).

    python benchmarks/convert_memory.py                       # ViT-L/16 (1.65 GiB), Lightning .ckpt and .npz
    python benchmarks/convert_memory.py --variant clip_vitb32_384 --formats npz
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {"clip_vitl16_384": "lseg_vitl16_384", "clip_vitb32_384": "lseg_vitb32"}


def run_measured(cmd):
    """Run ``cmd``; return (exit code, peak RSS in bytes of that process, wall seconds, stdout)."""
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss * 1024, time.time() - t0, out.decode(errors="replace")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="clip_vitl16_384", choices=sorted(MODELS))
    ap.add_argument("--formats", default="ckpt,npz", help="comma list of ckpt,npz")
    ap.add_argument("--workdir", default=None, help="where to write the checkpoints (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    args = ap.parse_args(argv)

    work = args.workdir or tempfile.mkdtemp(prefix="lseg_convert_bench_")
    os.makedirs(work, exist_ok=True)
    model = MODELS[args.variant]
    results = []
    for fmt in args.formats.split(","):
        src = os.path.join(work, "%s_s0.%s" % (args.variant, fmt))
        dst = os.path.join(work, "%s_from_%s.ckpt" % (model, fmt))
        if not os.path.exists(src):
            print("generating %s ..." % src, flush=True)
            subprocess.run(
                [
                    sys.executable,
                    os.path.join(REPO, "tests", "parity_weights.py"),
                    "--variant",
                    args.variant,
                    "--seed",
                    "0",
                    "--out",
                    src,
                ],
                check=True,
            )
        code, rss, secs, out = run_measured(
            [
                sys.executable,
                os.path.join(REPO, "tools", "convert.py"),
                "--model",
                model,
                "--src",
                src,
                "--dst",
                dst,
                "--quiet",
            ]
        )
        if code != 0:
            print(out)
            raise SystemExit("conversion failed (exit %d)" % code)
        size = os.path.getsize(src)
        res = {
            "variant": args.variant,
            "format": fmt,
            "file_bytes": size,
            "peak_rss_bytes": rss,
            "rss_over_file": round(rss / size, 3),
            "seconds": round(secs, 1),
            "output_bytes": os.path.getsize(dst),
        }
        results.append(res)
        print(
            "%-4s file %.2f GiB  peak RSS %.2f GiB  ratio %.2fx  %.1f s"
            % (fmt, size / 2**30, rss / 2**30, rss / size, secs),
            flush=True,
        )
        if not args.keep:
            os.remove(dst)
            os.remove(src)
    print(
        json.dumps(
            {
                "machine": "%s, %d CPUs, Python %s" % (platform.machine(), os.cpu_count(), platform.python_version()),
                "results": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
