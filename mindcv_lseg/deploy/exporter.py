"""Export an LSeg network as two deployable graphs (MINDIR or ONNX) plus a JSON description.

Written into the output directory ``DIR`` for a model ``NAME``:

* ``NAME_image.mindir|.onnx``: input ``image`` float32 ``[1, 3, H, W]`` normalised as ``(rgb/255 - mean)/std`` ->
  output ``embeddings`` float32 ``[1, E, H/2, W/2]``, L2-normalised per pixel (``LSeg.forward_features``);
* ``NAME_text.mindir|.onnx``: input ``tokens`` int32 ``[N, 77]`` (CLIP BPE ids) -> output ``text_features`` float32
  ``[N, E]``, raw (``LSeg.clip_text``, what ``encode_text`` returns). Both input dimensions are dynamic (``[-1, -1]``
  in the JSON): any number of labels, and the token columns may stop after the last end token (the causal tower gives
  the same features), as ``LSeg.encode_text`` does. MINDIR is exported so; the ONNX graph is exported at ``[N, 77]``
  and rewritten by :mod:`mindcv_lseg.deploy.onnx_optimize` (kept static, and written as ``[N, 77]``, if the ``onnx``
  package is missing or the rewrite does not check out);
* ``NAME_deploy.json``: ``{"model", "file_format", "image": {"file", "input_shape", "output_shape"}, "text": {...},
  "mean", "std", "input_multiple", "logit_scale", "context_length"}`` (a part that was not exported is ``null``; a
  dynamic dimension is -1).

The logits are not part of the graphs: ``logit_scale * <embedding, text / |text|>`` followed by the x2 bilinear
upsampling (``align_corners=True``), as in ``LSeg.construct``; :mod:`mindcv_lseg.deploy.runner` computes them.

The image shape is fixed at export time (``--image_size``): see ``docs/export.md`` for why. The network is
built with ``impl="native"`` (MindSpore's own cells; ``impl="lean"`` is offered for MINDIR run by MindSpore on CPU);
for ONNX the cells that MindSpore 2.10's ONNX exporter cannot
translate are swapped for equivalent formulations first (:mod:`mindcv_lseg.deploy.onnx_compat`).

Every argument is checked before anything is built or written; the graphs are exported into a temporary folder and
moved into ``DIR`` only when all of them exist, the JSON last, so a failed export leaves nothing behind.
"""

import json
import os
import shutil
import tempfile
from typing import Optional, Sequence

__all__ = ["ExportError", "PARTS", "FILE_FORMATS", "ExportSpec", "check_export_args", "export_lseg", "deploy_json_path"]

PARTS = ("image", "text", "both")
FILE_FORMATS = ("MINDIR", "ONNX")
_EXT = {"MINDIR": ".mindir", "ONNX": ".onnx"}


class ExportError(ValueError):
    """An export argument is invalid or the export failed; the message says which and what to do."""


def deploy_json_path(output_dir: str, model: str) -> str:
    return os.path.join(output_dir, f"{model}_deploy.json")


class ExportSpec:
    """Checked export arguments (see :func:`check_export_args`)."""

    def __init__(self, model, ckpt_path, part, file_format, image_size, num_labels, output_dir, impl="native"):
        self.impl = impl
        self.model = model
        self.ckpt_path = ckpt_path
        self.part = part
        self.file_format = file_format
        self.image_size = image_size
        self.num_labels = num_labels
        self.output_dir = output_dir

    @property
    def parts(self):
        return ("image", "text") if self.part == "both" else (self.part,)

    def file_name(self, part: str) -> str:
        return f"{self.model}_{part}{_EXT[self.file_format]}"


