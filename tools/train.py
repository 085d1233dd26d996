"""Train LSeg (mindcv style): ``python tools/train.py -c configs/lseg_ade20k.yaml [--key value ...]``.

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

from mindcv_lseg.engine.config import ConfigError, parse_args  # noqa: E402


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
    except ConfigError as e:
        print(f"train.py: config error: {e}", file=sys.stderr)
        return 2
    from mindcv_lseg.engine.trainer import run_cli

    return run_cli(args)


if __name__ == "__main__":
    sys.exit(main())
