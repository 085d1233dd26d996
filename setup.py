"""mindcv-lseg: LSeg (Language-driven Semantic Segmentation) for MindSpore, as a mindcv plug-in."""
from setuptools import find_packages, setup

setup(
    name="mindcv-lseg",
    version="0.1.0",
    description="LSeg open-vocabulary semantic segmentation for MindSpore / mindcv",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["mindcv_lseg", "mindcv_lseg.*"]),
    package_data={"mindcv_lseg": ["text/*.txt.gz", "text/*.txt", "text/LICENSE*"]},
    include_package_data=True,
    python_requires=">=3.9",
    install_requires=[
        "mindspore==2.10.0",
        "mindcv==0.3.0",
        "numpy<2",
        "pillow",
        "pyyaml",
        "regex",
        "ftfy",
        "tqdm",
    ],
    extras_require={
        # torch is only used by tests to write reference checkpoints in PyTorch formats
        "test": ["pytest", "torch==2.13.0", "onnxruntime"],
        # run ONNX exports (tools/export.py --file_format ONNX) with ONNX Runtime
        "onnx": ["onnxruntime"],
    },
)
