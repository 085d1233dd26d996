"""Evaluate an LSeg checkpoint on a segmentation dataset.

    python tools/validate.py -c configs/lseg_toy.yaml --ckpt_path output/lseg_toy/best.ckpt [--eval_mode ms_flip]

Prints pixAcc, mIoU (reference definition: mean over all classes, absent classes count 0), mIoU (nanmean over
present classes), mAcc and a per-class IoU/Acc table, and saves them as ``metrics.json`` / ``per_class.csv`` in
``--eval_output`` (default ``<ckpt_save_dir>/validate_<eval_mode>``). Data parallel under msrun with
``--distribute``: each rank evaluates a shard, the confusion matrices are summed exactly over ranks.
"""
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from mindcv_lseg.engine.config import ConfigError, Option, build_parser, config_to_dict, parse_args  # noqa: E402

EXIT_BAD_INPUT = 2

EXTRA_OPTIONS = [
    Option("eval_output", str, "", "folder for metrics.json / per_class.csv (default "
           "<ckpt_save_dir>/validate_<eval_mode>)", group="Validation"),
    Option("text_cache_dir", str, "", "cache label embeddings on disk here (optional)", group="Validation"),
]


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return EXIT_BAD_INPUT


def main(argv=None) -> int:
    try:
        parser = build_parser("LSeg validation: pixAcc / mIoU / mAcc / per-class IoU", extra_options=EXTRA_OPTIONS)
        args = parse_args(argv, parser=parser)
    except ConfigError as e:
        return _fail(str(e))


    from mindcv_lseg.data import create_seg_dataset
    from mindcv_lseg.eval.evaluator import evaluate_dataset
    from mindcv_lseg.eval.inference import InferenceConfig
    from mindcv_lseg.eval.metrics import format_table, save_metrics_csv, save_metrics_json
    from mindcv_lseg.eval.model_io import ModelLoadError, create_eval_model, setup_context
    from mindcv_lseg.eval.text_cache import TextEmbeddingCache, checkpoint_identity

    setup_context(args.mode, args.device_target)
    rank, group_size = 0, 1
    if args.distribute:
        from mindspore.communication import get_group_size, get_rank, init

        init()
        rank, group_size = get_rank(), get_group_size()

    try:
        cfg = InferenceConfig(mode=args.eval_mode, scales=args.eval_scales, flip=args.eval_flip,
                              base_size=args.base_size, crop_size=args.crop_size, stride=args.eval_stride)
    except ValueError as e:
        return _fail(str(e))
    try:
        dataset = create_seg_dataset(args.dataset, args.data_dir, args.val_split, label_set=args.label_set or None,
                                     transform="val", val_mode=args.val_mode, base_size=args.base_size,
                                     crop_size=args.crop_size, ignore_index=args.ignore_index)
    except (ValueError, OSError) as e:
        return _fail(f"dataset {args.dataset!r} at {args.data_dir!r} (split {args.val_split!r}): {e}")
    if len(dataset) == 0:
        return _fail(f"dataset {args.dataset!r} at {args.data_dir!r} has no samples in split {args.val_split!r}")
    try:
        net = create_eval_model(args.model, args.ckpt_path, impl=args.impl, amp_level=args.amp_level)
    except ModelLoadError as e:
        return _fail(str(e))
    labels = list(dataset.label_set.labels)
    cache = TextEmbeddingCache(net, model_id=f"{args.model}|{checkpoint_identity(args.ckpt_path)}",
                               cache_dir=args.text_cache_dir or None)
    if rank == 0:
        print(f"Evaluating {args.model} ({args.ckpt_path}) on {args.dataset}/{args.val_split}: {len(dataset)} images, "
              f"{len(labels)} classes, mode {cfg.mode} {cfg.resolved()}, {group_size} rank(s)")
    try:
        _, metrics = evaluate_dataset(net, dataset, cfg, labels=labels, text_cache=cache, rank=rank,
                                      group_size=group_size, progress=args.progress_bar and rank == 0,
                                      max_samples=args.num_samples)
    except Exception as e:  # a bad sample names its file (SegDataError); show it without a deep traceback
        if type(e).__name__ == "SegDataError" or isinstance(e, ValueError):
            return _fail(str(e))
        raise
    if rank == 0:
        print(format_table(metrics))
        out_dir = args.eval_output or os.path.join(args.ckpt_save_dir, f"validate_{cfg.mode}")
        extra = {"model": args.model, "ckpt_path": args.ckpt_path, "dataset": args.dataset,
                 "data_dir": args.data_dir, "split": args.val_split, "num_ranks": group_size,
                 "config": config_to_dict(args)}
        save_metrics_json(metrics, os.path.join(out_dir, "metrics.json"), extra=extra)
        save_metrics_csv(metrics, os.path.join(out_dir, "per_class.csv"))
        print(f"saved {os.path.join(out_dir, 'metrics.json')} and {os.path.join(out_dir, 'per_class.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
