"""Train LSeg (mindcv style): a flat YAML config (-c) sets the defaults, flags override them.

Outputs in --ckpt_save_dir: config.yaml, train.log, metrics.csv/json, curves.png, {model}-{epoch}.ckpt, best.ckpt.

Data parallel on one machine (CPU/GPU/Ascend)::

    msrun --worker_num 2 --local_worker_num 2 --master_port 8129 --log_dir LOGDIR --join True \
        python tools/train.py -c configs/lseg_toy.yaml --distribute

Resume an interrupted run: ``--resume auto`` (latest checkpoint in ckpt_save_dir) or ``--resume PATH``.
A ckpt_save_dir in use by another run, or holding another run's results, is refused (exit 2) unless ``--resume auto``
or ``--overwrite`` (delete those results) is given; Ctrl-C stops with exit 130 (see mindcv_lseg/engine/run_dir.py).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

EPILOG = """\
examples:
  python tools/train.py -c configs/lseg_toy.yaml                       # tiny model on the generated toy set
  python tools/train.py -c configs/lseg_toy.yaml --help                # the options with this file's values
  python tools/train.py -c configs/lseg_ade20k.yaml --data_dir /data/ADEChallengeData2016 \\
      --backbone_ckpt vit_l16_image.ckpt --text_ckpt clip_text.ckpt     # paper recipe from timm + CLIP weights
  python tools/train.py -c configs/lseg_ade20k.yaml --ckpt_path lseg_l16.ckpt --lr 0.001   # fine-tune
  python tools/train.py -c configs/lseg_ade20k.yaml --resume auto      # continue after an interruption
  msrun --worker_num 2 --local_worker_num 2 --master_port 8129 --log_dir logs --join True \\
      python tools/train.py -c configs/lseg_toy.yaml --distribute      # data parallel

exit status: 0 done; 1 a run-time error (message on stderr); 2 a bad option or config file; 130 interrupted.
"""

os.environ["MINDCV_LSEG_DEFER_IMPORTS"] = "1"  # parse (and answer --help) before MindSpore is imported
from mindcv_lseg.engine.config import ConfigError, build_parser, parse_args  # noqa: E402

os.environ.pop("MINDCV_LSEG_DEFER_IMPORTS")


def main(argv=None) -> int:
    try:
        parser = build_parser(__doc__, tool="train", epilog=EPILOG, prog="tools/train.py")
        args = parse_args(argv, parser=parser)
    except ConfigError as e:
        print(f"train.py: config error: {e}", file=sys.stderr)
        return 2
    from mindcv_lseg.engine.trainer import run_cli

    return run_cli(args)


if __name__ == "__main__":
    sys.exit(main())