def check_export_args(
    model: str,
    ckpt_path: Optional[str],
    part: str = "both",
    file_format: str = "MINDIR",
    image_size: Optional[Sequence[int]] = None,
    num_labels: int = 5,
    output_dir: str = "./export",
    impl: str = "native",
) -> ExportSpec:
    """Validate export arguments without building anything.

    Args:
        model: registered LSeg model name (``lseg_vitl16_384``, ``lseg_vitb32``, ``lseg_tiny_test``).
        ckpt_path: MindSpore checkpoint of that model (required: random weights are useless to deploy).
        part: ``"image"``, ``"text"`` or ``"both"``.
        file_format: ``"MINDIR"`` or ``"ONNX"`` (case-insensitive).
        image_size: ``(H, W)``, positive multiples of 32; ``None`` = the model's ``default_cfg`` input size.
        num_labels: rows of the text graph's ``tokens`` input when it stays static (an ONNX export without the
            ``onnx`` package; the runner pads / chunks label lists to it); a dynamic text graph takes any number.
        output_dir: folder for the files (created; must not be a file).
        impl: ``"native"`` (default: MindSpore's own cells, for Ascend/GPU and for ONNX) or ``"lean"`` (MINDIR only:
            the CPU formulations, for MindSpore on CPU, whose kxk convolution kernels are ~100x slower).

    Raises:
        ExportError: naming the argument, the bad value and what is expected.
    """
    import mindcv

    import mindcv_lseg  # noqa: F401  (registers the lseg_* models)

    from ..models.lseg import INPUT_MULTIPLE

    lseg_models = mindcv.list_models("lseg_*")
    if model not in lseg_models:
        raise ExportError(f"--model: unknown model {model!r}; LSeg models: {', '.join(lseg_models)}")
    if not ckpt_path:
        raise ExportError(
            f"--ckpt_path: no checkpoint given for {model} (convert the official weights with "
            f"tools/convert.py or train one with tools/train.py)"
        )
    if not os.path.isfile(ckpt_path):
        raise ExportError(f"--ckpt_path: checkpoint not found: {ckpt_path}")
    if part not in PARTS:
        raise ExportError(f"--part must be one of {', '.join(PARTS)}, got {part!r}")
    fmt = str(file_format).upper()
    if fmt not in FILE_FORMATS:
        raise ExportError(f"--file_format must be MINDIR or ONNX, got {file_format!r}")
    if image_size is None:
        image_size = tuple(_default_cfg(model)["input_size"][1:])
    try:
        size = tuple(int(s) for s in image_size)
    except (TypeError, ValueError):
        raise ExportError(f"--image_size takes two integers H W, got {image_size!r}") from None
    if (
        len(size) != 2
        or any(s <= 0 or s % INPUT_MULTIPLE for s in size)
        or any(float(s) != float(t) for s, t in zip(size, image_size))
    ):
        raise ExportError(
            f"--image_size takes two positive multiples of {INPUT_MULTIPLE} (H W), got "
            f"{' '.join(str(s) for s in image_size)}"
        )
    if isinstance(num_labels, bool) or int(num_labels) != num_labels or int(num_labels) < 1:
        raise ExportError(f"--num_labels must be a positive integer, got {num_labels!r}")
    if impl not in ("native", "lean"):
        raise ExportError(f"--impl must be native or lean, got {impl!r}")
    if impl == "lean" and fmt == "ONNX":
        raise ExportError(
            "--impl lean exports to MINDIR only (its CPU formulations are not ONNX-exportable); "
            "ONNX exports use --impl native"
        )
    if not output_dir:
        raise ExportError("--output_dir: no folder given")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ExportError(f"--output_dir: {output_dir} exists and is not a folder")
    return ExportSpec(model, ckpt_path, part, fmt, size, int(num_labels), output_dir, impl)


def _image_cell(net):
    from mindspore import nn

    class ImageEmbeddings(nn.Cell):
        """``net.forward_features``: image [1, 3, H, W] -> L2-normalised embeddings [1, E, H/2, W/2]."""

        def __init__(self, inner):
            super().__init__(auto_prefix=False)
            self.inner = inner

        def construct(self, image):
            return self.inner.forward_features(image)

    return ImageEmbeddings(net)


def _text_cell(net):
    from mindspore import nn

    class TextFeatures(nn.Cell):
        """``net.clip_text``: tokens int32 [N, 77] -> raw text features [N, E]."""

        def __init__(self, inner):
            super().__init__(auto_prefix=False)
            self.inner = inner

        def construct(self, tokens):
            return self.inner.clip_text(tokens)

    return TextFeatures(net)


def _export_graph(cell, example, path: str, file_format: str, input_name: str, output_name: str) -> str:
    """Export ``cell`` to ``path``; returns the file name to load (MindSpore writes a MINDIR whose parameters exceed
    1 GB as ``PREFIX_graph.mindir`` plus a ``PREFIX_variables/`` folder, e.g. the ViT-L/16 image graph)."""
    import mindspore as ms

    cell.set_train(False)
    if file_format == "MINDIR":
        prefix = path[: -len(".mindir")]
        ms.export(cell, example, file_name=prefix, file_format="MINDIR")
        if not os.path.isfile(path) and os.path.isfile(prefix + "_graph.mindir"):
            path = prefix + "_graph.mindir"
    else:
        ms.onnx.export(cell, example, file_name=path, input_names=[input_name], output_names=[output_name])
    if not os.path.isfile(path):
        raise ExportError(f"MindSpore wrote no {file_format} file for {os.path.basename(path)}")
    return os.path.basename(path)


