"""Flat YAML + command-line configuration for LSeg training, validation and inference.

mindcv's own ``config.py`` is not part of its wheel and rejects keys it does not know, so the plug-in has its own,
written in the same style and with mindcv 0.3.0's key names wherever the meaning is the same (``mode``, ``model``,
``dataset``, ``data_dir``, ``batch_size``, ``hflip`` (a probability), ``drop_rate``, ``drop_path_rate``,
``epoch_size``, ``opt``, ``lr``, ``momentum``, ``weight_decay``, ``weight_decay_filter``,
``gradient_accumulation_steps``, ``scheduler``, ``warmup_epochs``, ``ckpt_save_dir``, ``ckpt_path``,
``keep_checkpoint_max``, ``seed``, ``distribute``, ``num_parallel_workers``, ``val_interval``, ...), plus
segmentation keys (``crop_size``, ``base_size``, ``ignore_index``, ``label_set``, ``decoder_lr_mult``,
``eval_mode``, ...).

Every key is one :class:`Option` in :data:`OPTIONS` (the only table): type, default, allowed values or range, the
help-section, and which tools (``train``, ``validate``, ``infer``) show it as a flag. A YAML file given with ``-c``
may hold every key of the table (a training config also serves ``validate.py``); only the tool's own keys are
command-line flags.

Two-stage parsing, as in mindcv:

1. ``-c/--config FILE.yaml`` is parsed first; the YAML mapping is checked (unknown or duplicate keys, wrong types,
   values outside their range, a file that is not UTF-8 are rejected with the key's name and the file) and becomes
   the parser's defaults (so ``--help`` shows the file's values);
2. the remaining command-line flags override it (``--lr 0.01``, lists as ``--eval_scales 0.75 1.0 1.25``,
   booleans as ``--distribute`` / ``--distribute false``).

This module imports neither MindSpore nor mindcv: the tools parse (and answer ``--help``) before the heavy imports.

Public API (used by ``tools/train.py``, ``tools/validate.py`` and ``tools/infer.py``)::

    from mindcv_lseg.engine.config import parse_args, save_config, load_config, ConfigError

    args = parse_args(["-c", "configs/lseg_toy.yaml", "--lr", "0.01"])   # -> argparse.Namespace
    save_config(args, "ckpt/config.yaml")      # atomic YAML dump of the resolved config (rank 0 only)
    cfg = load_config("ckpt/config.yaml")      # checked dict (same rules as -c)

    # a tool's own parser: its flags, its extra keys listed first, examples in the epilog
    parser = build_parser("LSeg inference", tool="infer", extra_options=[
        Option("labels", str, "", "comma-separated labels", group="Inference")], epilog="examples: ...")
    args = parse_args(argv, parser=parser)

Every error (unknown key, wrong type, value not in the allowed choices or range, malformed YAML, missing file)
raises :class:`ConfigError`, whose message names the key and, for YAML, the file. CLIs catch it and exit with
status 2.
"""

import argparse
import difflib
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

__all__ = [
    "ConfigError",
    "Option",
    "OPTIONS",
    "TOOLS",
    "RENAMED_KEYS",
    "build_parser",
    "parse_args",
    "check_config_dict",
    "load_config",
    "save_config",
    "config_to_dict",
]

TOOLS = ("train", "validate", "infer")
_TRAIN, _TRAIN_VAL = ("train",), ("train", "validate")

