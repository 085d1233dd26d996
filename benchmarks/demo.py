"""Demo page latency: time from start to the first result, and per request, against ``segment()`` called directly.

    python benchmarks/demo.py [--models lseg_tiny_test lseg_vitb32] [--size 384 512] [--requests 5]

Per model (random weights, saved to a temp checkpoint: speed does not depend on the values; nothing is downloaded):

1. baseline in this process: ``mindcv_lseg.segment()`` on the same image after a warm-up (median of N calls);
2. ``tools/demo.py`` in a subprocess on a free port (with the image as its example, so the warm-up compiles its
   size): seconds until the page answers, until the first result of a client request, the median per request
   (``gradio_client``: upload + queue + segment + PNG encoding + download of the outputs), the ratio to the baseline,
   and one request at a new image size (GRAPH mode compiles once per padded size).

Timings on a machine shared with other jobs vary a lot; the ratio to the same-run baseline is the stable figure.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url, proc, timeout=1800):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"demo exited with {proc.returncode} before serving")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"demo did not answer on {url} within {timeout} s")


def _image(path, h, w, seed):
    import numpy as np
    from PIL import Image

    from mindcv_lseg.data.toy import make_toy_scene

    img, _ = make_toy_scene(np.random.default_rng(seed), (h, w))
    Image.fromarray(img).save(path)
    return path


def bench_model(model, work, size, n, labels):
    import mindcv
    import mindspore as ms

    import mindcv_lseg
    from mindcv_lseg.eval import TextEmbeddingCache
    from mindcv_lseg.eval.model_io import setup_context

    h, w = size
    img = _image(os.path.join(work, f"bench_{h}x{w}.png"), h, w, 0)
    img_new = _image(os.path.join(work, f"bench_{h + 96}x{w + 128}.png"), h + 96, w + 128, 1)
    ckpt = os.path.join(work, f"{model}_random.ckpt")

    # 1. baseline: segment() in this process
    setup_context(0, "CPU")
    net = mindcv.create_model(model)
    net.set_train(False)
    ms.save_checkpoint(net, ckpt)
    cache = TextEmbeddingCache(net)
    t0 = time.perf_counter()
    mindcv_lseg.segment(net, img, labels, text_cache=cache)
    direct_first = time.perf_counter() - t0
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        mindcv_lseg.segment(net, img, labels, text_cache=cache)
        times.append(time.perf_counter() - t0)
    direct = statistics.median(times)
    del net, cache

    # 2. the demo server
    from gradio_client import Client, handle_file

    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    log = open(os.path.join(work, f"{model}_demo.log"), "w")
    t_start = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "demo.py"),
            "--model",
            model,
            "--ckpt_path",
            ckpt,
            "--port",
            str(port),
            "--labels",
            ", ".join(labels),
            "--examples",
            img,
        ],
        cwd=work,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_http(url, proc)
        t_ready = time.perf_counter() - t_start
        client = Client(url, verbose=False, analytics_enabled=False)  # no telemetry

        def request(path):
            t0 = time.perf_counter()
            out = client.predict(handle_file(path), ", ".join(labels), "whole", "", api_name="/segment")
            assert "Segmented" in out[-1], out[-1]
            return time.perf_counter() - t0

        request(img)
        t_first = time.perf_counter() - t_start
        per_request = statistics.median([request(img) for _ in range(n)])
        new_size = request(img_new)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
    return dict(
        model=model,
        size=f"{h}x{w}",
        direct_first=direct_first,
        direct=direct,
        ready=t_ready,
        first=t_first,
        per_request=per_request,
        ratio=per_request / direct,
        new_size=new_size,
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["lseg_tiny_test", "lseg_vitb32"])
    p.add_argument("--size", type=int, nargs=2, default=[384, 512], help="image height width")
    p.add_argument("--requests", type=int, default=5, help="timed requests per model (median)")
    p.add_argument("--labels", default="sky, grass, water, road, red circle, yellow square, other")
    p.add_argument("--one", nargs=2, metavar=("MODEL", "WORK_DIR"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    os.environ.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    labels = [s.strip() for s in args.labels.split(",")]
    if args.one:  # worker: one model in this process
        print("RESULT " + json.dumps(bench_model(args.one[0], args.one[1], args.size, args.requests, labels)))
        return
    rows = []
    for model in args.models:
        with tempfile.TemporaryDirectory(prefix="lseg_bench_demo_") as work:
            # each model in its own process: the baseline's network is freed before the next one
            cmd = [
                sys.executable,
                os.path.abspath(__file__),
                "--one",
                model,
                work,
                "--size",
                *map(str, args.size),
                "--requests",
                str(args.requests),
                "--labels",
                args.labels,
            ]
            r = subprocess.run(cmd, capture_output=True, text=True)
            line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
            if r.returncode != 0 or not line:
                print(f"{model}: failed\n{r.stderr[-3000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(line[-1][7:]))
            print(rows[-1], flush=True)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (2 cores)")
    print(
        "| model | image | start -> page ready | start -> first result | per request (median) | segment() direct "
        "| ratio | request at a new size |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['size']} | {r['ready']:.1f} s | {r['first']:.1f} s | {r['per_request']:.2f} s "
            f"| {r['direct']:.2f} s | {r['ratio']:.2f}x | {r['new_size']:.1f} s |"
        )


if __name__ == "__main__":
    main()
