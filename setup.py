"""mindcv-lseg: LSeg (Language-driven Semantic Segmentation) for MindSpore, as a mindcv plug-in."""

from setuptools import Extension, find_packages, setup

# The compiled kernels of the CPU-lean layers (mindcv_lseg/kernels): MindSpore custom-op libraries, not Python modules.
# Optional: without a C++ compiler the install succeeds and the layers use MindSpore's own ops (with a notice).
# _lseg_gemm holds everything that calls OpenBLAS's sgemm (the matrix products, the Winograd 3x3 convolution, the
# fused attention) and the kernels' thread pool (lseg_threads.cc);
# _lseg_pixel the per-pixel reductions over an [N, pixels] layout (the cross-entropy gradient, the channel L2 norms);
# _lseg_layernorm the LayerNorm over the last axis and its gradient
# _lseg_resize the bilinear resize and its gradient
KERNEL_SOURCES = {
    "gemm": ["lseg_gemm.cc", "lseg_winograd.cc", "lseg_attention.cc", "lseg_threads.cc"],
    "gelu": ["lseg_gelu.cc", "lseg_threads.cc"],
    "pixel": ["lseg_loss.cc", "lseg_norm.cc"],
    "layernorm": ["lseg_layernorm.cc", "lseg_threads.cc"],
    "resize": ["lseg_resize.cc", "lseg_threads.cc"],
}
KERNEL_HEADERS = ["lseg_sgemm.h", "lseg_aot.h", "lseg_attention_tiles.h", "lseg_threads.h"]
KERNELS = [
    Extension(
        f"mindcv_lseg.kernels._lseg_{name}",
        sources=[f"mindcv_lseg/kernels/{source}" for source in sources],
        depends=[f"mindcv_lseg/kernels/{header}" for header in KERNEL_HEADERS],
        extra_compile_args=["-O3", "-std=c++17", "-fopenmp-simd", "-fno-math-errno"],
        optional=True,
    )
    for name, sources in KERNEL_SOURCES.items()
]

setup(
    name="mindcv-lseg",
    version="0.1.0",
    description="LSeg open-vocabulary semantic segmentation for MindSpore / mindcv",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["mindcv_lseg", "mindcv_lseg.*"]),
    package_data={
        "mindcv_lseg": [
            "text/*.txt.gz",
            "kernels/*.cc",
            "kernels/*.h",
            "text/*.txt",
            "text/LICENSE*",
            "data/fewshot_splits/*.txt",
            "data/fewshot_splits/*.md",
            "data/fewshot_splits/*/*.txt",
            "data/fewshot_splits/*/*/*.txt",
            "data/fewshot_splits/*/*/*.pkl",
        ]
    },
    ext_modules=KERNELS,
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
        # the interactive page (tools/demo.py); gradio 6.31 needs pillow<13, which pip resolves
        "demo": ["gradio==6.31.0"],
        # run ONNX exports (tools/export.py --file_format ONNX) with ONNX Runtime; onnx rewrites the exported graphs
        # (mindcv_lseg/deploy/onnx_optimize.py); pinned to releases that keep numpy<2 (pip resolved onnx 1.23 with
        # ml_dtypes 0.7 and numpy 2, which breaks MindSpore)
        "onnx": ["onnxruntime", "onnx>=1.15,<1.18", "ml_dtypes<0.5"],
        # torch is only used by tests to write reference checkpoints in PyTorch formats; gradio + playwright drive the
        # demo page in Debian's chromium (tests/test_demo_page.py; playwright's own browser download is not used)
        "test": [
            "pytest",
            "pytest-xdist",  # the README's test command runs two workers (-n 2 --dist loadfile)
            "torch==2.13.0",
            "gradio==6.31.0",
            "playwright==1.65.2",
            "onnxruntime",
            "onnx>=1.15,<1.18",
            "ml_dtypes<0.5",
        ],
    },
)