# keys of earlier versions of this project -> mindcv 0.3.0's names (an old key gets a message naming the new one)
RENAMED_KEYS = {
    "grad_accumulation": "gradient_accumulation_steps",
    "filter_bias_and_bn": "weight_decay_filter (disable | norm_and_bias)",
}


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
        min_value, max_value: inclusive bounds of a number (of each list item).
        above: exclusive lower bound (the value must be greater).
        multiple_of: an int must be a multiple of this (e.g. 32 for network input sizes).
        length: exact number of list items.
        tools: the tools that take this key as a command-line flag (all keys are accepted in YAML).
    """

    name: str
    type: type
    default: Any
    help: str
    choices: Optional[Sequence] = None
    nargs: Optional[str] = None
    optional: bool = False
    group: str = "Other"
    min_value: Optional[float] = None
    max_value: Optional[float] = None
    above: Optional[float] = None
    multiple_of: Optional[int] = None
    length: Optional[int] = None
    tools: Tuple[str, ...] = TOOLS


_SYS, _DATA, _AUG, _MODEL, _CKPT, _OPT, _SCHED, _LOSS, _VAL, _EVAL = (
    "System",
    "Dataset",
    "Augmentation",
    "Model",
    "Checkpoint",
    "Optimizer",
    "Scheduler",
    "Loss",
    "Validation",
    "Evaluation",
)

# fmt: off
OPTIONS: List[Option] = [
    # System
    Option("mode", int, 0, "0 = GRAPH_MODE (compiled, several times faster on CPU), 1 = PYNATIVE_MODE", choices=(0, 1),
           group=_SYS),
    Option("device_target", str, "CPU", "device", choices=("CPU", "GPU", "Ascend"), group=_SYS),
    Option("distribute", bool, False, "data-parallel run under msrun (one process per device)", group=_SYS,
           tools=_TRAIN_VAL),
    Option("seed", int, 42, "seed for python/numpy/MindSpore RNGs and the data order", group=_SYS, tools=_TRAIN),
    Option("log_interval", int, 10, "write a text-log line every N steps", min_value=1, group=_SYS, tools=_TRAIN),
    Option("progress_bar", bool, True, "show a tqdm progress bar (rank 0)", group=_SYS, tools=_TRAIN_VAL),
    Option("param_digest_dir", str, "", "if set, every rank writes a digest of its final parameters here "
           "(to check data-parallel replicas agree)", group=_SYS, tools=_TRAIN),
    # Dataset
    Option("dataset", str, "toy", "dataset type (see mindcv_lseg.data.create_seg_dataset); the zero-shot "
           "benchmarks fss1000 / pascal5i / coco20i are for validate.py only",
           choices=("toy", "ade20k", "folder", "fss1000", "pascal5i", "coco20i"), group=_DATA, tools=_TRAIN_VAL),
    Option("data_dir", str, "./data", "dataset root directory", group=_DATA, tools=_TRAIN_VAL),
    Option("train_split", str, "train", "training split name", group=_DATA, tools=_TRAIN),
    Option("val_split", str, "val", "validation split name", group=_DATA, tools=_TRAIN_VAL),
    Option("label_set", str, "", "label set: built-in name (ade20k_150, ...), a text file with one label per line, "
           "or 'a, b, c'; empty = the dataset's own labels", group=_DATA, tools=_TRAIN_VAL),
    Option("num_parallel_workers", int, 1, "data-loading workers", min_value=1, group=_DATA, tools=_TRAIN),
    Option("shuffle", bool, True, "shuffle the training set every epoch (seeded)", group=_DATA, tools=_TRAIN),
    Option("num_samples", int, None, "use only the first N samples of each split (debug)", optional=True,
           min_value=1, group=_DATA, tools=_TRAIN_VAL),
    Option("batch_size", int, 1, "per-device batch size", min_value=1, group=_DATA, tools=_TRAIN),
    Option("drop_remainder", bool, True, "drop the last incomplete training batch", group=_DATA, tools=_TRAIN),
    Option("ignore_index", int, 255, "label value ignored by the loss and the metrics", group=_DATA,
           tools=_TRAIN_VAL),
    # Augmentation / sizes
    Option("crop_size", int, 480, "training crop = network input size; also the window of slide/ms_flip "
           "evaluation (pixels, a multiple of 32)", min_value=32, multiple_of=32, group=_AUG),
    Option("base_size", int, 520, "base size: random-scale augmentation (long side in scale_range x base) and "
           "ms_flip evaluation scales", min_value=1, group=_AUG),
    Option("scale_range", float, [0.5, 2.0], "random-scale range of the training augmentation, 'lo hi' (x base_size)",
           nargs="+", above=0.0, length=2, group=_AUG, tools=_TRAIN),
    Option("hflip", float, 0.5, "horizontal-flip probability in training (mindcv's hflip)", min_value=0.0,
           max_value=1.0, group=_AUG, tools=_TRAIN),
    # Model
    Option("model", str, "lseg_vitl16_384", "model name registered with mindcv (after import mindcv_lseg)",
           group=_MODEL),
    Option("ckpt_path", str, "", "converted LSeg checkpoint: for training it initialises the whole network "
           "(fine-tuning); for validate/infer the checkpoint to evaluate", group=_MODEL),
    Option("backbone_ckpt", str, "", "converted image-encoder weights (tools/convert.py --part image)", group=_MODEL,
           tools=_TRAIN),
    Option("text_ckpt", str, "", "converted CLIP text-encoder weights (tools/convert.py --part text)", group=_MODEL,
           tools=_TRAIN),
    Option("drop_rate", float, None, "dropout rate of the ViT image encoder (mindcv's drop_rate; null = 0)",
           optional=True, min_value=0.0, max_value=0.99, group=_MODEL, tools=_TRAIN),
    Option("drop_path_rate", float, None, "stochastic-depth rate of the ViT image encoder (mindcv's drop_path_rate; "
           "null = 0)", optional=True, min_value=0.0, max_value=0.99, group=_MODEL, tools=_TRAIN),
    Option("recompute", bool, False, "recompute the ViT blocks' activations in the backward pass instead of keeping "
           "them (MindSpore's Cell.recompute): less training memory, a slower step, same gradients", group=_MODEL,
           tools=_TRAIN),
    Option("impl", str, "auto", "layer implementations: native (MindSpore/mindcv cells, the fast path on Ascend/GPU), "
           "lean (CPU workarounds), auto (lean on CPU, native on Ascend/GPU)", choices=("auto", "native", "lean"),
           group=_MODEL),
    Option("amp_level", str, "O0", "mixed precision of the image branch, mindcv's levels: O0 float32, O1 Dense/Conv "
           "in float16, O2 float16 except the black list (BatchNorm, LayerNorm, ...), O3 float16; the text tower, "
           "L2 norms, logits and loss stay float32", choices=("O0", "O1", "O2", "O3"), group=_MODEL),
    # Checkpoints
    Option("ckpt_save_dir", str, "./ckpt", "directory for checkpoints, logs, metrics and the resolved config",
           group=_CKPT, tools=_TRAIN_VAL),
    Option("ckpt_save_interval", int, 1, "save a periodic checkpoint every N epochs", min_value=1, group=_CKPT,
           tools=_TRAIN),
    Option("keep_checkpoint_max", int, 5, "keep only the last K periodic checkpoints", min_value=1, group=_CKPT,
           tools=_TRAIN),
    Option("save_best", bool, True, "also keep the best checkpoint by validation mIoU (best.ckpt)", group=_CKPT,
           tools=_TRAIN),
    Option("resume", str, "", "resume training: a checkpoint path, or 'auto' for the latest in ckpt_save_dir",
           group=_CKPT, tools=_TRAIN),
    Option("overwrite", bool, False, "start over in a ckpt_save_dir that holds another run's results, deleting "
           "them (without it such a folder is refused; see --resume auto)", group=_CKPT, tools=_TRAIN),
    # Optimizer
    Option("opt", str, "momentum", "optimizer (momentum = SGD with momentum, as in the paper)",
           choices=("momentum", "sgd", "adamw"), group=_OPT, tools=_TRAIN),
    Option("lr", float, 0.004, "base learning rate (encoder group)", min_value=0.0, group=_OPT, tools=_TRAIN),
    Option("lr_ref_batch_size", int, 0, "if > 0, the effective lr is lr * batch_size / lr_ref_batch_size "
           "(paper: lr 0.004 per 16 -> 2.5e-4 at batch 1)", min_value=0, group=_OPT, tools=_TRAIN),
    Option("decoder_lr_mult", float, 10.0, "lr multiplier of the decoder group (scratch.*)", min_value=0.0,
           group=_OPT, tools=_TRAIN),
    Option("momentum", float, 0.9, "momentum (momentum/sgd) or beta1 (adamw)", min_value=0.0, max_value=1.0,
           group=_OPT, tools=_TRAIN),
    Option("weight_decay", float, 1e-4, "weight decay", min_value=0.0, group=_OPT, tools=_TRAIN),
    Option("weight_decay_filter", str, "disable", "parameters without weight decay: disable = none (the paper "
           "decays all parameters), norm_and_bias = biases and norm parameters (mindcv's names)",
           choices=("disable", "norm_and_bias"), group=_OPT, tools=_TRAIN),
    Option("use_nesterov", bool, False, "Nesterov momentum", group=_OPT, tools=_TRAIN),
    Option("gradient_accumulation_steps", int, 1, "accumulate the gradients of N batches per optimizer update",
           min_value=1, group=_OPT, tools=_TRAIN),
    Option("clip_grad", bool, False, "clip gradients by global norm", group=_OPT, tools=_TRAIN),
    Option("clip_value", float, 15.0, "global-norm clip value", above=0.0, group=_OPT, tools=_TRAIN),
    Option("loss_scale_type", str, "fixed", "loss scaling (mindcv's names): fixed, dynamic (halve on overflow and "
           "skip the update, double after 2000 good steps) or auto (dynamic for amp_level O2, else fixed)",
           choices=("fixed", "dynamic", "auto"), group=_OPT, tools=_TRAIN),
    Option("loss_scale", float, 1.0, "loss scale (fixed) or initial loss scale (dynamic)", min_value=1.0, group=_OPT,
           tools=_TRAIN),
    # Scheduler
    Option("scheduler", str, "polynomial_decay", "lr schedule (mindcv.scheduler.create_scheduler)",
           choices=("polynomial_decay", "constant", "cosine_decay", "exponential_decay", "step_decay"),
           group=_SCHED, tools=_TRAIN),
    Option("epoch_size", int, 240, "number of training epochs", min_value=1, group=_SCHED, tools=_TRAIN),
    Option("warmup_epochs", int, 0, "linear warm-up epochs", min_value=0, group=_SCHED, tools=_TRAIN),
    Option("warmup_factor", float, 0.0, "lr factor at the start of warm-up", min_value=0.0, max_value=1.0,
           group=_SCHED, tools=_TRAIN),
    Option("decay_rate", float, 0.9, "poly power (polynomial_decay) / decay factor (exponential, step)",
           min_value=0.0, group=_SCHED, tools=_TRAIN),
    Option("decay_epochs", int, None, "cosine_decay: epochs to reach min_lr (null: epoch_size - warmup_epochs); "
           "step_decay: epochs per step (required); unused by the other schedules", optional=True, min_value=1,
           group=_SCHED, tools=_TRAIN),
    Option("min_lr", float, 0.0, "lower lr bound (cosine_decay)", min_value=0.0, group=_SCHED, tools=_TRAIN),
    Option("lr_epoch_stair", bool, False, "update the lr once per epoch (as the reference) instead of every "
           "optimizer step", group=_SCHED, tools=_TRAIN),
    # Loss
    Option("loss", str, "CE", "pixel-wise cross-entropy with ignore_index", choices=("CE",), group=_LOSS,
           tools=_TRAIN),
    # Validation during training
    Option("val_while_train", bool, True, "validate during training", group=_VAL, tools=_TRAIN),
    Option("val_interval", int, 1, "validate every N epochs", min_value=1, group=_VAL, tools=_TRAIN),
    Option("val_mode", str, "original", "validation-set transform: original size (whole image) or the reference's "
           "short side -> crop_size + centre crop (fixed shape: one graph compile)",
           choices=("original", "resize_crop"), group=_VAL, tools=_TRAIN_VAL),
    # Evaluation (inference core)
    Option("eval_mode", str, "whole", "whole image, sliding window, or the reference multi-scale + flip evaluator",
           choices=("whole", "slide", "ms_flip"), group=_EVAL),
    Option("eval_scales", float, None, "scales around base_size (null: native size for slide, the reference "
           "list for ms_flip)", nargs="+", optional=True, above=0.0, max_value=8.0, group=_EVAL),
    Option("eval_flip", bool, None, "add horizontally flipped logits (null: on for ms_flip only)", optional=True,
           group=_EVAL),
    Option("eval_stride", int, None, "sliding-window stride (null: crop_size * 2/3)", optional=True, min_value=1,
           group=_EVAL),
]
# fmt: on

_TYPE_NAMES = {bool: "bool", int: "int", float: "float", str: "str"}


def _range_text(opt: Option) -> str:
    """``[0, 1]``, ``> 0``, ``>= 1``, ``multiple of 32`` ... for help texts and messages ('' if unbounded)."""
    parts = []
    if opt.min_value is not None and opt.max_value is not None:
        parts.append(f"{opt.min_value:g}..{opt.max_value:g}")
    elif opt.min_value is not None:
        parts.append(f">= {opt.min_value:g}")
    elif opt.max_value is not None:
        parts.append(f"<= {opt.max_value:g}")
    if opt.above is not None:
        parts.insert(0, f"> {opt.above:g}")
    if opt.multiple_of:
        parts.append(f"multiple of {opt.multiple_of}")
    return ", ".join(parts)


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
            if isinstance(v, bool):
                raise bad(f"expected a number ({opt.help}), got {str(v).lower()}")
            if not isinstance(v, (int, float)):
                raise bad(f"expected float, got {type(v).__name__} {v!r}")
            v = float(v)
            if not math.isfinite(v):
                raise bad(f"must be a finite number, got {v!r}")
        elif t is str:
            if not isinstance(v, str):
                raise bad(f"expected str, got {type(v).__name__} {v!r}")
        if opt.choices is not None and v not in opt.choices:
            raise bad(f"{v!r} is not one of {list(opt.choices)}")
        out_of_range = (
            (opt.min_value is not None and v < opt.min_value)
            or (opt.max_value is not None and v > opt.max_value)
            or (opt.above is not None and v <= opt.above)
        )
        if out_of_range:
            raise bad(f"{v!r} is out of range (allowed: {_range_text(opt)})")
        if opt.multiple_of and v % opt.multiple_of:
            lo = max(opt.multiple_of, v // opt.multiple_of * opt.multiple_of)
            raise bad(
                f"{v!r} is not a multiple of {opt.multiple_of} (the network's input size must be); "
                f"use e.g. {lo} or {lo + opt.multiple_of}"
            )
        return v

    if opt.nargs in ("+", "*"):
        if opt.optional and (value is None or (isinstance(value, list) and value == [None])):
            return None  # YAML null or CLI "--key none"
        if not isinstance(value, (list, tuple)):
            raise bad(f"expected a list of {_TYPE_NAMES[opt.type]}, got {type(value).__name__} {value!r}")
        if opt.nargs == "+" and len(value) == 0:
            raise bad("expected a non-empty list")
        if opt.length is not None and len(value) != opt.length:
            raise bad(f"expected {opt.length} values, got {len(value)}: {list(value)!r}")
        if any(v is None for v in value):
            raise bad(f"list items must not be null, got {value!r}")
        out = [one(v) for v in value]
        if opt.length == 2 and out[0] > out[1]:
            raise bad(f"expected 'low high' with low <= high, got {out!r}")
        return out
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
    """ArgumentParser that raises :class:`ConfigError` instead of exiting, and knows its :class:`Option` table.

    ``options`` are all keys accepted in YAML (also those that are not this tool's flags)."""

    def __init__(self, *args, options: Sequence[Option] = (), **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)
        self.options = {o.name: o for o in options}

    def error(self, message):
        for old, new in RENAMED_KEYS.items():
            if f"--{old}" in message:
                message += f" (--{old} is now --{new}, as in mindcv)"
        raise ConfigError(message)


def _show(value) -> str:
    """A default as it would be written in YAML (``''``, ``null``, ``true``, ``[0.5, 2.0]``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == "":
        return "''"
    return str(value)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description/epilog layout (examples), gives option help more room, shows defaults as YAML."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=36, width=118)

    def _expand_help(self, action):
        return self._get_help_string(action).replace("%(default)s", _show(action.default)).replace("%%", "%")


def _metavar(o: Option) -> str:
    if o.type is bool:
        return "BOOL"
    if o.choices is not None:
        return "{" + ",".join(str(c) for c in o.choices) + "}"
    return _TYPE_NAMES[o.type].upper()


def _help_text(o: Option) -> str:
    extra = [_range_text(o)] if _range_text(o) else []
    if o.optional:
        extra.append("null allowed")
    text = o.help + (f" [{'; '.join(extra)}]" if extra else "")
    return text.replace("%", "%%") + " (default: %(default)s)"


def build_parser(
    description: str = "LSeg training",
    extra_options: Sequence[Option] = (),
    tool: str = "train",
    epilog: Optional[str] = None,
    prog: Optional[str] = None,
) -> argparse.ArgumentParser:
    """Build the argument parser of one tool.

    Args:
        description: text shown by ``--help``.
        extra_options: the tool's own keys (flags listed first in ``--help``, also accepted in that tool's YAML).
        tool: ``"train"``, ``"validate"`` or ``"infer"``: which keys of :data:`OPTIONS` are command-line flags.
            YAML files may hold every key of the table.
        epilog: text after the options (examples).
        prog: program name in the usage line.

    Returns:
        An ``argparse.ArgumentParser`` whose ``error`` raises :class:`ConfigError`.
    """
    if tool not in TOOLS:
        raise ValueError(f"tool must be one of {TOOLS}, got {tool!r}")
    options = list(extra_options) + list(OPTIONS)
    names = [o.name for o in options]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"duplicate config keys: {sorted(dup)}")
    parser = _Parser(
        prog=prog,
        description=description,
        epilog=epilog,
        options=options,
        formatter_class=_HelpFormatter,
        usage="%(prog)s [-h] [-c FILE.yaml] [--KEY VALUE ...]",
    )
    parser.add_argument(
        "-c",
        "--config",
        type=str,
        default="",
        metavar="FILE.yaml",
        help="YAML config file: its values become the defaults shown below; flags override them",
    )
    groups = {}
    hidden = {}
    for o in options:
        if o not in extra_options and tool not in o.tools:
            hidden[o.name] = o.default  # accepted in YAML, present in the namespace, not a flag of this tool
            continue
        g = groups.get(o.group) or parser.add_argument_group(f"{o.group} options")
        groups[o.group] = g
        kw = dict(default=o.default, help=_help_text(o), metavar=_metavar(o))
        conv = str2bool if o.type is bool else o.type
        if o.optional:
            conv = _nullable(conv)
        if o.type is bool:
            kw.update(type=conv, nargs="?", const=True)
        else:
            kw["type"] = conv
            if o.nargs:
                kw["nargs"] = o.nargs
        g.add_argument(f"--{o.name}", **kw)
    parser.set_defaults(**hidden)
    return parser


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"duplicate config key '{key}' (lines {seen[key]} and {line}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def check_config_dict(cfg: Any, parser: Optional[argparse.ArgumentParser] = None, source: str = "config") -> Dict:
    """Check a flat config mapping against the option table.

    Args:
        cfg: mapping ``key -> value`` (e.g. loaded from YAML).
        parser: parser from :func:`build_parser` (its extra options are accepted too).
        source: where the mapping came from (a file path), used in error messages.

    Returns:
        A new dict with normalised values.

    Raises:
        ConfigError: if ``cfg`` is not a mapping, has unknown keys, or a value has the wrong type/choice/range.
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
            if key in RENAMED_KEYS:
                raise ConfigError(f"{source}: config key '{key}' is now '{RENAMED_KEYS[key]}' (mindcv's name)")
            close = difflib.get_close_matches(str(key), list(options), n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"{source}: unknown config key '{key}'{hint}")
        out[key] = _check_value(options[key], value, f" in {source}")
    return out


