"""Evaluate an LSeg checkpoint on a segmentation dataset.

Prints pixAcc, mIoU (reference definition: mean over all classes, absent classes count 0), mIoU (nanmean over
present classes), mAcc and a per-class IoU/Acc table, and saves them as ``metrics.json`` / ``per_class.csv`` in
``--eval_output`` (default ``<ckpt_save_dir>/validate_<eval_mode>``). Data parallel under msrun with
``--distribute``: each rank evaluates a shard, the confusion matrices are summed exactly over ranks.

Zero-shot benchmarks (``--dataset fss1000 | pascal5i | coco20i``, HSNet layout under ``--data_dir``)::

    python tools/validate.py -c configs/lseg_zs_pascal.yaml --data_dir ROOT --ckpt_path CKPT --fold 0

print ``Fold F, 0-shot: mIoU xx.xx, FB-IoU yy.yy`` (percent) with the per-class foreground IoU, and save
``metrics.json`` (``mIoU``, ``FB_IoU`` as fractions, ``per_class``) in ``--eval_output``
(default ``<ckpt_save_dir>/zeroshot_<dataset>_fold<F>``).

Without arguments it validates the quickstart's model (``output/quickstart/best.ckpt``) on the toy set if
``tools/quickstart.py`` has run in this folder, and otherwise says what to pass. It never creates a dataset.
"""

import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

EPILOG = """\
examples:
  python tools/validate.py -c configs/lseg_toy.yaml --ckpt_path output/lseg_toy/best.ckpt
  python tools/validate.py -c output/lseg_toy/config.yaml --ckpt_path output/lseg_toy/best.ckpt --eval_mode slide
  python tools/validate.py -c configs/lseg_ade20k.yaml --data_dir /data/ADEChallengeData2016 \\
      --ckpt_path lseg_l16.ckpt --eval_mode ms_flip                    # the paper's evaluation protocol
  python tools/validate.py -c configs/lseg_toy.yaml --help             # the options with this file's values

A training config (or a run's config.yaml) can be passed with -c: keys that only training uses are accepted there.
exit status: 0 done; 2 a bad option, config, dataset or checkpoint.
"""

os.environ["MINDCV_LSEG_DEFER_IMPORTS"] = "1"  # parse (and answer --help) before MindSpore is imported
from mindcv_lseg.engine.config import ConfigError, Option, build_parser, config_to_dict, parse_args  # noqa: E402

os.environ.pop("MINDCV_LSEG_DEFER_IMPORTS")

EXIT_BAD_INPUT = 2

EXTRA_OPTIONS = [
    Option(
        "eval_output",
        str,
        "",
        "folder for metrics.json / per_class.csv (default " "<ckpt_save_dir>/validate_<eval_mode>)",
        group="Validation",
    ),
    Option("text_cache_dir", str, "", "cache label embeddings on disk here (optional)", group="Validation"),
    Option(
        "fold",
        int,
        0,
        "zero-shot benchmarks: test fold (PASCAL-5i / COCO-20i: 0..3; FSS-1000: any, printed)",
        min_value=0,
        group="Validation",
    ),
]


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return EXIT_BAD_INPUT


def validate_zeroshot(args, rank: int, group_size: int) -> int:
    """Zero-shot benchmark: every episode, labels ["others", class], mIoU / FB-IoU over the fold's test classes."""
    import mindcv.models.registry as registry

    from mindcv_lseg.data.fewshot import create_fewshot_dataset
    from mindcv_lseg.data.io import SegDataError
    from mindcv_lseg.eval.metrics import save_metrics_json
    from mindcv_lseg.eval.model_io import ModelLoadError, create_eval_model
    from mindcv_lseg.eval.zeroshot import evaluate_zeroshot
    from mindcv_lseg.eval.zeroshot_metrics import format_zeroshot_table

    cfg = registry.get_pretrained_cfg(args.model) if registry.is_model(args.model) else {}
    mean, std = cfg.get("mean", (0.5, 0.5, 0.5)), cfg.get("std", (0.5, 0.5, 0.5))
    try:
        dataset = create_fewshot_dataset(
            args.dataset, args.data_dir, fold=args.fold, mean=mean, std=std, img_size=args.crop_size
        )
    except (ValueError, OSError) as e:
        return _fail(f"dataset {args.dataset!r} at {args.data_dir!r} (fold {args.fold}): {e}")
    try:
        net = create_eval_model(args.model, args.ckpt_path)
    except ModelLoadError as e:
        return _fail(str(e))
    if rank == 0:
        print(
            f"Zero-shot {args.dataset} fold {args.fold}: {args.model} ({args.ckpt_path}), {len(dataset)} episodes, "
            f"{len(dataset.class_ids)} test classes, {args.crop_size}x{args.crop_size}, split list "
            f"{dataset.split_file}, {group_size} rank(s)"
        )
    try:
        metrics = evaluate_zeroshot(
            net,
            dataset,
            rank=rank,
            group_size=group_size,
            progress=args.progress_bar and rank == 0,
            max_episodes=args.num_samples,
        )
    except SegDataError as e:
        return _fail(str(e))
    if rank == 0:
        print(format_zeroshot_table(metrics, args.fold))
        out_dir = args.eval_output or os.path.join(args.ckpt_save_dir, f"zeroshot_{args.dataset}_fold{args.fold}")
        extra = {
            "model": args.model,
            "ckpt_path": args.ckpt_path,
            "dataset": args.dataset,
            "fold": args.fold,
            "data_dir": args.data_dir,
            "split_file": dataset.split_file,
            "num_ranks": group_size,
            "config": config_to_dict(args),
        }
        save_metrics_json(metrics, os.path.join(out_dir, "metrics.json"), extra=extra)
        print(f"saved {os.path.join(out_dir, 'metrics.json')}")
    return 0


