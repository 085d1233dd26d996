"""The LSeg training loop: data-parallel, resumable, validated, logged.

``SegTrainer(args).fit()`` runs a whole training from a resolved config (:mod:`mindcv_lseg.engine.config`):

1. context: GRAPH mode by default; with ``distribute`` it calls ``mindspore.communication.init()`` and sets
   ``DATA_PARALLEL`` with ``gradients_mean=True`` (run it under ``msrun``);
2. network: ``mindcv.create_model(model)`` (after ``import mindcv_lseg``), optionally initialised from a full LSeg
   checkpoint (``ckpt_path``, strict) and/or converted image/text encoder weights (``backbone_ckpt``/``text_ckpt``,
   partial but checked); the CLIP text encoder stays frozen;
3. labels: the label set's embeddings are computed ONCE with ``net.encode_text`` and fed as a constant input;
4. data: ``mindcv_lseg.data.create_seg_dataset`` + ``create_seg_loader`` (seeded per-epoch order/augmentation,
   sharded per rank, resumable at an epoch);
5. optimization: :mod:`.optim` (encoder lr, decoder ``decoder_lr_mult`` x lr, poly schedule) + :mod:`.train_step`
   (fixed loss scale, gradient accumulation, rank reduction);
6. every ``val_interval`` epochs: whole-image validation, confusion matrices SUMMED over ranks, mIoU;
7. checkpoints (rank 0): periodic + keep-last-k + ``best.ckpt``, each with optimizer/RNG/sampler/config state;
   ``resume`` continues exactly;
8. logs (rank 0): tqdm per epoch, ``train.log``, ``metrics.csv``/``metrics.json``, ``curves.png`` at the end.

With data parallelism each rank keeps its own BatchNorm batch statistics during the epoch (no SyncBN on CPU) and
the running statistics are averaged over ranks at each epoch end, so the replicas stay identical.
"""

import hashlib
import math
import os
import time
from typing import Dict, List

import numpy as np
import yaml

import mindspore as ms
from mindspore import nn, ops

from ..checkpoint import CheckpointMismatchError, load_into_net
from ..compile_notice import announce_compile
from ..fileio import atomic_write_text
from ..models.amp import auto_mixed_precision
from .checkpointing import CheckpointManager, get_rng_state, load_train_checkpoint, resolve_resume_path, set_rng_state
from .config import config_to_dict, save_config
from .interrupt import interrupt_point, interrupt_signals
from .logger import MetricsHistory, create_logger, plot_curves
from .loss import NetWithLoss, create_seg_loss
from .optim import build_lr_schedule, create_seg_optimizer, effective_lr, updates_per_epoch
from .run_dir import RunDirError, prepare_run_dir
from .train_step import build_train_cells, resolve_loss_scale_type

__all__ = [
    "init_context",
    "build_network",
    "load_partial_weights",
    "param_digest",
    "sync_bn_statistics",
    "build_datasets",
    "SegTrainer",
    "train",
    "run_cli",
]

# config keys that may legitimately differ between the run that wrote a checkpoint and the run resuming it
_RESUME_FREE_KEYS = {
    "resume",
    "overwrite",
    "config",
    "progress_bar",
    "log_interval",
    "param_digest_dir",
    "num_parallel_workers",
    "epoch_size",
}


# ------------------------------------------------------------------------------------------------------- context
def init_context(mode: int = 0, device_target: str = "CPU", distribute: bool = False):
    """Set the execution mode/device and, if ``distribute``, initialise data-parallel communication.

    Returns:
        (rank_id, group_size)
    """
    from ..eval.model_io import setup_context

    setup_context(mode, device_target)
    if not distribute:
        return 0, 1
    from mindspore.communication import get_group_size, get_rank, init

    try:
        init()
    except Exception as e:
        raise RuntimeError(
            "distribute=True needs MindSpore's launcher: run e.g. `msrun --worker_num 2 --local_worker_num 2 "
            "--master_port 8129 --log_dir LOGDIR --join True python tools/train.py -c CONFIG --distribute` "
            f"(communication init failed: {e})"
        ) from None
    group_size = get_group_size()
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(
        parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True, device_num=group_size
    )
    return get_rank(), group_size


