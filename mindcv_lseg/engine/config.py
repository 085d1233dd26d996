"""Flat YAML + command-line configuration for LSeg training, validation and inference.

mindcv's own ``config.py`` is not part of its wheel and rejects keys it does not know, so the plug-in has its own,
written in the same style and keeping mindcv's argument names where they mean the same thing
(``mode``, ``model``, ``dataset``, ``data_dir``, ``batch_size``, ``epoch_size``, ``opt``, ``lr``, ``momentum``,
``weight_decay``, ``scheduler``, ``warmup_epochs``, ``ckpt_save_dir``, ``ckpt_path``, ``keep_checkpoint_max``,
``seed``, ``distribute``, ``num_parallel_workers``, ``val_interval``, ...), plus segmentation keys
(``crop_size``, ``base_size``, ``ignore_index``, ``label_set``, ``decoder_lr_mult``, ``grad_accumulation``,
``eval_mode``, ...).

Two-stage parsing, as in mindcv:

1. ``-c/--config FILE.yaml`` is parsed first; the YAML mapping is checked (unknown keys and wrong types are rejected
   with the key's name and the file) and becomes the parser's defaults;
2. the remaining command-line flags override it (``--lr 0.01``, lists as ``--eval_scales 0.75 1.0 1.25``,
   booleans as ``--distribute`` / ``--distribute false``).

Public API (used by ``tools/train.py``, ``tools/validate.py`` and ``tools/infer.py``)::

    from mindcv_lseg.engine.config import parse_args, save_config, load_config, ConfigError

    args = parse_args(["-c", "configs/lseg_toy.yaml", "--lr", "0.01"])   # -> argparse.Namespace
    save_config(args, "ckpt/config.yaml")      # atomic YAML dump of the resolved config (rank 0 only)
    cfg = load_config("ckpt/config.yaml")      # checked dict (same rules as -c)

    # a tool that needs extra, tool-specific flags:
    parser = build_parser("LSeg inference", extra_options=[
        Option("images", str, [], "input image paths", nargs="+", group="Inference")])
    args = parse_args(argv, parser=parser)

Every error (unknown key, wrong type, value not in the allowed choices, malformed YAML, missing file) raises
:class:`ConfigError`, whose message names the key and, for YAML, the file. CLIs catch it and exit with status 2.
"""
import argparse
import difflib
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import yaml

from ..fileio import atomic_write_text

__all__ = [
    "ConfigError",
    "Option",
    "OPTIONS",
    "build_parser",
    "parse_args",
    "check_config_dict",
    "load_config",
    "save_config",
    "config_to_dict",
]


class ConfigError(ValueError):
    """A configuration value or file is invalid; the message says which key/file and what was wrong."""


def str2bool(v) -> bool:
    """Parse a boolean the way mindcv does (yes/true/1, no/false/0)."""
    if isinstance(v, bool):
        return v
    if str(v).lower() in ("yes", "true", "1"):
        return True
    if str(v).lower() in ("no", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"boolean value expected (true/false), got {v!r}")


@dataclass
class Option:
    """One flat configuration key.

    Args:
        name: key name, used as ``--name`` on the command line and as ``name:`` in YAML.
        type: element type: ``bool``, ``int``, ``float`` or ``str``.
        default: default value (``None`` allowed only if ``optional``).
        help: one-line description.
        choices: allowed values (checked for YAML and CLI values alike).
        nargs: ``"+"``/``"*"`` makes the key a list of ``type``.
        optional: ``None``/``null`` is an accepted value.
        group: help-section title.
    """

    name: str
    type: type
    default: Any
    help: str
    choices: Optional[Sequence] = None
    nargs: Optional[str] = None
    optional: bool = False
    group: str = "Other"
    min_value: Optional[float] = field(default=None)


_SYS, _DATA, _MODEL, _CKPT, _OPT, _SCHED, _LOSS, _EVAL = (
    "System", "Dataset", "Model", "Checkpoint", "Optimizer", "Scheduler", "Loss", "Evaluation")

