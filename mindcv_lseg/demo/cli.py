"""``tools/demo.py``: argument parsing, the quickstart default, start-up (load, warm-up) and serving."""

import argparse
import atexit
import ipaddress
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

from ..quickstart import QUICKSTART_DATA_DIR, QUICKSTART_MODEL, QUICKSTART_OUT_DIR, find_checkpoint
from .service import DEFAULT_LABELS, DemoLimits

__all__ = ["DemoSetup", "resolve_setup", "list_examples", "main", "EXIT_BAD_INPUT"]

EXIT_BAD_INPUT = 2
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

NO_CHECKPOINT = f"""no model to serve: pass --model NAME --ckpt_path FILE.ckpt, or train the quickstart's toy model
first.

  python tools/quickstart.py      # ~3 min on a CPU, writes {QUICKSTART_OUT_DIR}/best.ckpt
  python tools/demo.py            # then, from the same folder: serves that model with toy examples

For real photos convert the official LSeg weights (see the README, "Converting the official weights"):
  python tools/convert.py --model lseg_vitl16_384 --src demo_e200.ckpt --dst lseg_vitl16_384_demo.ckpt
  python tools/demo.py --model lseg_vitl16_384 --ckpt_path lseg_vitl16_384_demo.ckpt"""

EPILOG = """examples:
  python tools/demo.py                                   # after tools/quickstart.py: its toy model + examples
  python tools/demo.py --model lseg_vitl16_384 --ckpt_path lseg_vitl16_384_demo.ckpt --examples photos/
  python tools/demo.py --model lseg_vitb32 --ckpt_path b32.ckpt --labels "dog, grass, other" --port 8000

The page binds 127.0.0.1 (this machine only) unless --host says otherwise; it has no authentication."""


@dataclass
class DemoSetup:
    """What to serve: model, checkpoint, pre-filled labels, examples and a note for the page."""

    model: str
    ckpt_path: str
    labels: List[str]
    examples: List[str] = field(default_factory=list)
    note: Optional[str] = None