# ------------------------------------------------------------------------------------------------------- network
def load_partial_weights(net: nn.Cell, path: str, prefix: str, what: str) -> List[str]:
    """Load converted weights of one part of the network (names as in the LSeg network, e.g. ``encoder.vit.*``).

    Unlike a plain non-strict load, a parameter of the checkpoint that the network does not have, a parameter
    outside ``prefix``, or a shape mismatch is an error; the part's parameters missing from the file keep their
    initial values (e.g. the reassemble layers when loading a bare timm ViT) and are returned.
    """
    try:
        missing, unexpected = load_into_net(net, path, strict=False, prefix=prefix)  # raises on shape mismatches
    except CheckpointMismatchError as e:
        raise CheckpointMismatchError(f"{what} checkpoint: {e}") from None
    if unexpected:
        raise CheckpointMismatchError(
            f"{what} checkpoint {path} holds parameters that are not {prefix}* parameters of the network "
            f"{type(net).__name__}: {unexpected[:5]} ({len(unexpected)} in all); convert it with the matching --part "
            "and --model"
        )
    if len(missing) == sum(1 for p in net.get_parameters() if p.name.startswith(prefix)):
        raise CheckpointMismatchError(f"{what} checkpoint {path} contains no parameter of the network under {prefix}")
    return missing


def build_network(args, logger=None) -> nn.Cell:
    """``mindcv.create_model(args.model)`` + optional weight initialisation from converted checkpoints."""
    import mindcv

    import mindcv_lseg.models  # noqa: F401  (registers the lseg_* entries)

    for key in ("ckpt_path", "backbone_ckpt", "text_ckpt"):
        path = getattr(args, key)
        if path and not os.path.isfile(path):
            raise FileNotFoundError(f"{key}: file not found: {path!r}")
    if not mindcv.is_model(args.model):
        lseg = [m for m in mindcv.list_models() if m.startswith("lseg")]
        raise ValueError(f"unknown model {args.model!r}; LSeg models: {lseg}")
    # mindcv's slow truncated-normal ViT init is skipped when the encoder weights are loaded afterwards
    weight_init = not (args.ckpt_path or args.backbone_ckpt)
    # mindcv drops None-valued arguments, so unset drop rates keep the model's defaults (no dropout)
    net = mindcv.create_model(
        args.model,
        weight_init=weight_init,
        drop_rate=getattr(args, "drop_rate", None),
        drop_path_rate=getattr(args, "drop_path_rate", None),
        recompute=getattr(args, "recompute", None),
        impl=args.impl,
    )
    if args.ckpt_path:
        load_into_net(net, args.ckpt_path, strict=True)
        if logger:
            logger.info("initialised the whole network from %s", args.ckpt_path)
    if args.backbone_ckpt:
        kept = load_partial_weights(net, args.backbone_ckpt, "encoder.", "image-encoder")
        if logger:
            logger.info(
                "loaded the image encoder from %s (%d encoder parameters keep their init, e.g. %s)",
                args.backbone_ckpt,
                len(kept),
                kept[:3],
            )
    if args.text_ckpt:
        kept = load_partial_weights(net, args.text_ckpt, "clip_text.", "text-encoder")
        if kept:
            raise CheckpointMismatchError(
                f"text-encoder checkpoint {args.text_ckpt} lacks {len(kept)} CLIP text " f"parameters, e.g. {kept[:5]}"
            )
        if logger:
            logger.info("loaded the CLIP text encoder from %s", args.text_ckpt)
    for p in net.get_parameters():
        if p.name.startswith("clip_text."):
            p.requires_grad = False
    return net


# ------------------------------------------------------------------------------------------------ replicas & digest
def param_digest(net: nn.Cell) -> Dict[str, str]:
    """sha256 of every parameter's bytes (name order) plus ``"__all__"`` over all of them."""
    total = hashlib.sha256()
    out = {}
    for p in sorted(net.get_parameters(), key=lambda q: q.name):
        data = np.ascontiguousarray(p.asnumpy()).tobytes()
        out[p.name] = hashlib.sha256(data).hexdigest()
        total.update(p.name.encode())
        total.update(data)
    out["__all__"] = total.hexdigest()
    return out


def sync_bn_statistics(net: nn.Cell, group_size: int) -> int:
    """Average BatchNorm running statistics over ranks (all ranks must call it). Returns the number synced."""
    if group_size <= 1:
        return 0
    allreduce = ops.AllReduce(ops.ReduceOp.SUM)
    n = 0
    for p in net.get_parameters():
        if p.name.endswith(("moving_mean", "moving_variance")):
            p.set_data(allreduce(p.value()) / float(group_size))
            n += 1
    return n


# ------------------------------------------------------------------------------------------------------- data
def _label_arg(label_set: str):
    return label_set or None


