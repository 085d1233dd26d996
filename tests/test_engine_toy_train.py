"""Short toy training (in-process, GRAPH mode): the loss falls and whole-image val mIoU rises clearly above chance.

The full-length run (val mIoU >= 0.9 within 10 minutes) is ``benchmarks/train_toy.py``; this is a cut-down version:
lseg_tiny_test, 24 toy images of 64 px, batch 4, 8 epochs."""

import os

import pytest

from mindcv_lseg.engine.config import parse_args

pytestmark = pytest.mark.slow  # a toy training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_toy_training_learns(tmp_path):
    from mindcv_lseg.data import make_toy_dataset
    from mindcv_lseg.engine.trainer import SegTrainer

    data = make_toy_dataset(str(tmp_path / "toy"), num_train=24, num_val=6, size=64, seed=0)
    args = parse_args(
        [
            "-c",
            os.path.join(ROOT, "configs", "lseg_toy.yaml"),
            "--data_dir",
            data,
            "--ckpt_save_dir",
            str(tmp_path / "out"),
            "--crop_size",
            "64",
            "--base_size",
            "64",
            "--batch_size",
            "4",
            "--epoch_size",
            "8",
            "--val_interval",
            "1",
            "--progress_bar",
            "false",
        ]
    )
    trainer = SegTrainer(args)
    trainer.fit()
    rows = trainer.history.rows
    assert [r["epoch"] for r in rows] == list(range(1, 9))
    assert rows[-1]["train_loss"] < 0.6 * rows[0]["train_loss"]
    chance = 1.0 / trainer.num_classes
    assert max(r["val_miou"] for r in rows) > 1.5 * chance  # uniform guessing gives mIoU < chance
    assert rows[-1]["val_miou"] > rows[0]["val_miou"] + 0.1
    assert os.path.isfile(tmp_path / "out" / "curves.png")