# fmt: off
OPTIONS: List[Option] = [
    # System
    Option("mode", int, 0, "GRAPH_MODE (0) or PYNATIVE_MODE (1)", choices=(0, 1), group=_SYS),
    Option("device_target", str, "CPU", "device: CPU, GPU or Ascend", choices=("CPU", "GPU", "Ascend"), group=_SYS),
    Option("distribute", bool, False, "data-parallel run under msrun (one process per device)", group=_SYS),
    Option("seed", int, 42, "seed for python/numpy/MindSpore RNGs and the data order", group=_SYS),
    Option("log_interval", int, 10, "write a text-log line every N optimizer steps", min_value=1, group=_SYS),
    Option("progress_bar", bool, True, "show a tqdm progress bar per epoch (rank 0)", group=_SYS),
    Option("param_digest_dir", str, "", "if set, every rank writes a digest of its final parameters here "
           "(to check data-parallel replicas agree)", group=_SYS),
    # Dataset
    Option("dataset", str, "toy", "dataset type (see mindcv_lseg.data.create_seg_dataset)", group=_DATA),
    Option("data_dir", str, "./data", "dataset root directory", group=_DATA),
    Option("train_split", str, "train", "training split name", group=_DATA),
    Option("val_split", str, "val", "validation split name", group=_DATA),
    Option("label_set", str, "", "label set: built-in name (ade20k_150, toy, ...), a text file with one label per line, "
           "or 'a, b, c'; empty = the dataset's own labels", group=_DATA),
    Option("num_parallel_workers", int, 1, "data-loading workers", min_value=1, group=_DATA),
    Option("shuffle", bool, True, "shuffle the training set every epoch (seeded)", group=_DATA),
    Option("num_samples", int, None, "use only the first N samples of each split (debug)", optional=True,
           min_value=1, group=_DATA),
    Option("batch_size", int, 1, "per-device batch size", min_value=1, group=_DATA),
    Option("drop_remainder", bool, True, "drop the last incomplete training batch", group=_DATA),
    Option("crop_size", int, 480, "training crop size (pixels, multiple of 32)", min_value=32, group=_DATA),
    Option("base_size", int, 520, "base size of random-scale augmentation (long side in [0.5, 2] x base)",
           min_value=1, group=_DATA),
    Option("scale_range", float, [0.5, 2.0], "random-scale range of the training augmentation (x base_size)",
           nargs="+", group=_DATA),
    Option("hflip", bool, True, "random horizontal flip in training", group=_DATA),
    Option("ignore_index", int, 255, "label value ignored by the loss and the metrics", group=_DATA),
    # Model
    Option("model", str, "lseg_vitl16_384", "model name registered with mindcv (after import mindcv_lseg)",
           group=_MODEL),
    Option("ckpt_path", str, "", "converted LSeg checkpoint: initialises the whole network (fine-tuning); "
           "for validate/infer the checkpoint to evaluate", group=_MODEL),
    Option("backbone_ckpt", str, "", "converted image-encoder weights (tools/convert.py --part image)", group=_MODEL),
    Option("text_ckpt", str, "", "converted CLIP text-encoder weights (tools/convert.py --part text)", group=_MODEL),
    Option("impl", str, "auto", "layer implementations: native (MindSpore/mindcv cells, the fast path on Ascend/GPU), "
           "lean (CPU workarounds), auto (lean on CPU, native on Ascend/GPU)", choices=("auto", "native", "lean"),
           group=_MODEL),
    Option("amp_level", str, "O0", "mixed precision of the image branch, mindcv's levels: O0 float32, O1 Dense/Conv "
           "in float16, O2 float16 except the black list (BatchNorm, LayerNorm, ...), O3 float16; the text tower, "
           "L2 norms, logits and loss stay float32", choices=("O0", "O1", "O2", "O3"), group=_MODEL),
    # Checkpoints
    Option("ckpt_save_dir", str, "./ckpt", "directory for checkpoints, logs, metrics and the resolved config",
           group=_CKPT),
    Option("ckpt_save_interval", int, 1, "save a periodic checkpoint every N epochs", min_value=1, group=_CKPT),
    Option("keep_checkpoint_max", int, 5, "keep only the last K periodic checkpoints", min_value=1, group=_CKPT),
    Option("save_best", bool, True, "also keep the best checkpoint by validation mIoU (best.ckpt)", group=_CKPT),
    Option("resume", str, "", "resume training: a checkpoint path, or 'auto' for the latest in ckpt_save_dir",
           group=_CKPT),
    # Optimizer
    Option("opt", str, "momentum", "optimizer (momentum = SGD with momentum, as in the paper)",
           choices=("momentum", "sgd", "adamw"), group=_OPT),
    Option("lr", float, 0.004, "base learning rate (encoder group)", min_value=0.0, group=_OPT),
    Option("lr_ref_batch_size", int, 0, "if > 0, the effective lr is lr * batch_size / lr_ref_batch_size "
           "(paper: lr 0.004 per 16 -> 2.5e-4 at batch 1)", min_value=0, group=_OPT),
    Option("decoder_lr_mult", float, 10.0, "lr multiplier of the decoder group (scratch.*)", min_value=0.0,
           group=_OPT),
    Option("momentum", float, 0.9, "momentum (momentum/sgd) or beta1 (adamw)", min_value=0.0, group=_OPT),
    Option("weight_decay", float, 1e-4, "weight decay", min_value=0.0, group=_OPT),
    Option("use_nesterov", bool, False, "Nesterov momentum", group=_OPT),
    Option("filter_bias_and_bn", bool, False, "exclude biases and norm parameters from weight decay "
           "(the paper decays all parameters)", group=_OPT),
    Option("grad_accumulation", int, 1, "accumulate gradients over N steps per optimizer update", min_value=1,
           group=_OPT),
    Option("clip_grad", bool, False, "clip gradients by global norm", group=_OPT),
    Option("clip_value", float, 15.0, "global-norm clip value", min_value=0.0, group=_OPT),
    Option("loss_scale_type", str, "fixed", "loss scaling (mindcv's names): fixed, dynamic (halve on overflow and "
           "skip the update, double after 2000 good steps) or auto (dynamic for amp_level O2, else fixed)",
           choices=("fixed", "dynamic", "auto"), group=_OPT),
    Option("loss_scale", float, 1.0, "loss scale (fixed) or initial loss scale (dynamic)", min_value=1.0, group=_OPT),
    # Scheduler
    Option("scheduler", str, "polynomial_decay", "lr schedule (mindcv.scheduler.create_scheduler)",
           choices=("polynomial_decay", "constant", "cosine_decay", "exponential_decay", "step_decay"),
           group=_SCHED),
    Option("epoch_size", int, 240, "number of training epochs", min_value=1, group=_SCHED),
    Option("warmup_epochs", int, 0, "linear warm-up epochs", min_value=0, group=_SCHED),
    Option("warmup_factor", float, 0.0, "lr factor at the start of warm-up", min_value=0.0, group=_SCHED),
    Option("decay_rate", float, 0.9, "poly power (polynomial_decay) / decay factor", min_value=0.0, group=_SCHED),
    Option("decay_epochs", int, 10, "decay period for step/cosine schedules", min_value=1, group=_SCHED),
    Option("min_lr", float, 0.0, "lower lr bound (cosine_decay)", min_value=0.0, group=_SCHED),
    Option("lr_epoch_stair", bool, False, "update the lr once per epoch (as the reference) instead of every "
           "optimizer step", group=_SCHED),
    # Loss
    Option("loss", str, "CE", "loss: pixel-wise cross-entropy with ignore_index", choices=("CE",), group=_LOSS),
    # Evaluation
    Option("val_while_train", bool, True, "validate during training", group=_EVAL),
    Option("val_interval", int, 1, "validate every N epochs", min_value=1, group=_EVAL),
    Option("val_mode", str, "original", "validation-set transform: original size (whole image) or the reference's "
           "short side -> crop_size + centre crop (fixed shape: one graph compile)",
           choices=("original", "resize_crop"), group=_EVAL),
    Option("eval_mode", str, "whole", "whole image, sliding window, or the reference multi-scale + flip evaluator",
           choices=("whole", "slide", "ms_flip"), group=_EVAL),
    Option("eval_scales", float, None, "scales around base_size (null: native size for slide, the reference "
           "list for ms_flip)", nargs="+", optional=True, group=_EVAL),
    Option("eval_flip", bool, None, "add horizontally flipped logits (null: on for ms_flip only)", optional=True,
           group=_EVAL),
    Option("eval_stride", int, None, "sliding-window stride (null: crop_size * 2/3)", optional=True, min_value=1,
           group=_EVAL),
]
# fmt: on

