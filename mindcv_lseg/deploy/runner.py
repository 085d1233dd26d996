"""Run an exported LSeg (``tools/export.py``) with MindSpore (``mindspore.load`` + ``nn.GraphCell``) or ONNX Runtime.

:class:`DeployedLSeg` looks like the eager network to the package's inference core: ``encode_text(labels)``,
``forward_features(x)`` and ``net(x, text) -> logits``, so :meth:`DeployedLSeg.segment` is the eager
:func:`mindcv_lseg.segment` (same tokenizer, text cache, whole / slide / ms_flip inference and ``SegResult``) with
the exported graphs in place of the network.

The graphs have the shapes written in ``NAME_deploy.json`` (fixed at export time unless -1):

* text: ``[N, 77]`` tokens per call; label lists are cut into chunks of N rows, the last one padded by repeating its
  last row (padding rows are dropped from the result). A dimension written as -1 is dynamic: label lists are fed in
  chunks of ``LSeg.TEXT_BATCH`` rows without padding, and only the token columns up to the last end token (rounded
  up as in ``LSeg.encode_text``) when the columns are dynamic (MINDIR; ONNX rewritten by ``onnx_optimize``);
* image: ``[1, 3, H, W]``. ``slide`` and ``ms_flip`` feed ``crop_size x crop_size`` windows, so ``crop_size`` is set to
  the exported size (it must be square) and results equal the eager network's with the same ``crop_size``. ``whole``
  feeds the image padded to a multiple of 32; an input smaller than the exported size is padded further (bottom /
  right, with the value of a black pixel) and the output cropped, which equals eager ``whole`` only when the padded
  size is the exported size (the ViT sees the extra padding); a larger one raises ``ValueError``.
"""

import json
import os
from dataclasses import replace
from typing import Optional, Sequence, Union

import numpy as np

from ..eval.api import SegResult
from ..eval.api import segment as eager_segment
from ..eval.inference import InferenceConfig, resize_bilinear
from ..eval.text_cache import TextEmbeddingCache
from ..models.lseg import LSeg, used_text_length
from ..text.tokenizer import tokenize

__all__ = ["DeployedLSeg", "RUNTIMES", "DeployError", "load_deployed"]

RUNTIMES = ("mindspore", "onnxruntime")
_DEFAULT_RUNTIME = {"MINDIR": "mindspore", "ONNX": "onnxruntime"}


class DeployError(ValueError):
    """An export folder is missing, incomplete or inconsistent (the message names the file)."""


def _find_json(export_dir: str) -> str:
    if not os.path.isdir(export_dir):
        raise DeployError(f"export folder not found: {export_dir} (create one with tools/export.py)")
    found = sorted(f for f in os.listdir(export_dir) if f.endswith("_deploy.json"))
    if len(found) != 1:
        what = "no *_deploy.json" if not found else f"several *_deploy.json ({', '.join(found)})"
        raise DeployError(f"{export_dir} holds {what}; point --deploy_dir at one folder written by tools/export.py")
    return os.path.join(export_dir, found[0])


class _Graph:
    """One exported graph behind a numpy-in, numpy-out call."""

    def __init__(self, path: str, runtime: str, threads: Optional[int] = None):
        self.path = path
        self.runtime = runtime
        if runtime == "mindspore":
            import mindspore as ms
            from mindspore import nn

            self._cell = nn.GraphCell(ms.load(path))
        else:
            try:
                import onnxruntime as ort
            except ImportError:
                raise DeployError(
                    "ONNX Runtime is not installed: pip install 'mindcv-lseg[onnx]' (or onnxruntime)"
                ) from None
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # (its default, made explicit)
            if threads:
                opts.intra_op_num_threads = int(threads)
            self._sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
            self._input = self._sess.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.runtime == "mindspore":
            import mindspore as ms

            return self._cell(ms.Tensor(x)).asnumpy()
        return self._sess.run(None, {self._input: x})[0]


