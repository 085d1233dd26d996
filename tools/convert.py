#!/usr/bin/env python
"""Convert official LSeg / CLIP / timm / big_vision weights into a MindSpore checkpoint of an ``lseg_*`` model.

No PyTorch needed, and no code inside a downloaded file is ever run (pickles go through a restricted unpickler).
The kind of --src is detected from its content, not its extension.
"""

import argparse
import os
import sys

EPILOG = """\
source formats (detected from content):
  LSeg Lightning checkpoint   demo_e200.ckpt, fss_l16.ckpt (torch zip; weights under 'state_dict', keys 'net.*',
                              zero-shot ResNet-101: pascal_fold{0..3}.ckpt, coco_fold{0..3}.ckpt, fss_rn101.ckpt,
                              CLIP tensors float16 -> upcast exactly to float32); also a bare LSeg state_dict
                              (with or without the 'net.' prefix), a legacy pre-1.6 torch pickle, or the .npz
                              written by tests/parity_weights.py
  OpenAI CLIP                 ViT-B-32.pt (TorchScript archive) or a CLIP state_dict  -> text encoder (--part text)
  timm ViT                    vit_large_patch16_384 / vit_base_patch32_384 .pth or .safetensors -> image encoder
  big_vision / AugReg ViT     .npz (Transformer/encoderblock_N/..., embedding/kernel)  -> image encoder
  mindcv-lseg MindSpore       .ckpt / .safetensors written by this project (round trip / re-check)

parts (--part):
  default  everything the source provides: the whole network for LSeg checkpoints, the text encoder for CLIP,
           the image encoder for timm / big_vision
  text     CLIP text encoder only (clip_text.*)
  image    ViT image encoder + reassemble only (encoder.*); from a timm/big_vision file: the ViT only
  decoder  DPT decoder/head only (scratch.*), from LSeg checkpoints
  A partial output holds only the converted parameters; load it with
  mindcv_lseg.checkpoint.load_into_net(net, path, strict=False) (e.g. before training).

examples:
  python tools/convert.py --model lseg_vitl16_384 --src demo_e200.ckpt --dst lseg_vitl16_384_demo.ckpt
  python tools/convert.py --model lseg_rn101 --src pascal_fold0.ckpt --dst lseg_rn101_pascal_fold0.ckpt
  python tools/convert.py --model lseg_vitb32 --src ViT-B-32.pt --part text --dst clip_text_b32.ckpt
  python tools/convert.py --model lseg_vitl16_384 --src vit_large_patch16_384.npz --part image --dst vit_l16.ckpt

exit status: 0 success; 2 any refused input (missing file, not a checkpoint, truncated/corrupt archive, unsafe
pickle, wrong model variant / missing / mis-shaped keys, bad --part); the destination is then left untouched.
"""


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="tools/convert.py",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--model",
        required=True,
        help="target model: lseg_vitl16_384 (demo_e200 / fss_l16), lseg_rn101 (pascal_fold*, "
        "coco_fold*, fss_rn101), lseg_vitb32, lseg_tiny_test",
    )
    ap.add_argument("--src", required=True, help="source weights file (format detected from content)")
    ap.add_argument("--dst", required=True, help="output MindSpore checkpoint (.ckpt, or .safetensors)")
    ap.add_argument(
        "--part",
        choices=["text", "image", "decoder"],
        default=None,
        help="convert only this part of the network (see below)",
    )
    ap.add_argument(
        "--layout",
        choices=["lseg", "clip", "timm", "big_vision", "mindspore"],
        default=None,
        help="force the source naming layout (default: detected from the tensor names)",
    )
    ap.add_argument("-q", "--quiet", action="store_true", help="print only the summary line")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        from mindcv_lseg.checkpoint import CheckpointError
        from mindcv_lseg.convert import convert_checkpoint
    except ImportError as e:  # pragma: no cover - broken install
        print("error: cannot import mindcv_lseg (%s); install it with `pip install -e .`" % e, file=sys.stderr)
        return 2
    try:
        report = convert_checkpoint(args.model, args.src, args.dst, part=args.part, layout=args.layout)
    except CheckpointError as e:
        print("error: %s" % e, file=sys.stderr)
        print("nothing written to %s" % args.dst, file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory while converting %s" % args.src, file=sys.stderr)
        return 2
    except OSError as e:
        print("error: %s: %s" % (getattr(e, "filename", None) or args.dst, e.strerror or e), file=sys.stderr)
        return 2
    except ValueError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a CLI prints one line; LSEG_DEBUG=1 shows the traceback
        if os.environ.get("LSEG_DEBUG"):
            raise
        print(
            "error: unexpected %s while converting %s: %s (set LSEG_DEBUG=1 for a traceback)"
            % (type(e).__name__, args.src, e),
            file=sys.stderr,
        )
        return 1
    lines = report.lines()
    print("\n".join(lines[-1:] if args.quiet else lines))
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip MindSpore's noisy interpreter-exit finalisers
