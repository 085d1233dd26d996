"""Segment images with free-text labels.

    python tools/infer.py --model lseg_vitl16_384 --ckpt_path lseg_l16.ckpt --labels "dog, grass, other" \
        --input photo.jpg|folder/ --output out/ [--eval_mode whole|slide|ms_flip] [--save_embeddings]
    python tools/infer.py --deploy_dir export/ --labels "dog, grass, other" --input photo.jpg --output out/

``--deploy_dir`` runs the graphs written by ``tools/export.py`` (MINDIR with MindSpore, ONNX with ONNX Runtime)
instead of the eager network; ``--model``/``--ckpt_path`` are then not used and ``--crop_size`` is the exported size.

Per image NAME: ``out/NAME_mask.png`` (palette PNG, pixel value = index of the label in --labels),
``out/NAME_overlay.png`` (image blended with the class colours + a legend), optionally ``out/NAME_emb.npy``
(per-pixel embeddings, float32 [C, H/2, W/2]); ``out/labels.txt`` lists the labels in id order.
Bad input gives a specific message and exit code 2; images that worked keep their outputs.
"""
import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from mindcv_lseg.engine.config import ConfigError, Option, build_parser, parse_args  # noqa: E402

EXIT_BAD_INPUT = 2

EXTRA_OPTIONS = [
    Option("labels", str, "", "comma-separated labels, e.g. \"dog, grass, other\" (id i = i-th label)",
           group="Inference"),
    Option("input", str, "", "an image file or a folder of images", group="Inference"),
    Option("output", str, "./output_infer", "output folder", group="Inference"),
    Option("save_embeddings", bool, False, "also save per-pixel embeddings as NAME_emb.npy", group="Inference"),
    Option("prompt_templates", str, None, "prompt templates for label ensembling, e.g. \"a photo of a {}.\" "
           "(several separated by '|'); off by default (reference)", optional=True, group="Inference"),
    Option("alpha", float, 0.5, "overlay opacity of the class colours", min_value=0.0, group="Inference"),
    Option("text_cache_dir", str, "", "cache label embeddings on disk here (optional)", group="Inference"),
    Option("deploy_dir", str, "", "run the exported graphs in this folder (tools/export.py) instead of the "
           "eager network", group="Inference"),
]


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return EXIT_BAD_INPUT


def list_inputs(path: str):
    """Image paths for a file or a folder (sorted, non-recursive). Raises ValueError with a specific message."""
    from mindcv_lseg.eval.api import IMAGE_EXTENSIONS

    if not path:
        raise ValueError("no input given: pass --input photo.jpg or --input folder/")
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path)
                       if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, f)))
        if not files:
            raise ValueError(f"folder {path} has no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
        return files
    if not os.path.isfile(path):
        raise ValueError(f"input not found: {path}")
    return [path]


def main(argv=None) -> int:
    try:
        parser = build_parser("LSeg inference: segment images with free-text labels", extra_options=EXTRA_OPTIONS)
        args = parse_args(argv, parser=parser)
    except ConfigError as e:
        return _fail(str(e))

    from mindcv_lseg.eval.api import load_image, parse_labels, save_result, segment
    from mindcv_lseg.fileio import atomic_write_text
    from mindcv_lseg.eval.inference import InferenceConfig

    # cheap checks first: labels, inputs, then the model
    try:
        labels = parse_labels(args.labels)
    except ValueError as e:
        return _fail(f"--labels: {e}")
    try:
        inputs = list_inputs(args.input)
    except ValueError as e:
        return _fail(str(e))
    try:
        cfg = InferenceConfig(mode=args.eval_mode, scales=args.eval_scales, flip=args.eval_flip,
                              base_size=args.base_size, crop_size=args.crop_size, stride=args.eval_stride)
    except ValueError as e:
        return _fail(str(e))
    templates = [t.strip() for t in args.prompt_templates.split("|")] if args.prompt_templates else None


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

    os.makedirs(args.output, exist_ok=True)
    atomic_write_text(os.path.join(args.output, "labels.txt"), "".join(f"{lab}\n" for lab in labels))
    failures, used = [], set()
    for i, path in enumerate(inputs):
        name = os.path.splitext(os.path.basename(path))[0]
        if name in used:  # same stem, different extension
            name = os.path.basename(path).replace(".", "_")
        used.add(name)
        t0 = time.time()
        try:
            image = load_image(path)
        except (ValueError, OSError) as e:
            failures.append((path, str(e)))
            print(f"[{i + 1}/{len(inputs)}] SKIPPED {path}: {e}", file=sys.stderr)
            continue
        res = segment(net, image, labels, config=cfg, text_cache=cache, return_embeddings=args.save_embeddings,
                      alpha=args.alpha)
        written = save_result(res, args.output, name, save_embeddings=args.save_embeddings)
        present = ", ".join(labels[k] for k in sorted(set(res.label_map.ravel().tolist())))
        print(f"[{i + 1}/{len(inputs)}] {path} ({image.size[0]}x{image.size[1]}, {time.time() - t0:.1f}s): "
              f"{present} -> {', '.join(os.path.basename(p) for p in written)}")
    done = len(inputs) - len(failures)
    print(f"{done} of {len(inputs)} image(s) segmented into {args.output} (mode {args.eval_mode})")
    if failures:
        print(f"error: {len(failures)} image(s) could not be read:", file=sys.stderr)
        for path, msg in failures:
            print(f"  {path}: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
