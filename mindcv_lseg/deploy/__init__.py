"""mindcv_lseg.deploy: export LSeg to MINDIR / ONNX and run the exported graphs with the eager ``segment`` API.

python tools/export.py --model lseg_vitb32 --ckpt_path lseg_b32.ckpt --file_format ONNX --output_dir export/
from mindcv_lseg.deploy import load_deployed
net = load_deployed("export/")                     # ONNX Runtime for .onnx, MindSpore GraphCell for .mindir
res = net.segment("photo.jpg", ["dog", "grass", "other"], mode="slide")
"""

from .exporter import FILE_FORMATS, PARTS, ExportError, check_export_args, export_lseg
from .runner import RUNTIMES, DeployedLSeg, DeployError, load_deployed

__all__ = [
    "FILE_FORMATS",
    "PARTS",
    "ExportError",
    "check_export_args",
    "export_lseg",
    "RUNTIMES",
    "DeployedLSeg",
    "DeployError",
    "load_deployed",
]