class DeployedLSeg:
    """An export folder loaded into MindSpore or ONNX Runtime.

    Args:
        export_dir: folder written by ``tools/export.py`` (one ``NAME_deploy.json`` and its graph files).
        runtime: ``"mindspore"`` (MINDIR) or ``"onnxruntime"`` (ONNX); ``None`` = the one for the folder's format.
        threads: ONNX Runtime intra-op threads (``None`` = its default, all cores).

    Attributes: ``info`` (the JSON), ``model``, ``image_size`` (H, W), ``num_labels`` and ``text_length`` (the text
    graph's input shape, -1 = dynamic), ``embed_dim``, ``logit_scale``.
    """

    def __init__(self, export_dir: str, runtime: Optional[str] = None, threads: Optional[int] = None):
        path = _find_json(export_dir)
        try:
            with open(path, encoding="utf-8") as f:
                info = json.load(f)
            fmt = info["file_format"]
            self.model = info["model"]
            self.logit_scale = np.float32(info["logit_scale"])
            self.context_length = int(info["context_length"])
            self.input_multiple = int(info["input_multiple"])
            self.mean, self.std = tuple(info["mean"]), tuple(info["std"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DeployError(f"{path} is not a valid deploy description ({type(e).__name__}: {e})") from None
        if fmt not in _DEFAULT_RUNTIME:
            raise DeployError(f"{path}: unknown file_format {fmt!r}")
        runtime = runtime or _DEFAULT_RUNTIME[fmt]
        if runtime not in RUNTIMES:
            raise DeployError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        if runtime != _DEFAULT_RUNTIME[fmt]:
            raise DeployError(f"{fmt} graphs run with {_DEFAULT_RUNTIME[fmt]}, not {runtime}")
        if self.mean != (0.5, 0.5, 0.5) or self.std != (0.5, 0.5, 0.5):
            raise DeployError(f"{path}: mean/std {self.mean}/{self.std} differ from the inference core's (0.5, 0.5)")
        self.info, self.runtime, self.export_dir = info, runtime, export_dir
        self._image = self._text = None
        for part in ("image", "text"):
            spec = info.get(part)
            if spec is None:
                continue
            file = os.path.join(export_dir, spec["file"])
            if not os.path.isfile(file):
                raise DeployError(f"{path} names {spec['file']}, which is missing from {export_dir}")
            setattr(self, f"_{part}", _Graph(file, runtime, threads))
        self.image_size = tuple(info["image"]["input_shape"][2:]) if info.get("image") else None
        self.num_labels, self.text_length = (
            (int(info["text"]["input_shape"][0]), int(info["text"]["input_shape"][1]))
            if info.get("text")
            else (None,) * 2
        )
        self.embed_dim = int((info.get("image") or info.get("text"))["output_shape"][1])

    # ----------------------------------------------------------------- the eager network's interface
    def encode_text(self, labels: Union[str, Sequence[str]], truncate: bool = False) -> np.ndarray:
        """Raw text features float32 ``[len(labels), E]`` (as ``LSeg.encode_text``)."""
        if self._text is None:
            raise DeployError(f"{self.export_dir} has no text graph (export with --part text or both)")
        labels = [labels] if isinstance(labels, str) else list(labels)
        if not labels:
            raise ValueError("encode_text needs at least one label")
        tokens = tokenize(labels, context_length=self.context_length, truncate=truncate).astype(np.int32)
        if self.text_length == -1:  # dynamic columns: stop after the last end token, as LSeg.encode_text
            tokens = tokens[:, : used_text_length(tokens, LSeg.TEXT_MIN_LENGTH)]
        n, parts = (self.num_labels if self.num_labels > 0 else LSeg.TEXT_BATCH), []
        for start in range(0, len(tokens), n):
            chunk = tokens[start : start + n]
            rows = len(chunk)
            if rows < n and self.num_labels > 0:
                chunk = np.concatenate((chunk, np.repeat(chunk[-1:], n - rows, axis=0)))
            parts.append(self._text(np.ascontiguousarray(chunk))[:rows])
        return np.concatenate(parts).astype(np.float32, copy=False)

    def _check_image(self, x: np.ndarray) -> np.ndarray:
        if self._image is None:
            raise DeployError(f"{self.export_dir} has no image graph (export with --part image or both)")
        x = np.asarray(x.asnumpy() if hasattr(x, "asnumpy") else x, dtype=np.float32)
        (h, w), (eh, ew) = x.shape[2:], self.image_size
        if x.ndim != 4 or x.shape[:2] != (1, 3) or h > eh or w > ew:
            raise ValueError(
                f"the exported image graph takes [1, 3, {eh}, {ew}] (padded up from smaller images); "
                f"got {list(x.shape)}: export again with --image_size covering it, or use mode='slide'"
            )
        if (h, w) != (eh, ew):
            x = np.pad(x, ((0, 0), (0, 0), (0, eh - h), (0, ew - w)), constant_values=np.float32(-1.0))
        return np.ascontiguousarray(x)

    def forward_features(self, x) -> np.ndarray:
        """L2-normalised embeddings float32 ``[1, E, ceil(h/2), ceil(w/2)]`` of a normalised image ``[1, 3, h, w]``."""
        h, w = x.shape[2:]
        feats = self._image(self._check_image(x))
        return feats[:, :, : -(-h // 2), : -(-w // 2)]

    def logits(self, embeddings: np.ndarray, text) -> np.ndarray:
        """``[1, E, h, w]`` embeddings + raw text features ``[N, E]`` -> logits ``[1, N, 2h, 2w]``: x2 bilinear
        upsampling (``align_corners=True``) of ``logit_scale * <embedding, text / |text|>``, as ``LSeg.construct``."""
        text = np.asarray(text.asnumpy() if hasattr(text, "asnumpy") else text, dtype=np.float32)
        text = text / np.sqrt((text * text).sum(axis=-1, keepdims=True))
        _, e, fh, fw = embeddings.shape
        logits = (text @ (self.logit_scale * embeddings[0]).reshape(e, fh * fw)).reshape(1, -1, fh, fw)
        return resize_bilinear(logits, 2 * fh, 2 * fw)

    def __call__(self, x, text) -> np.ndarray:
        """Logits float32 ``[1, N, h, w]`` of a normalised image ``[1, 3, h, w]`` and raw text features ``[N, E]``."""
        h, w = x.shape[2:]
        return self.logits(self._image(self._check_image(x)), text)[:, :, :h, :w]

    # ----------------------------------------------------------------- the eager API
    def inference_config(
        self, config: Optional[InferenceConfig] = None, mode: str = "whole", **overrides
    ) -> InferenceConfig:
        """The :class:`InferenceConfig` for the exported graphs: ``crop_size`` = the exported size.

        Raises ``ValueError`` for ``slide``/``ms_flip`` when the export is not square or another ``crop_size`` is
        asked for explicitly (``overrides``).
        """
        eh, ew = self.image_size
        cfg = config if config is not None else InferenceConfig(mode=mode, **overrides)
        if cfg.mode != "whole":
            if eh != ew or overrides.get("crop_size", eh) != eh:
                raise ValueError(
                    f"mode={cfg.mode!r} feeds crop_size x crop_size windows: it needs a square export "
                    f"whose --image_size is the crop size (this export is {eh}x{ew}, crop_size "
                    f"{overrides.get('crop_size', eh)})"
                )
            cfg = replace(cfg, crop_size=eh)
        return cfg

    def segment(
        self,
        image,
        labels,
        mode: str = "whole",
        config: Optional[InferenceConfig] = None,
        text_cache: Optional[TextEmbeddingCache] = None,
        return_embeddings: bool = False,
        templates=None,
        alpha: float = 0.5,
        **config_overrides,
    ) -> SegResult:
        """:func:`mindcv_lseg.segment` with the exported graphs (``crop_size`` = the exported size)."""
        cfg = self.inference_config(config, mode, **config_overrides)
        return eager_segment(
            self,
            image,
            labels,
            config=cfg,
            text_cache=text_cache,
            return_embeddings=return_embeddings,
            templates=templates,
            alpha=alpha,
        )


def load_deployed(export_dir: str, runtime: Optional[str] = None, threads: Optional[int] = None) -> DeployedLSeg:
    """:class:`DeployedLSeg` of ``export_dir``."""
    return DeployedLSeg(export_dir, runtime=runtime, threads=threads)
