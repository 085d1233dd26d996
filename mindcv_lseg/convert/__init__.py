"""Weight conversion: official LSeg / CLIP / timm / big_vision / MindSpore files -> MindSpore checkpoints.

Layers (no torch import anywhere):

* :mod:`.readers` (+ :mod:`.torch_pickle`): a file -> ``name -> np.ndarray`` in the file's own naming; the format
  is detected from content; PyTorch pickles go through a restricted unpickler that never executes code.
* :mod:`.sources`: CLIP / timm / big_vision layouts -> the official LSeg naming (``net.clip_pretrained.*``, ...).
* :mod:`.keymap`: official naming -> MindSpore parameter names (the single mapping).
* :mod:`.pipeline`: :func:`convert_checkpoint` ties them together and writes atomically (``tools/convert.py``).
"""

from .pipeline import ConversionReport, ConvertError, convert_checkpoint, convert_state, model_param_shapes
from .readers import SourceState, detect_kind, read_checkpoint
from .sources import detect_layout, to_official
from .torch_pickle import UnsafePickleError

__all__ = [
    "ConversionReport",
    "ConvertError",
    "SourceState",
    "UnsafePickleError",
    "convert_checkpoint",
    "convert_state",
    "detect_kind",
    "detect_layout",
    "model_param_shapes",
    "read_checkpoint",
    "to_official",
]
