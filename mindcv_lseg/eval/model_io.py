"""Create an LSeg network for evaluation / inference and load a checkpoint with specific errors."""

import os
from typing import Optional

__all__ = ["ModelLoadError", "create_eval_model", "setup_context"]


class ModelLoadError(ValueError):
    """Unknown model name, missing checkpoint, or a checkpoint that does not fit the model (message says which)."""


def _short(msg: str, max_lines: int = 8) -> str:
    lines = str(msg).splitlines()
    return "\n".join(
        lines[:max_lines] + ([f"  ... ({len(lines) - max_lines} more lines)"] if len(lines) > max_lines else [])
    )


def create_eval_model(
    name: str, ckpt_path: Optional[str] = None, require_ckpt: bool = True, impl: str = "auto", amp_level: str = "O0"
):
    """``mindcv.create_model(name, impl=impl)`` + strict checkpoint load + mixed precision, in eval mode.

    Args:
        name: registered model name (``lseg_vitl16_384``, ``lseg_vitb32``, ``lseg_tiny_test``).
        ckpt_path: MindSpore checkpoint of this variant (e.g. from ``tools/convert.py`` or ``tools/train.py``).
        require_ckpt: raise if no checkpoint is given (random weights are useless outside tests).
        impl: "auto", "native" or "lean" (:mod:`mindcv_lseg.models.ops_impl`).
        amp_level: "O0".."O3" (:func:`mindcv_lseg.models.amp.auto_mixed_precision`).

    Raises:
        ModelLoadError: with a message naming the model / file and what to do.
    """
    import mindcv

    import mindcv_lseg.models  # noqa: F401  (registers the lseg_* models)

    from ..checkpoint import CheckpointError, load_into_net

    lseg_models = [m for m in mindcv.list_models("lseg_*")]
    if not mindcv.is_model(name):
        raise ModelLoadError(f"unknown model {name!r}; LSeg models: {', '.join(lseg_models)}")
    if not ckpt_path:
        if require_ckpt:
            raise ModelLoadError(
                f"no checkpoint given for {name}: pass --ckpt_path FILE.ckpt (convert the official "
                f"weights with tools/convert.py or train one with tools/train.py)"
            )
    elif not os.path.isfile(ckpt_path):
        raise ModelLoadError(f"checkpoint not found: {ckpt_path} (check the path given to --ckpt_path)")
    net = mindcv.create_model(name, impl=impl)
    if ckpt_path:
        hint = f"Is it a checkpoint of another variant? Pass the matching --model ({', '.join(lseg_models)})."
        try:  # training state in the file (epoch, optimizer moments, config) is ignored
            load_into_net(net, ckpt_path, strict=True)
        except CheckpointError as e:  # unreadable file, or parameters missing / extra / with other shapes
            raise ModelLoadError(f"cannot load {ckpt_path} into {name}: {_short(e)}\n{hint}") from None
    from ..models.amp import auto_mixed_precision

    auto_mixed_precision(net, amp_level)
    net.set_train(False)
    return net


def setup_context(mode: int = 0, device_target: str = "CPU") -> None:
    """``mindspore.set_context(mode=...)`` + ``set_device``; tolerates a runtime that is already initialised
    (tools called in-process after other MindSpore work keep the existing device)."""
    import mindspore as ms

    ms.set_context(mode=mode)
    try:
        ms.set_device(device_target)
    except RuntimeError:
        pass
