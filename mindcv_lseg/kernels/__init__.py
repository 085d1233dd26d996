"""Compiled CPU kernels used by the CPU-lean layers (``impl="lean"``), as MindSpore custom operators: OpenBLAS
matrix products (:mod:`.gemm`, :mod:`.openblas`) and the one-pass exact GELU (:mod:`.gelu`); :mod:`.library` finds
the libraries ``pip install`` built, holds the ``MINDCV_LSEG_KERNELS`` switch and prints the fallback notice."""
