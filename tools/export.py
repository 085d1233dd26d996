"""Export LSeg to deployable graphs (MINDIR for MindSpore, ONNX for ONNX Runtime) plus NAME_deploy.json.

    python tools/export.py --model lseg_vitb32 --ckpt_path lseg_b32.ckpt [--part image|text|both] \
        [--file_format MINDIR|ONNX] [--image_size H W] [--num_labels N] [--output_dir DIR] [--impl native|lean]

Writes DIR/NAME_image.{mindir,onnx} (image [1,3,H,W] -> L2-normalised embeddings [1,E,H/2,W/2]),
DIR/NAME_text.{mindir,onnx} (tokens int32 [N,77] -> raw text features [N,E]; N and the 77 token columns dynamic,
-1 in the JSON) and DIR/NAME_deploy.json.
Run them with ``tools/infer.py --deploy_dir DIR`` or ``mindcv_lseg.deploy.load_deployed(DIR)``.
Bad arguments give one message and exit code 2, and nothing is written.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Export LSeg to MINDIR / ONNX (image and text graphs + deploy JSON)")
    p.add_argument("--model", required=True, help="lseg_vitl16_384, lseg_vitb32 or lseg_tiny_test")
    p.add_argument(
        "--ckpt_path", default="", help="MindSpore checkpoint of the model (tools/convert.py, tools/train.py)"
    )
    p.add_argument("--part", default="both", help="image, text or both (default both)")
    p.add_argument("--file_format", default="MINDIR", help="MINDIR (MindSpore) or ONNX (ONNX Runtime)")
    p.add_argument(
        "--image_size",
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="image graph input size, multiples of 32 (default: the model's input_size, 480 480)",
    )
    p.add_argument(
        "--num_labels",
        default="5",
        help="example label count of the ONNX text export (the text graphs come out dynamic: MINDIR always, ONNX "
        "with the onnx package; a static one takes this many labels per call, longer lists are chunked)",
    )
    p.add_argument("--output_dir", default="./export", help="folder for the files (default ./export)")
    p.add_argument(
        "--impl",
        default="native",
        help="native (default; Ascend/GPU, ONNX) or lean (MINDIR for MindSpore on CPU: fast CPU convs)",
    )
    return p


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed the usage and the problem
        return EXIT_BAD_INPUT if e.code else 0

    from mindcv_lseg.deploy import ExportError, check_export_args, export_lseg

    try:
        try:
            num_labels = int(args.num_labels)
        except ValueError:
            raise ExportError(f"--num_labels must be a positive integer, got {args.num_labels!r}") from None
        size = args.image_size
        if size is not None:
            try:
                size = [int(s) for s in size]
            except ValueError:
                raise ExportError(f"--image_size takes two integers H W, got {' '.join(args.image_size)}") from None
        spec = check_export_args(
            args.model, args.ckpt_path, args.part, args.file_format, size, num_labels, args.output_dir, args.impl
        )
        import mindspore as ms

        ms.set_context(mode=ms.GRAPH_MODE)
        info = export_lseg(spec)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    parts = [info[p]["file"] for p in ("image", "text") if info[p]]
    print(f"wrote {', '.join(parts)} and {spec.model}_deploy.json to {spec.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