_TYPE_NAMES = {bool: "bool", int: "int", float: "float", str: "str"}


def _check_value(opt: Option, value: Any, where: str) -> Any:
    """Check/normalise one value of ``opt`` (YAML or CLI). Returns the value (ints promoted to float for floats)."""

    def bad(msg):
        return ConfigError(f"config key '{opt.name}'{where}: {msg}")

    def one(v):
        if v is None:
            if opt.optional:
                return None
            raise bad("must not be null")
        t = opt.type
        if t is bool:
            if not isinstance(v, bool):
                raise bad(f"expected bool (true/false), got {type(v).__name__} {v!r}")
        elif t is int:
            if isinstance(v, bool) or not isinstance(v, int):
                raise bad(f"expected int, got {type(v).__name__} {v!r}")
        elif t is float:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise bad(f"expected float, got {type(v).__name__} {v!r}")
            v = float(v)
        elif t is str:
            if not isinstance(v, str):
                raise bad(f"expected str, got {type(v).__name__} {v!r}")
        if opt.choices is not None and v not in opt.choices:
            raise bad(f"{v!r} is not one of {list(opt.choices)}")
        if opt.min_value is not None and v is not None and v < opt.min_value:
            raise bad(f"{v!r} is below the minimum {opt.min_value}")
        return v

    if opt.nargs in ("+", "*"):
        if opt.optional and (value is None or (isinstance(value, list) and value == [None])):
            return None  # YAML null or CLI "--key none"
        if not isinstance(value, (list, tuple)):
            raise bad(f"expected a list of {_TYPE_NAMES[opt.type]}, got {type(value).__name__} {value!r}")
        if opt.nargs == "+" and len(value) == 0:
            raise bad("expected a non-empty list")
        if any(v is None for v in value):
            raise bad(f"list items must not be null, got {value!r}")
        return [one(v) for v in value]
    return one(value)


