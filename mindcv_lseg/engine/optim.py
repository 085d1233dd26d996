"""Parameter groups, learning-rate schedule and optimizer for LSeg training (the paper's recipe by default).

Groups (reference ``configure_optimizers``): the image encoder (``encoder.*``: ViT + reassemble) at the base lr,
the DPT decoder and head (``scratch.*``) at ``decoder_lr_mult`` x the base lr (10x in the paper). The CLIP text
encoder (``clip_text.*``) is frozen (``requires_grad=False``) and never given to the optimizer.

Schedule: ``mindcv.scheduler.create_scheduler`` (``polynomial_decay`` with ``decay_rate`` = poly power 0.9), as a
per-optimizer-update list: one entry per optimizer update (i.e. per ``gradient_accumulation_steps`` micro-batches). With
``lr_epoch_stair=True`` the lr changes once per epoch, as in the reference (Lightning's ``LambdaLR`` per epoch);
with ``False`` it decays smoothly every update. mindcv quirks: with ``warmup_epochs > 0`` the first warm-up lr is
``lr * warmup_factor`` (0 by default), and ``min_lr`` is ignored by ``polynomial_decay``.

Optimizer: MindSpore's ``nn.Momentum`` / ``nn.SGD`` / ``nn.AdamWeightDecay`` with group dicts, used directly:
``mindcv.optim.create_optimizer`` only supports per-group lrs with its ``weight_decay_filter="auto"`` split and
its own ``adamw`` is very memory-hungry on CPU (docs/platform_notes.md, "Training pieces").
"""

import contextlib
import logging
import math
from typing import Dict, List, Optional, Sequence, Tuple

from mindcv.scheduler import create_scheduler
from mindspore import nn

__all__ = [
    "ENCODER_PREFIX",
    "DECODER_PREFIX",
    "FROZEN_PREFIXES",
    "split_param_groups",
    "effective_lr",
    "updates_per_epoch",
    "build_lr_schedule",
    "create_seg_optimizer",
]

_logger = logging.getLogger(__name__)

ENCODER_PREFIX = "encoder."
DECODER_PREFIX = "scratch."
FROZEN_PREFIXES = ("clip_text.",)


WEIGHT_DECAY_FILTERS = ("disable", "norm_and_bias")


def _no_decay(param) -> bool:
    """Bias / norm parameters (excluded from weight decay with ``weight_decay_filter="norm_and_bias"``)."""
    name = param.name
    return param.ndim <= 1 or "beta" in name or "gamma" in name or "bias" in name


def split_param_groups(net: nn.Cell) -> Tuple[List, List]:
    """Split the trainable parameters of an LSeg network into (encoder, decoder) lists.

    Frozen prefixes (``clip_text.*``) are forced to ``requires_grad=False`` and excluded. Trainable parameters outside
    ``encoder.*``/``scratch.*`` join the encoder (base-lr) group, with a warning.

    Returns:
        (encoder_params, decoder_params): lists of ``mindspore.Parameter``.
    """
    enc, dec, other = [], [], []
    for p in net.get_parameters():
        if p.name.startswith(FROZEN_PREFIXES):
            if p.requires_grad:
                _logger.warning("freezing %s (the CLIP text encoder is not trained)", p.name)
                p.requires_grad = False
            continue
        if not p.requires_grad:
            continue
        if p.name.startswith(DECODER_PREFIX):
            dec.append(p)
        elif p.name.startswith(ENCODER_PREFIX):
            enc.append(p)
        else:
            other.append(p)
    if other:
        _logger.warning(
            "%d trainable parameters outside encoder.*/scratch.* get the base lr: %s",
            len(other),
            [p.name for p in other[:5]],
        )
        enc.extend(other)
    if not enc and not dec:
        raise ValueError(
            f"{type(net).__name__} has no trainable parameters under {ENCODER_PREFIX!r}/{DECODER_PREFIX!r}"
        )
    return enc, dec


def effective_lr(lr: float, batch_size: int, lr_ref_batch_size: int = 0) -> float:
    """Base lr actually used: ``lr * batch_size / lr_ref_batch_size`` if ``lr_ref_batch_size > 0`` else ``lr``.

    The paper: ``lr=0.004, lr_ref_batch_size=16`` -> 2.5e-4 at (per-device) batch size 1.
    """
    if lr_ref_batch_size and lr_ref_batch_size > 0:
        return lr * batch_size / lr_ref_batch_size
    return lr


def updates_per_epoch(steps_per_epoch: int, gradient_accumulation_steps: int) -> int:
    """Optimizer updates per epoch: accumulation windows never cross an epoch end (the last one may be short)."""
    return int(math.ceil(steps_per_epoch / max(1, gradient_accumulation_steps)))


_USES_DECAY_EPOCHS = ("cosine_decay", "step_decay")