def _barrier(group_size: int) -> None:
    if group_size > 1:
        ops.AllReduce(ops.ReduceOp.SUM)(ms.Tensor(np.ones(1, np.float32))).asnumpy()


def build_datasets(args, rank: int = 0, group_size: int = 1):
    """(train_dataset, val_dataset or None) from the config.

    The toy set is generated on first use; with several ranks only rank 0 generates it while the others wait.
    """
    from ..data import create_seg_dataset

    if args.dataset == "toy" and group_size > 1:
        if rank == 0 and not os.path.isfile(os.path.join(args.data_dir, "classes.txt")):
            from ..data import make_toy_dataset

            make_toy_dataset(args.data_dir)
        _barrier(group_size)

    common = dict(
        label_set=_label_arg(args.label_set),
        base_size=args.base_size,
        crop_size=args.crop_size,
        ignore_index=args.ignore_index,
    )
    train_ds = create_seg_dataset(
        args.dataset,
        args.data_dir,
        args.train_split,
        transform="train",
        scale_range=tuple(args.scale_range),
        hflip=args.hflip,
        **common,
    )
    val_ds = None
    if args.val_while_train:
        val_ds = create_seg_dataset(
            args.dataset, args.data_dir, args.val_split, transform="val", val_mode=args.val_mode, **common
        )
        if list(val_ds.label_set.labels) != list(train_ds.label_set.labels):
            raise ValueError("the train and val splits have different label sets")
    if args.num_samples:
        # minimal adapter: the data package has no subset option; datasets index their ``samples`` list
        train_ds.samples = train_ds.samples[: args.num_samples]
        if val_ds is not None:
            val_ds.samples = val_ds.samples[: args.num_samples]
    return train_ds, val_ds


def _eval_logits(net, x: np.ndarray, text, args) -> np.ndarray:
    """Logits [1, N, H, W] of one validation image in the configured ``eval_mode`` (whole / slide / ms_flip)."""
    from ..eval.inference import InferenceConfig, run_inference

    return run_inference(net, x, text, InferenceConfig.from_args(args))