def _nullable(conv):
    """CLI converter that also accepts ``none``/``null`` (for optional keys)."""

    def f(v):
        if isinstance(v, str) and v.lower() in ("none", "null"):
            return None
        return conv(v)

    f.__name__ = getattr(conv, "__name__", "value")
    return f


class _Parser(argparse.ArgumentParser):
    """ArgumentParser that raises :class:`ConfigError` instead of exiting, and knows its :class:`Option` table."""

    def __init__(self, *args, options: Sequence[Option] = (), **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)
        self.options = {o.name: o for o in options}

    def error(self, message):
        raise ConfigError(message)


def build_parser(description: str = "LSeg training", extra_options: Sequence[Option] = ()) -> argparse.ArgumentParser:
    """Build the argument parser holding every key of :data:`OPTIONS` plus ``extra_options``.

    Args:
        description: text shown by ``--help``.
        extra_options: tool-specific keys (also accepted in that tool's YAML).

    Returns:
        An ``argparse.ArgumentParser`` whose ``error`` raises :class:`ConfigError`.
    """
    options = list(OPTIONS) + list(extra_options)
    names = [o.name for o in options]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"duplicate config keys: {sorted(dup)}")
    parser = _Parser(description=description, options=options)
    parser.add_argument("-c", "--config", type=str, default="", help="YAML config file with default values")
    groups = {}
    for o in options:
        g = groups.get(o.group) or parser.add_argument_group(f"{o.group} parameters")
        groups[o.group] = g
        kw = dict(default=o.default, help=f"{o.help} (default: {o.default!r})")
        conv = str2bool if o.type is bool else o.type
        if o.optional:
            conv = _nullable(conv)
        if o.type is bool:
            kw.update(type=conv, nargs="?", const=True, metavar="BOOL")
        else:
            kw.update(type=conv, metavar=_TYPE_NAMES[o.type].upper())
            if o.nargs:
                kw["nargs"] = o.nargs
        g.add_argument(f"--{o.name}", **kw)
    return parser


