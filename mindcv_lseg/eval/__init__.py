"""mindcv_lseg.eval: metrics, the inference core (whole / slide / multi-scale + flip) and the ``segment`` API."""

from .api import IMAGE_EXTENSIONS, SegResult, load_image, parse_labels, pixel_embeddings, segment
from .inference import EVAL_MODES, REFERENCE_SCALES, InferenceConfig, normalize_image, run_inference
from .metrics import ConfusionMatrix, compute_metrics, format_table, save_metrics_csv, save_metrics_json
from .text_cache import TextEmbeddingCache, checkpoint_identity

__all__ = [
    "IMAGE_EXTENSIONS",
    "SegResult",
    "load_image",
    "parse_labels",
    "pixel_embeddings",
    "segment",
    "EVAL_MODES",
    "REFERENCE_SCALES",
    "InferenceConfig",
    "normalize_image",
    "run_inference",
    "ConfusionMatrix",
    "compute_metrics",
    "format_table",
    "save_metrics_csv",
    "save_metrics_json",
    "TextEmbeddingCache",
    "checkpoint_identity",
]