def load_config(path: str, parser: Optional[argparse.ArgumentParser] = None) -> Dict:
    """Read and check a flat YAML config file. Raises :class:`ConfigError` with the file name on any problem."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path!r} (pass an existing YAML file with -c)")
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: not a UTF-8 text file (byte 0x{data[e.start]:02x} on line {line}); " f"save it as UTF-8"
        ) from None
    try:
        cfg = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    return check_config_dict(cfg, parser, source=path)


def parse_args(argv: Optional[Sequence[str]] = None, parser: Optional[argparse.ArgumentParser] = None):
    """Two-stage parse: ``-c FILE.yaml`` sets defaults, the other flags override them.

    Args:
        argv: argument list (default ``sys.argv[1:]``).
        parser: parser from :func:`build_parser` (default: the training parser).

    Returns:
        argparse.Namespace with every key of the table (and the parser's extra keys); ``args.config`` is the YAML
        path or ``""``.

    Raises:
        ConfigError: unknown flag/key, wrong type, value outside its choices/range, unreadable YAML.
    """
    parser = parser or build_parser()
    pre = _Parser(add_help=False)
    pre.add_argument("-c", "--config", type=str, default="")
    pre_args, _ = pre.parse_known_args(argv)
    if pre_args.config:
        cfg = load_config(pre_args.config, parser)
        parser.set_defaults(**cfg)
    args = parser.parse_args(argv)
    # argparse does not check defaults (i.e. YAML values) against choices/ranges; CLI values need it too.
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
    from ..fileio import atomic_write_text

    if rank != 0:
        return None
    d = config_to_dict(args)
    d.pop("config", None)
    return atomic_write_text(path, yaml.safe_dump(d, sort_keys=False, default_flow_style=None))
