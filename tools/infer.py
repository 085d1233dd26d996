"""Segment images with free-text labels.

Per image NAME, in --output: NAME_mask.png (palette PNG, pixel value = index of the label in --labels),
NAME_overlay.png (the image blended with the class colours, with a legend), optionally NAME_emb.npy (per-pixel
embeddings, float32 [C, H/2, W/2]); labels.txt lists the labels in id order.
An image above the whole-image pixel budget (--max_whole_pixels) is segmented with sliding windows (said per image);
--max_size N segments a copy whose long side is N.

``--deploy_dir`` runs the graphs written by ``tools/export.py`` (MINDIR with MindSpore, ONNX with ONNX Runtime)
instead of the eager network; ``--model``/``--ckpt_path`` are then not used and ``--crop_size`` is the exported size.
"""

import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

EPILOG = """\
examples:
  python tools/infer.py --model lseg_vitl16_384 --ckpt_path lseg_l16.ckpt --labels "dog, grass, other" \\
      --input photo.jpg --output out/
  python tools/infer.py --model lseg_tiny_test --ckpt_path output/lseg_toy/best.ckpt \\
      --labels "sky, grass, water, road, red circle, yellow square" --input data/toy/images --output out/toy
  python tools/infer.py ... --eval_mode ms_flip --save_embeddings   # the reference evaluator, + embeddings
  python tools/infer.py ... --prompt_templates "a photo of a {}.|a picture of a {}."   # prompt ensembling

exit status: 0 every image segmented; 2 a bad option, label, template, output, checkpoint or input (nothing is
written); 3 some images failed (each is reported with its reason, the others are written, a summary is printed).
"""

os.environ["MINDCV_LSEG_DEFER_IMPORTS"] = "1"  # parse (and answer --help) before MindSpore is imported
from mindcv_lseg.engine.config import ConfigError, Option, build_parser, parse_args  # noqa: E402

os.environ.pop("MINDCV_LSEG_DEFER_IMPORTS")

EXIT_BAD_INPUT = 2  # EXIT_SOME_FAILED (3): mindcv_lseg.eval.folder

EXTRA_OPTIONS = [
    Option(
        "labels", str, "", 'comma-separated labels, e.g. "dog, grass, other" (id i = i-th label)', group="Inference"
    ),
    Option("input", str, "", "an image file or a folder of images", group="Inference"),
    Option("output", str, "./output_infer", "output folder", group="Inference"),
    Option("save_embeddings", bool, False, "also save per-pixel embeddings as NAME_emb.npy", group="Inference"),
    Option(
        "prompt_templates",
        str,
        None,
        'prompt templates for label ensembling, e.g. "a photo of a {}." '
        "(several separated by '|'); off by default (reference)",
        optional=True,
        group="Inference",
    ),
    Option(
        "alpha", float, 0.5, "overlay opacity of the class colours", min_value=0.0, max_value=1.0, group="Inference"
    ),
    Option("text_cache_dir", str, "", "cache label embeddings on disk here (optional)", group="Inference"),
    Option(
        "max_size",
        int,
        None,
        "segment a copy of each image whose long side is at most this many pixels " "(outputs keep the image's size)",
        optional=True,
        min_value=1,
        group="Inference",
    ),
    Option(
        "max_whole_pixels",
        int,
        1024 * 1024,
        "eval_mode whole: images with more (padded) pixels are segmented " "with sliding crop_size windows instead",
        min_value=1,
        group="Inference",
    ),
    Option(
        "deploy_dir",
        str,
        "",
        "run the exported graphs in this folder (tools/export.py) instead of the " "eager network",
        group="Inference",
    ),
]


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return EXIT_BAD_INPUT


def main(argv=None) -> int:
    try:
        parser = build_parser(__doc__, extra_options=EXTRA_OPTIONS, tool="infer", epilog=EPILOG, prog="tools/infer.py")
        args = parse_args(argv, parser=parser)
    except ConfigError as e:
        return _fail(str(e))

    from mindcv_lseg.eval.api import parse_labels
    from mindcv_lseg.eval.folder import EXIT_SOME_FAILED, check_output_dir, list_images, segment_files
    from mindcv_lseg.eval.inference import InferenceConfig
    from mindcv_lseg.eval.text_cache import check_templates
    from mindcv_lseg.fileio import atomic_write_text

    # cheap checks first: labels, templates, inputs, output folder, then the model; nothing is written before
    try:
        labels = parse_labels(args.labels)
    except ValueError as e:
        return _fail(f"--labels: {e}")
    try:
        templates = check_templates(
            [t.strip() for t in args.prompt_templates.split("|")] if args.prompt_templates else None
        )
    except ValueError as e:
        return _fail(f"--prompt_templates: {e}")
    try:
        inputs = list_images(args.input)
        check_output_dir(args.output)
        cfg = InferenceConfig.from_args(args, max_whole_pixels=args.max_whole_pixels)
    except ValueError as e:
        return _fail(str(e))

    from mindcv_lseg.eval.model_io import ModelLoadError, create_eval_model, setup_context
    from mindcv_lseg.eval.text_cache import TextEmbeddingCache, checkpoint_identity

    setup_context(args.mode, args.device_target)
    if args.deploy_dir:
        from mindcv_lseg.deploy import DeployError, load_deployed

        try:
            net = load_deployed(args.deploy_dir)
            cfg = net.inference_config(cfg)
        except (DeployError, ValueError) as e:
            return _fail(f"--deploy_dir: {e}")
        model_id = f"deploy:{net.model}|{checkpoint_identity(args.deploy_dir)}"
    else:
        try:
            net = create_eval_model(args.model, args.ckpt_path, impl=args.impl, amp_level=args.amp_level)
        except ModelLoadError as e:
            return _fail(str(e))
        model_id = f"{args.model}|{checkpoint_identity(args.ckpt_path)}"
    cache = TextEmbeddingCache(net, model_id=model_id, cache_dir=args.text_cache_dir or None, templates=templates)
    try:
        cache(labels)
    except ValueError as e:
        return _fail(f"--prompt_templates / --labels: {e}")

    try:
        os.makedirs(args.output, exist_ok=True)
        atomic_write_text(os.path.join(args.output, "labels.txt"), "".join(f"{lab}\n" for lab in labels))
    except OSError as e:
        return _fail(f"--output: {e}")
    done, failures = segment_files(
        net,
        inputs,
        labels,
        args.output,
        cfg,
        cache,
        save_embeddings=args.save_embeddings,
        alpha=args.alpha,
        max_size=args.max_size,
    )
    print(f"{done} of {len(inputs)} image(s) segmented into {args.output} (mode {args.eval_mode})")
    if failures:
        print(f"error: {len(failures)} of {len(inputs)} image(s) failed:", file=sys.stderr)
        for path, msg in failures:
            print(f"  {path}: {msg}", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
