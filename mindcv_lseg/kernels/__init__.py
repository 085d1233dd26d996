"""Compiled CPU kernels used by the CPU-lean layers (``impl="lean"``), as MindSpore custom operators: OpenBLAS
matrix products (:mod:`.gemm`, :mod:`.openblas`), Winograd 3x3 convolutions (:mod:`.winograd`), the one-pass exact
GELU (:mod:`.gelu`), the LayerNorm and its gradient (:mod:`.layernorm`), per-pixel reductions (:mod:`.pixel`: the
cross-entropy gradient, the pixel norms) and the bilinear resize with its gradient (:mod:`.resize`); :mod:`.library`
finds the libraries ``pip install`` built, holds the ``MINDCV_LSEG_KERNELS`` switch and prints the fallback notice."""
