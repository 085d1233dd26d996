"""Compiled CPU kernels used by the CPU-lean layers (``impl="lean"``): OpenBLAS matrix products as MindSpore
custom operators (:mod:`.gemm`, :mod:`.openblas`)."""