def build_lr_schedule(
    base_lr: float,
    num_updates_per_epoch: int,
    epochs: int,
    scheduler: str = "polynomial_decay",
    decay_rate: float = 0.9,
    warmup_epochs: int = 0,
    warmup_factor: float = 0.0,
    min_lr: float = 0.0,
    decay_epochs: Optional[int] = None,
    lr_epoch_stair: bool = False,
) -> List[float]:
    """Per-update lr list (length ``num_updates_per_epoch * epochs``) from ``mindcv.scheduler.create_scheduler``.

    ``decay_epochs`` is used by ``cosine_decay`` (epochs to reach ``min_lr``) and ``step_decay`` (epochs per step)
    only; ``None`` means ``epochs - warmup_epochs`` (the whole run after warm-up; ``step_decay`` needs a value).
    mindcv warns ``warmup_epochs + decay_epochs > num_epochs`` whenever that sum is too large, even for schedules
    that ignore ``decay_epochs`` (its default is 10): those get ``epochs - warmup_epochs``, which never triggers it,
    and an explicit value that does is reported by a warning naming the keys and their values instead.
    """
    if num_updates_per_epoch < 1:
        raise ValueError(
            "the training set yields no batch per epoch (dataset smaller than batch_size with " "drop_remainder?)"
        )
    main_epochs = epochs - warmup_epochs
    if scheduler == "step_decay" and decay_epochs is None:
        raise ValueError("scheduler step_decay needs decay_epochs (epochs per step of x decay_rate)")
    if decay_epochs is None or scheduler not in _USES_DECAY_EPOCHS:
        decay_epochs = main_epochs
    elif decay_epochs > main_epochs:
        _logger.warning(
            "decay_epochs (%d) + warmup_epochs (%d) > epoch_size (%d): the %s schedule ends before its " "decay does",
            decay_epochs,
            warmup_epochs,
            epochs,
            scheduler,
        )
    with _quiet_mindcv_decay_warning():
        lrs = create_scheduler(
            num_updates_per_epoch,
            scheduler=scheduler,
            lr=base_lr,
            min_lr=min_lr,
            warmup_epochs=warmup_epochs,
            warmup_factor=warmup_factor,
            decay_epochs=decay_epochs,
            decay_rate=decay_rate,
            num_epochs=epochs,
            lr_epoch_stair=lr_epoch_stair,
        )
    return [float(x) for x in lrs]


class _DropDecayWarning(logging.Filter):
    def filter(self, record):
        return "warmup_epochs + decay_epochs > num_epochs" not in record.getMessage()


@contextlib.contextmanager
def _quiet_mindcv_decay_warning():
    """mindcv's bare ``warmup_epochs + decay_epochs > num_epochs`` warning, replaced by the specific one above."""
    log = logging.getLogger("mindcv.scheduler.scheduler_factory")
    f = _DropDecayWarning()
    log.addFilter(f)
    try:
        yield
    finally:
        log.removeFilter(f)


def _groups(params: Sequence, lr, weight_decay: float, weight_decay_filter: str) -> List[Dict]:
    if not params:
        return []
    if weight_decay_filter == "disable":
        return [{"params": list(params), "lr": lr, "weight_decay": weight_decay}]
    decay = [p for p in params if not _no_decay(p)]
    no_decay = [p for p in params if _no_decay(p)]
    out = []
    if decay:
        out.append({"params": decay, "lr": lr, "weight_decay": weight_decay})
    if no_decay:
        out.append({"params": no_decay, "lr": lr, "weight_decay": 0.0})
    return out


def create_seg_optimizer(
    net: nn.Cell,
    lr_schedule: Sequence[float],
    opt: str = "momentum",
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    decoder_lr_mult: float = 10.0,
    use_nesterov: bool = False,
    weight_decay_filter: str = "disable",
) -> nn.Optimizer:
    """Optimizer over the encoder (base lr) and decoder (``decoder_lr_mult`` x lr) groups.

    Args:
        net: LSeg network (parameter names ``encoder.*``, ``scratch.*``, ``clip_text.*``).
        lr_schedule: per-update base lr list (see :func:`build_lr_schedule`); the decoder list is it times the mult.
        opt: ``momentum`` (SGD with momentum, the paper), ``sgd`` or ``adamw``.
        momentum: momentum (beta1 for adamw).
        weight_decay: weight decay (the paper: 1e-4 on every parameter).
        decoder_lr_mult: lr multiplier of ``scratch.*``.
        use_nesterov: Nesterov momentum.
        weight_decay_filter: mindcv's name and values: ``"disable"`` (decay every parameter, the paper) or
            ``"norm_and_bias"`` (no weight decay on biases / norm parameters). mindcv's ``"auto"`` relies on
            MindSpore's implicit filter, which does not apply to group dicts, so it is not offered.

    Gradients reaching the optimizer are already unscaled (the train step divides out the loss scale).

    Returns:
        ``mindspore.nn.Optimizer``; its state is ``global_step`` and ``moments.*`` (momentum buffers).
    """
    if weight_decay_filter not in WEIGHT_DECAY_FILTERS:
        raise ValueError(f"weight_decay_filter must be one of {WEIGHT_DECAY_FILTERS}, got {weight_decay_filter!r}")
    enc, dec = split_param_groups(net)
    base = [float(x) for x in lr_schedule]
    dec_lr = [x * decoder_lr_mult for x in base]
    groups = _groups(enc, base, weight_decay, weight_decay_filter) + _groups(
        dec, dec_lr, weight_decay, weight_decay_filter
    )
    groups.append({"order_params": enc + dec})
    opt = opt.lower()
    if opt == "momentum":
        return nn.Momentum(
            groups, learning_rate=base, momentum=momentum, weight_decay=weight_decay, use_nesterov=use_nesterov
        )
    if opt == "sgd":
        return nn.SGD(groups, learning_rate=base, momentum=momentum, weight_decay=weight_decay, nesterov=use_nesterov)
    if opt == "adamw":
        return nn.AdamWeightDecay(groups, learning_rate=base, beta1=momentum, weight_decay=weight_decay)
    raise ValueError(f"unsupported optimizer {opt!r}: use 'momentum', 'sgd' or 'adamw'")