def build_parser() -> argparse.ArgumentParser:
    lim = DemoLimits()
    p = argparse.ArgumentParser(
        prog="tools/demo.py",
        description="Serve an interactive LSeg page: upload a photo, " "type any labels, see the segmentation.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        default=None,
        help="lseg_vitl16_384 | lseg_vitb32 | lseg_tiny_test "
        f"(default: the quickstart's {QUICKSTART_MODEL} if its checkpoint exists)",
    )
    p.add_argument(
        "--ckpt_path",
        default=None,
        help="MindSpore checkpoint of --model (tools/convert.py or "
        f"tools/train.py); default: the quickstart's, {QUICKSTART_OUT_DIR}/best.ckpt",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--labels", default=None, help="labels pre-filled in the page, comma-separated")
    p.add_argument("--examples", nargs="*", default=None, help="example images: files and/or folders (first 8)")
    p.add_argument(
        "--mode",
        type=int,
        default=0,
        choices=(0, 1),
        help="MindSpore mode: 0 GRAPH (default, " "compiled once per image size), 1 PYNATIVE",
    )
    p.add_argument("--device_target", default="CPU", choices=("CPU", "GPU", "Ascend"))
    p.add_argument("--max_file_mb", type=float, default=lim.max_file_mb, help="largest upload (MB)")
    p.add_argument(
        "--max_pixels", type=int, default=lim.max_pixels, help="largest image (pixels), checked " "before decoding"
    )
    p.add_argument("--max_side", type=int, default=lim.max_side, help="longer image sides are downscaled to this")
    p.add_argument("--max_labels", type=int, default=lim.max_labels, help="most labels per request (<= 256)")
    p.add_argument("--queue_size", type=int, default=lim.queue_size, help="most requests waiting")
    return p


def list_examples(paths: Sequence[str], limit: int = 8) -> List[str]:
    """Image files among ``paths`` (files, or folders listed non-recursively, sorted); at most ``limit``."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            out += sorted(os.path.join(p, f) for f in os.listdir(p) if f.lower().endswith(IMAGE_EXTENSIONS))
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise ValueError(f"--examples: {p} is neither an image file nor a folder")
    return [os.path.abspath(p) for p in out[:limit]]


def _toy_examples(data_dir: str, limit: int = 4) -> List[str]:
    """The first validation images of the quickstart's toy set, if it is there."""
    split = os.path.join(data_dir, "splits", "val.txt")
    if not os.path.isfile(split):
        return []
    names = [n.strip() for n in open(split, encoding="utf-8").read().splitlines() if n.strip()]
    files = [os.path.join(data_dir, "images", n + ".png") for n in names]
    return [os.path.abspath(f) for f in files if os.path.isfile(f)][:limit]


def resolve_setup(args) -> DemoSetup:
    """Decide what to serve from the arguments; the quickstart's toy model when neither model nor checkpoint is given.

    Raises:
        ValueError: with the message for the user (exit code 2).
    """
    from ..text.labels import TOY_LABELS

    labels = [s.strip() for s in args.labels.split(",")] if args.labels is not None else None
    examples = list_examples(args.examples) if args.examples else []
    if args.model is None and args.ckpt_path is None:
        ckpt = find_checkpoint(QUICKSTART_OUT_DIR, QUICKSTART_MODEL)
        if ckpt is None:
            raise ValueError(NO_CHECKPOINT)
        note = (
            "Serving the quickstart's toy model: the tiny LSeg trained for a few minutes on generated scenes "
            f"of {', '.join(TOY_LABELS[:-1])} and {TOY_LABELS[-1]}. It knows only these; the examples below are "
            "toy validation images."
        )
        return DemoSetup(
            QUICKSTART_MODEL, ckpt, labels or list(TOY_LABELS), examples or _toy_examples(QUICKSTART_DATA_DIR), note
        )
    if args.model is None:
        raise ValueError(
            "--ckpt_path given without --model: pass the checkpoint's variant, e.g. --model "
            "lseg_vitl16_384 (lseg_vitl16_384, lseg_vitb32, lseg_tiny_test)"
        )
    if not args.ckpt_path:
        raise ValueError(
            f"no checkpoint given for {args.model}: pass --ckpt_path FILE.ckpt (convert the official "
            "weights with tools/convert.py or train one with tools/train.py)"
        )
    if not os.path.isfile(args.ckpt_path):
        raise ValueError(f"checkpoint not found: {args.ckpt_path} (check the path given to --ckpt_path)")
    return DemoSetup(args.model, args.ckpt_path, labels or list(DEFAULT_LABELS), examples)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        limits = DemoLimits(args.max_file_mb, args.max_pixels, args.max_side, args.max_labels, args.queue_size)
        setup = resolve_setup(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not 0 < args.port < 65536:
        print(f"error: --port must be in 1..65535, got {args.port}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if setup.note:
        print(f"{setup.note}\n  checkpoint: {setup.ckpt_path}", flush=True)
    if not _is_loopback(args.host):
        print(
            f"warning: binding {args.host}: the page is reachable from other machines and has no " "authentication",
            file=sys.stderr,
        )

    work_dir = tempfile.mkdtemp(prefix="lseg_demo_")  # uploads and masks; removed at exit
    atexit.register(shutil.rmtree, work_dir, True)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the server like Ctrl-C, so the folder is removed
    from .ui import offline_environment

    offline_environment(work_dir)  # before Gradio is imported

    from ..eval.model_io import ModelLoadError
    from .service import DemoService

    t0 = time.perf_counter()
    try:
        service = DemoService.from_checkpoint(
            setup.model,
            setup.ckpt_path,
            mode=args.mode,
            device_target=args.device_target,
            limits=limits,
            default_labels=setup.labels,
            work_dir=os.path.join(work_dir, "masks"),
        )
    except ModelLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValueError as e:  # bad --labels
        print(f"error: --labels: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    t_load = time.perf_counter() - t0
    try:
        service.parse_labels(", ".join(setup.labels))
        warm_image, _ = service.read_image(setup.examples[0]) if setup.examples else (None, [])
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    t_warm = service.warm_up(warm_image)
    print(
        f"model {setup.model} loaded in {t_load:.1f} s, warm-up (compile + label embeddings) {t_warm:.1f} s", flush=True
    )

    from .ui import build_ui, launch

    demo = build_ui(service, setup.examples, setup.note)
    print(f"serving on http://{args.host}:{args.port}  (Ctrl-C stops)", flush=True)
    try:
        launch(demo, host=args.host, port=args.port, max_file_mb=limits.max_file_mb)
    except OSError as e:  # port in use, address not available
        print(f"error: cannot serve on {args.host}:{args.port}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        pass
    return 0