def check_config_dict(cfg: Any, parser: Optional[argparse.ArgumentParser] = None, source: str = "config") -> Dict:
    """Check a flat config mapping against the option table.

    Args:
        cfg: mapping ``key -> value`` (e.g. loaded from YAML).
        parser: parser from :func:`build_parser` (its extra options are accepted too).
        source: where the mapping came from (a file path), used in error messages.

    Returns:
        A new dict with normalised values.

    Raises:
        ConfigError: if ``cfg`` is not a mapping, has unknown keys, or a value has the wrong type/choice.
    """
    parser = parser or build_parser()
    options = parser.options
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{source}: expected a flat mapping 'key: value', got {type(cfg).__name__}")
    out = {}
    for key, value in cfg.items():
        if key == "config":
            continue
        if key not in options:
            close = difflib.get_close_matches(str(key), list(options), n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"{source}: unknown config key '{key}'{hint}")
        out[key] = _check_value(options[key], value, f" in {source}")
    return out


def load_config(path: str, parser: Optional[argparse.ArgumentParser] = None) -> Dict:
    """Read and check a flat YAML config file. Raises :class:`ConfigError` with the file name on any problem."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path!r} (pass an existing YAML file with -c)")
    try:
        with open(path, "r", encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    return check_config_dict(cfg, parser, source=path)


def parse_args(argv: Optional[Sequence[str]] = None, parser: Optional[argparse.ArgumentParser] = None):
    """Two-stage parse: ``-c FILE.yaml`` sets defaults, the other flags override them.

    Args:
        argv: argument list (default ``sys.argv[1:]``).
        parser: parser from :func:`build_parser` (default: the training parser).

    Returns:
        argparse.Namespace with every key; ``args.config`` is the YAML path or ``""``.

    Raises:
        ConfigError: unknown flag/key, wrong type, value outside its choices, unreadable YAML.
    """
    parser = parser or build_parser()
    pre = _Parser(add_help=False)
    pre.add_argument("-c", "--config", type=str, default="")
    pre_args, _ = pre.parse_known_args(argv)
    if pre_args.config:
        cfg = load_config(pre_args.config, parser)
        parser.set_defaults(**cfg)
    args = parser.parse_args(argv)
    # argparse does not check defaults (i.e. YAML values) against choices/minimums; CLI values need it too.
    for name, opt in parser.options.items():
        setattr(args, name, _check_value(opt, getattr(args, name), " (command line or default)"))
    return args


def config_to_dict(args) -> Dict:
    """Namespace (or dict) -> plain dict of YAML-serialisable values, keys in option-table order."""
    d = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def save_config(args, path: str, rank: int = 0) -> Optional[str]:
    """Write the resolved config as flat YAML, atomically (temp file + os.replace). Only rank 0 writes.

    Args:
        args: Namespace from :func:`parse_args` (or a dict).
        path: destination ``.yaml`` path; its directory is created.
        rank: process rank; other ranks do nothing and return None.

    Returns:
        The path written, or None on non-zero ranks.
    """
    if rank != 0:
        return None
    d = config_to_dict(args)
    d.pop("config", None)
    return atomic_write_text(path, yaml.safe_dump(d, sort_keys=False, default_flow_style=None))