def export_lseg(spec: ExportSpec, net=None, log=print, onnx_optimize: bool = True) -> dict:
    """Export the graphs of ``spec`` and write ``NAME_deploy.json``. Returns the JSON content.

    Args:
        spec: from :func:`check_export_args`.
        net: an already loaded network (eval mode) to export instead of loading ``spec.ckpt_path``; it is changed in
            place: it stops using the compiled CPU kernels (:func:`~mindcv_lseg.models.ops_impl.without_compiled_kernels`)
            and an ONNX export swaps some of its cells (:func:`~mindcv_lseg.deploy.onnx_compat.make_onnx_exportable`).
        log: progress printer.
        onnx_optimize: rewrite ONNX graphs for ONNX Runtime (:mod:`~mindcv_lseg.deploy.onnx_optimize`: dynamic text
            graph, image-graph rewrites); False keeps MindSpore's graphs as written (for comparisons).
    """
    import numpy as np

    import mindspore as ms

    from ..models.lseg import INPUT_MULTIPLE, LOGIT_SCALE
    from ..models.ops_impl import without_compiled_kernels

    if net is None:
        from ..eval.model_io import ModelLoadError, create_eval_model

        try:
            net = create_eval_model(spec.model, spec.ckpt_path, impl=spec.impl)
        except ModelLoadError as e:
            raise ExportError(str(e)) from None
    without_compiled_kernels(net)  # exported graphs are self-contained: no Custom ops of a local library
    cfg = _default_cfg(spec.model)
    h, w = spec.image_size
    embed_dim, context_length = int(net.embed_dim), int(net.context_length)
    info = {
        "model": spec.model,
        "file_format": spec.file_format,
        "image": None,
        "text": None,
        "mean": [float(v) for v in cfg["mean"]],
        "std": [float(v) for v in cfg["std"]],
        "input_multiple": INPUT_MULTIPLE,
        "logit_scale": float(LOGIT_SCALE),
        "context_length": context_length,
    }
    parent = os.path.dirname(os.path.abspath(spec.output_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".lseg_export_", dir=parent)
    try:
        if spec.file_format == "ONNX":
            from .onnx_compat import make_onnx_exportable

            make_onnx_exportable(net)
        for part in spec.parts:
            path = os.path.join(tmp, spec.file_name(part))
            if part == "image":
                example = ms.Tensor(np.zeros((1, 3, h, w), np.float32))
                cell, names = _image_cell(net), ("image", "embeddings")
                shapes = ([1, 3, h, w], [1, embed_dim, h // 2, w // 2])
            elif spec.file_format == "MINDIR":  # label count and token columns dynamic (docs/export.md)
                example = ms.Tensor(shape=[None, None], dtype=ms.int32)
                cell, names = _text_cell(net), ("tokens", "text_features")
                shapes = ([-1, -1], [-1, embed_dim])
            else:
                example = ms.Tensor(np.zeros((spec.num_labels, context_length), np.int32))
                cell, names = _text_cell(net), ("tokens", "text_features")
                shapes = ([spec.num_labels, context_length], [spec.num_labels, embed_dim])
            log(
                f"exporting {part} graph -> {spec.file_name(part)} (input {names[0]} {shapes[0]}, "
                f"output {names[1]} {shapes[1]})"
            )
            file = _export_graph(cell, example, path, spec.file_format, *names)
            if spec.file_format == "ONNX" and onnx_optimize and part == "text":
                from .onnx_optimize import optimize_text_graph

                if optimize_text_graph(path, log):  # label count and token columns dynamic
                    shapes = ([-1, -1], [-1, embed_dim])
            elif spec.file_format == "ONNX" and onnx_optimize:
                from .onnx_optimize import optimize_image_graph

                done = optimize_image_graph(path, log)
                if done:
                    log(f"image graph rewritten for ONNX Runtime: {', '.join(done)}")
            info[part] = {"file": file, "input_shape": shapes[0], "output_shape": shapes[1]}
        os.makedirs(spec.output_dir, exist_ok=True)
        for name in sorted(os.listdir(tmp)):  # the graphs (and any parameter files / folders beside them)
            dst = os.path.join(spec.output_dir, name)
            if os.path.isdir(dst):
                shutil.rmtree(dst)
            os.replace(os.path.join(tmp, name), dst)
        from ..fileio import atomic_write_text

        atomic_write_text(deploy_json_path(spec.output_dir, spec.model), json.dumps(info, indent=2) + "\n")
    except Exception as e:
        if isinstance(e, ExportError):
            raise
        raise ExportError(f"{spec.file_format} export of {spec.model} failed: {str(e).strip().splitlines()[0]}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


def _default_cfg(model: str) -> dict:
    from mindcv.models.registry import get_pretrained_cfg

    return get_pretrained_cfg(model)