NO_ARGUMENTS_HELP = """nothing to validate: pass a config and a checkpoint, e.g.
  python tools/validate.py -c configs/lseg_toy.yaml --ckpt_path output/lseg_toy/best.ckpt
  python tools/validate.py -c configs/lseg_ade20k.yaml --data_dir /data/ADEChallengeData2016 --ckpt_path lseg_l16.ckpt
(without arguments this validates the quickstart's model, once `python tools/quickstart.py` has run here;
see --help for all options)"""


def main(argv=None) -> int:
    from mindcv_lseg.engine.run_dir import quickstart_validate_argv

    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        argv = quickstart_validate_argv()
        if argv is None:
            return _fail(NO_ARGUMENTS_HELP)
        print(
            f"no arguments: validating the quickstart's model ({argv[3]}) on its toy set "
            f"(python tools/validate.py {' '.join(argv)})"
        )
    try:
        parser = build_parser(
            __doc__, extra_options=EXTRA_OPTIONS, tool="validate", epilog=EPILOG, prog="tools/validate.py"
        )
        args = parse_args(argv, parser=parser)
    except ConfigError as e:
        return _fail(str(e))
    # arguments first, before anything touches the disk or loads MindSpore
    if not args.ckpt_path:
        return _fail(
            "no checkpoint given: pass --ckpt_path FILE.ckpt (e.g. output/lseg_toy/best.ckpt after "
            "`python tools/train.py -c configs/lseg_toy.yaml`)"
        )
    if not os.path.isfile(args.ckpt_path):
        return _fail(f"checkpoint not found: {args.ckpt_path} (check the path given to --ckpt_path)")

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
    from mindcv_lseg.data.fewshot import ZEROSHOT_DATASETS

    if args.dataset in ZEROSHOT_DATASETS:
        return validate_zeroshot(args, rank, group_size)

    try:
        cfg = InferenceConfig.from_args(args)
    except ValueError as e:
        return _fail(str(e))
    try:
        dataset = create_seg_dataset(
            args.dataset,
            args.data_dir,
            args.val_split,
            label_set=args.label_set or None,
            transform="val",
            val_mode=args.val_mode,
            base_size=args.base_size,
            crop_size=args.crop_size,
            ignore_index=args.ignore_index,
            generate_toy=False,
        )
    except (ValueError, OSError) as e:
        return _fail(f"dataset {args.dataset!r} at {args.data_dir!r} (split {args.val_split!r}): {e}")
    if len(dataset) == 0:
        return _fail(f"dataset {args.dataset!r} at {args.data_dir!r} has no samples in split {args.val_split!r}")
    try:
        net = create_eval_model(args.model, args.ckpt_path, impl=args.impl, amp_level=args.amp_level)
    except ModelLoadError as e:
        return _fail(str(e))
    labels = list(dataset.label_set.labels)
    cache = TextEmbeddingCache(
        net, model_id=f"{args.model}|{checkpoint_identity(args.ckpt_path)}", cache_dir=args.text_cache_dir or None
    )
    if rank == 0:
        print(
            f"Evaluating {args.model} ({args.ckpt_path}) on {args.dataset}/{args.val_split}: {len(dataset)} images, "
            f"{len(labels)} classes, mode {cfg.mode} {cfg.resolved()}, {group_size} rank(s)"
        )
    try:
        _, metrics = evaluate_dataset(
            net,
            dataset,
            cfg,
            labels=labels,
            text_cache=cache,
            rank=rank,
            group_size=group_size,
            progress=args.progress_bar and rank == 0,
            max_samples=args.num_samples,
        )
    except Exception as e:  # a bad sample names its file (SegDataError); show it without a deep traceback
        if type(e).__name__ == "SegDataError" or isinstance(e, ValueError):
            return _fail(str(e))
        raise
    if rank == 0:
        print(format_table(metrics))
        out_dir = args.eval_output or os.path.join(args.ckpt_save_dir, f"validate_{cfg.mode}")
        extra = {
            "model": args.model,
            "ckpt_path": args.ckpt_path,
            "dataset": args.dataset,
            "data_dir": args.data_dir,
            "split": args.val_split,
            "num_ranks": group_size,
            "config": config_to_dict(args),
        }
        save_metrics_json(metrics, os.path.join(out_dir, "metrics.json"), extra=extra)
        save_metrics_csv(metrics, os.path.join(out_dir, "per_class.csv"))
        print(f"saved {os.path.join(out_dir, 'metrics.json')} and {os.path.join(out_dir, 'per_class.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