# ------------------------------------------------------------------------------------------------------- trainer
class SegTrainer:
    """Owns everything of one training run. Use ``SegTrainer(args).fit()``.

    Args:
        args: resolved config (``argparse.Namespace`` from :func:`mindcv_lseg.engine.config.parse_args`).
    """

    def __init__(self, args):
        self.args = args
        self.t_start = time.time()
        self.rank, self.group_size = init_context(args.mode, args.device_target, args.distribute)
        self.is_main = self.rank == 0
        self.save_dir = args.ckpt_save_dir
        # rank 0 locks the folder, refuses another run's results (unless resume/overwrite) and removes the temp
        # files of a killed save -- before anything (train.log included) is written
        self.run_lock = None
        if self.is_main:
            self.run_lock = prepare_run_dir(self.save_dir, resume=args.resume, overwrite=args.overwrite)
        try:
            self.logger = create_logger(self.save_dir if self.is_main else None, self.rank)
            from mindcv.utils import set_seed

            # the same seed on every rank: identical initial weights (the data shards differ by rank)
            set_seed(args.seed)
            self.history = MetricsHistory(self.save_dir, self.rank)
            self.ckpt = CheckpointManager(self.save_dir, args.model, args.keep_checkpoint_max, self.rank)
            self._setup()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the run folder's lock (also released when the process ends)."""
        if self.run_lock is not None:
            self.run_lock.release()
            self.run_lock = None

    # -------------------------------------------------------------------------------------------------- setup
    def _setup(self):
        args, log = self.args, self.logger
        self.resume_path = resolve_resume_path(args.resume, self.save_dir)
        self.train_ds, self.val_ds = build_datasets(args, self.rank, self.group_size)
        self.labels = list(self.train_ds.label_set.labels)
        self.num_classes = len(self.labels)

        self.net = build_network(args, log)
        self.net.set_train(False)
        self.text_features = self.net.encode_text(self.labels)  # frozen text encoder: computed once
        self.text_features = ms.Tensor(self.text_features.asnumpy())

        from ..data import create_seg_loader

        self.loader = create_seg_loader(
            self.train_ds,
            args.batch_size,
            shuffle=args.shuffle,
            num_workers=args.num_parallel_workers,
            num_shards=self.group_size,
            shard_id=self.rank,
            seed=args.seed,
            drop_remainder=args.drop_remainder,
            output_numpy=True,
        )
        self.val_loader = None
        if self.val_ds is not None:
            self.val_loader = create_seg_loader(
                self.val_ds,
                1,
                shuffle=False,
                num_workers=1,
                num_shards=self.group_size,
                shard_id=self.rank,
                seed=args.seed,
                drop_remainder=False,
                output_numpy=True,
            )
        self.steps_per_epoch = self.loader.steps_per_epoch
        self.updates_per_epoch = updates_per_epoch(self.steps_per_epoch, args.gradient_accumulation_steps)
        self.base_lr = effective_lr(args.lr, args.batch_size, args.lr_ref_batch_size)
        self.lr_schedule = build_lr_schedule(
            self.base_lr,
            self.updates_per_epoch,
            args.epoch_size,
            scheduler=args.scheduler,
            decay_rate=args.decay_rate,
            warmup_epochs=args.warmup_epochs,
            warmup_factor=args.warmup_factor,
            min_lr=args.min_lr,
            decay_epochs=args.decay_epochs,
            lr_epoch_stair=args.lr_epoch_stair,
        )
        self.optimizer = create_seg_optimizer(
            self.net,
            self.lr_schedule,
            opt=args.opt,
            momentum=args.momentum,
            weight_decay=args.weight_decay,
            decoder_lr_mult=args.decoder_lr_mult,
            use_nesterov=args.use_nesterov,
            weight_decay_filter=args.weight_decay_filter,
        )
        self.loss_fn = create_seg_loss(args.loss, args.ignore_index, impl=self.net.impl)
        auto_mixed_precision(self.net, args.amp_level)  # image branch only; text features are computed above
        self.net_with_loss = NetWithLoss(self.net, self.loss_fn, self.text_features)
        loss_scale_type = resolve_loss_scale_type(args.loss_scale_type, args.amp_level)
        self.driver = build_train_cells(
            self.net_with_loss,
            self.optimizer,
            args.gradient_accumulation_steps,
            args.loss_scale,
            args.clip_grad,
            args.clip_value,
            args.distribute,
            loss_scale_type,
        )
        log.info(
            "impl %s, amp_level %s, loss scale %s %g", self.net.impl, args.amp_level, loss_scale_type, args.loss_scale
        )

        self.start_epoch, self.global_step, self.best_miou, self.best_epoch = 0, 0, -1.0, -1
        if self.resume_path:
            self._resume(self.resume_path)
        elif args.resume == "auto":
            log.info("resume=auto: no checkpoint in %s yet, starting from scratch", self.save_dir)
        self.loader.set_epoch(self.start_epoch, 0)
        if self.is_main:
            save_config(args, os.path.join(self.save_dir, "config.yaml"))
        n_enc = sum(p.size for p in self.optimizer.parameters if p.name.startswith("encoder."))
        n_dec = sum(p.size for p in self.optimizer.parameters if p.name.startswith("scratch."))
        log.info(
            "model %s: %d labels (%s), trainable encoder %.2fM @ lr %.3g, decoder %.2fM @ lr %.3g, "
            "frozen text encoder",
            args.model,
            self.num_classes,
            self.train_ds.label_set.name,
            n_enc / 1e6,
            self.base_lr,
            n_dec / 1e6,
            self.base_lr * args.decoder_lr_mult,
        )
        log.info(
            "data %s: %d train / %s val samples, %d rank(s), batch %d/rank, %d steps/epoch, "
            "gradient_accumulation_steps %d -> %d updates/epoch, %d epochs",
            args.dataset,
            len(self.train_ds),
            len(self.val_ds) if self.val_ds is not None else "no",
            self.group_size,
            args.batch_size,
            self.steps_per_epoch,
            args.gradient_accumulation_steps,
            self.updates_per_epoch,
            args.epoch_size,
        )

    def _resume(self, path: str):
        args, log = self.args, self.logger
        state = load_train_checkpoint(path, self.net, self.optimizer)
        self.start_epoch = state.get("epoch", 0)
        self.global_step = state.get("step", 0)
        self.best_miou = state.get("best_miou", -1.0)
        self.best_epoch = state.get("best_epoch", -1)
        if state.get("seed", args.seed) != args.seed:
            log.warning(
                "resuming with seed %d but the checkpoint was written with seed %d: the data order differs",
                args.seed,
                state["seed"],
            )
        if "train_config" in state:
            old = yaml.safe_load(state["train_config"]) or {}
            new = config_to_dict(args)
            diff = sorted(k for k in set(old) | set(new) if k not in _RESUME_FREE_KEYS and old.get(k) != new.get(k))
            if diff:
                log.warning(
                    "config differs from the checkpoint's in %s; the run will not match an " "uninterrupted one",
                    ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff),
                )
        if "train_history" in state:
            self.history.load_json(state["train_history"])
            self.history.truncate(self.start_epoch)
        if "rng_state" in state:
            set_rng_state(state["rng_state"])
        expected = self.start_epoch * self.updates_per_epoch
        got = int(self.optimizer.global_step.asnumpy().reshape(-1)[0])
        if got != expected:
            log.warning(
                "optimizer step %d != %d epochs x %d updates: the lr schedule is offset",
                got,
                self.start_epoch,
                self.updates_per_epoch,
            )
        log.info(
            "resumed from %s at epoch %d (optimizer step %d, best mIoU %.4f)",
            path,
            self.start_epoch,
            got,
            self.best_miou,
        )

    # -------------------------------------------------------------------------------------------------- loop
    def _lr_at(self, update: int) -> float:
        return self.lr_schedule[min(update, len(self.lr_schedule) - 1)]

    def _log_compile(self, bar):
        """Compilation notices go to the log (rank 0), printed above the progress bar."""
        if not self.is_main:
            return lambda msg: None
        if bar is None:
            return self.logger.info

        def log(msg):
            bar.clear()
            self.logger.info(msg)
            bar.refresh()

        return log

    def train_one_epoch(self, epoch: int) -> Dict:
        """One pass over this rank's shard. Returns ``{"train_loss", "lr", "epoch_time", "images_per_s"}``."""
        args = self.args
        k = args.gradient_accumulation_steps
        steps = self.steps_per_epoch
        self.driver.set_train(True)
        bar = None
        if self.is_main and args.progress_bar:
            from tqdm import tqdm

            bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{args.epoch_size}", dynamic_ncols=True, leave=True)
        losses, t0, t_last = [], time.time(), time.time()
        imgs_per_step = args.batch_size * self.group_size
        for step, (image, mask) in enumerate(self.loader):
            close = (step + 1) % k == 0 or step + 1 == steps
            # own the batch memory: graph execution on pipeline-owned (do_copy=False) tensors can stall at the
            # end of an epoch
            done = announce_compile(
                self.driver, "training", image.shape, "first step", model=args.model, log=self._log_compile(bar)
            )
            if close and k > 1:
                done_update = announce_compile(
                    self.driver, "optimizer-update", (), "first update", log=self._log_compile(bar)
                )
            loss, _ = self.driver.step(
                ms.Tensor(np.ascontiguousarray(image)), ms.Tensor(np.ascontiguousarray(mask)), close
            )
            done()
            if close and k > 1:
                done_update()
            interrupt_point()  # a Ctrl-C that MindSpore swallowed or whose handler it replaced (see .interrupt)
            loss = float(loss.asnumpy())
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"loss is {loss} at epoch {epoch + 1}, step {step + 1}: lower lr "
                    "(or check the labels against ignore_index / the label set)"
                )
            losses.append(loss)
            self.global_step += 1
            now = time.time()
            ips = imgs_per_step / max(now - t_last, 1e-9)
            t_last = now
            lr = self._lr_at(epoch * self.updates_per_epoch + step // k)
            if bar is not None:
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.3g}", img_s=f"{ips:.1f}")
                bar.update(1)
            if self.is_main and ((step + 1) % args.log_interval == 0 or step + 1 == steps):
                self.logger.info(
                    "epoch %d/%d step %d/%d loss %.4f lr %.4g %.1f img/s",
                    epoch + 1,
                    args.epoch_size,
                    step + 1,
                    steps,
                    loss,
                    lr,
                    ips,
                )
        if bar is not None:
            bar.close()
        if len(losses) != steps:
            raise RuntimeError(f"the loader yielded {len(losses)} batches instead of {steps} in epoch {epoch + 1}")
        dt = time.time() - t0
        return {
            "train_loss": float(np.mean(losses)),
            "lr": self._lr_at(epoch * self.updates_per_epoch),
            "epoch_time": dt,
            "images_per_s": steps * imgs_per_step / max(dt, 1e-9),
        }

    def evaluate_val_split(self) -> Dict:
        """Validation of this rank's shard in the configured ``eval_mode``; confusion matrices summed over ranks."""
        from ..eval.metrics import ConfusionMatrix, allreduce_confusion_matrix, compute_metrics

        self.net.set_train(False)
        cm = ConfusionMatrix(self.num_classes, self.args.ignore_index)
        t0 = time.time()
        for image, mask in self.val_loader:
            logits = _eval_logits(self.net, np.asarray(image, np.float32), self.text_features, self.args)
            interrupt_point()
            cm.update(logits.argmax(axis=1), np.asarray(mask))
        total = allreduce_confusion_matrix(cm.mat, self.group_size)
        m = compute_metrics(total, self.labels)
        return {
            "val_miou": m["mIoU"],
            "val_pixacc": m["pixAcc"],
            "val_miou_nanmean": m["mIoU_nanmean"],
            "val_time": time.time() - t0,
        }

    def _state(self, epoch: int) -> Dict:
        return {
            "epoch": epoch,
            "step": self.global_step,
            "best_miou": self.best_miou,
            "best_epoch": self.best_epoch,
            "seed": self.args.seed,
            "train_history": self.history.to_json(),
            "rng_state": get_rng_state(),
            "train_config": yaml.safe_dump(
                {k: v for k, v in config_to_dict(self.args).items() if k != "config"}, sort_keys=False
            ),
        }

    def fit(self) -> Dict:
        """Train from ``start_epoch`` to ``epoch_size``. Returns the last metrics row (rank 0 writes files)."""
        args, log = self.args, self.logger
        row = {}
        for epoch in range(self.start_epoch, args.epoch_size):
            row = {"epoch": epoch + 1}
            row.update(self.train_one_epoch(epoch))
            sync_bn_statistics(self.net, self.group_size)
            last = epoch + 1 == args.epoch_size
            is_best = False
            if self.val_loader is not None and ((epoch + 1) % args.val_interval == 0 or last):
                row.update(self.evaluate_val_split())
                if row["val_miou"] > self.best_miou:
                    self.best_miou, self.best_epoch, is_best = row["val_miou"], epoch + 1, True
            row["elapsed"] = time.time() - self.t_start  # wall time since this process started the trainer
            self.history.add(row)
            msg = (
                f"epoch {epoch + 1}/{args.epoch_size}: loss {row['train_loss']:.4f}, lr {row['lr']:.4g}, "
                f"{row['epoch_time']:.1f} s ({row['images_per_s']:.1f} img/s)"
            )
            if "val_miou" in row:
                msg += (
                    f", val mIoU {row['val_miou']:.4f} pixAcc {row['val_pixacc']:.4f} "
                    f"(best {self.best_miou:.4f} @ {self.best_epoch})"
                )
            log.info(msg)
            periodic = None
            if (epoch + 1) % args.ckpt_save_interval == 0 or last:
                periodic = self.ckpt.save_periodic(epoch + 1, self.net, self.optimizer, self._state(epoch + 1))
            if is_best and args.save_best:
                self.ckpt.save_best(self.net, self.optimizer, self._state(epoch + 1), source=periodic)
            self.history.save()
        if self.is_main:
            png = plot_curves(
                self.history, os.path.join(self.save_dir, "curves.png"), title=f"{args.model} on {args.dataset}"
            )
            log.info("done: best val mIoU %.4f at epoch %d; curves in %s", self.best_miou, self.best_epoch, png)
        if args.param_digest_dir:
            os.makedirs(args.param_digest_dir, exist_ok=True)
            digest = param_digest(self.net)
            path = os.path.join(args.param_digest_dir, f"params_rank{self.rank}.txt")
            atomic_write_text(path, "".join(f"{k} {v}\n" for k, v in sorted(digest.items())))
        return row


def train(args) -> Dict:
    """Run a whole training from a resolved config; returns the last metrics row. The run folder stays locked
    (:mod:`.run_dir`) until the run ends."""
    trainer = SegTrainer(args)
    try:
        return trainer.fit()
    finally:
        trainer.close()


def run_cli(args) -> int:
    """Entry point of ``tools/train.py``: run :func:`train`, turning user errors (bad files, data, checkpoints,
    diverging loss) into a one-line message and exit status 1; an unusable ``ckpt_save_dir`` (a file, another run's
    results, locked by a live run) gives exit status 2; Ctrl-C (SIGINT) or SIGTERM gives "interrupted; continue with
    --resume auto" and exit status 130. ``LSEG_DEBUG=1`` shows the traceback instead."""
    import sys

    try:
        with interrupt_signals():
            train(args)
    except RunDirError as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, OSError, FloatingPointError) as e:
        if os.environ.get("LSEG_DEBUG"):
            raise
        print(f"train.py: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("train.py: interrupted; continue with --resume auto", file=sys.stderr)
        return 130
    return 0
