"""The Winograd 3x3 convolution kernel of this checkout against the one of another build of ``_lseg_gemm`` (e.g. the
main checkout's, or a copy kept before a change), in one process: both libraries are loaded with ctypes, given the
same OpenBLAS sgemm, and their ``LsegConv3x3`` / ``LsegConv3x3Adjoint`` called directly on NumPy arrays, alternately
call by call (other processes on the machine slow both alike: read the ratio). ``--error`` also prints each
library's error against a float64 direct convolution on decoder-like data (ReLU'd activations, He-scaled weights).

Cases: refinenet1's 256 -> 256 convolution at 96x96 (ViT-L/16 at 384x384) and 120x120 (480x480), ``layer4_rn``'s
1024 -> 256 at 12x12, and ``--case C,O,S`` for others.

    python benchmarks/winograd.py --against /path/to/other/_lseg_gemm.so [--runs 11] [--error]
"""

import argparse
import ctypes

import numpy as np
from bench_settings import alternate_medians

from mindcv_lseg.kernels import library
from mindcv_lseg.kernels.openblas import load_sgemm

CASES = ((256, 256, 96), (256, 256, 120), (1024, 256, 12))


def _load(path: str, sgemm: int) -> ctypes.CDLL:
    lib = ctypes.CDLL(path)
    lib.LsegGemmSetSgemm(ctypes.c_void_p(sgemm))
    return lib


def _call(lib: ctypes.CDLL, entry: str, x: np.ndarray, w: np.ndarray, out: np.ndarray) -> np.ndarray:
    """One AOT entry point called as MindSpore would: (x, w) -> out, all contiguous float32."""
    arrays = (x, w, out)
    shapes = [(ctypes.c_int64 * a.ndim)(*a.shape) for a in arrays]
    code = getattr(lib, entry)(
        3,
        (ctypes.c_void_p * 3)(*[a.ctypes.data for a in arrays]),
        (ctypes.c_int * 3)(*[a.ndim for a in arrays]),
        (ctypes.POINTER(ctypes.c_int64) * 3)(*[ctypes.cast(s, ctypes.POINTER(ctypes.c_int64)) for s in shapes]),
        (ctypes.c_char_p * 3)(*[b"float32"] * 3),
        None,
        None,
    )
    if code != 0:
        raise RuntimeError(f"{entry} returned {code}")
    return out


def _direct64(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    _, _, h, width = x.shape
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = 0
    for i in range(3):
        for j in range(3):
            out = out + np.einsum(
                "oc,bchw->bohw", w[:, :, i, j].astype(np.float64), padded[:, :, i : i + h, j : j + width]
            )
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", required=True, help="the other _lseg_gemm*.so")
    parser.add_argument("--runs", type=int, default=11, help="timed calls of each library per case and direction")
    parser.add_argument("--case", action="append", default=[], help="C,O,S: C -> O channels at SxS (repeatable)")
    parser.add_argument("--error", action="store_true", help="also the error against float64 (256 channels, 48x48)")
    args = parser.parse_args(argv)
    sgemm, description = load_sgemm()
    libs = {"this": _load(library.library_path("_lseg_gemm"), sgemm), "other": _load(args.against, sgemm)}
    print(f"sgemm: {description}; other: {args.against}")
    cases = [tuple(int(v) for v in case.split(",")) for case in args.case] or CASES
    rng = np.random.default_rng(0)
    print("| C -> O | size | direction | other ms | this ms | this / other |")
    print("|---|---|---|---|---|---|")
    for c, o, size in cases:
        x = rng.standard_normal((1, c, size, size)).astype(np.float32)
        w = (rng.standard_normal((o, c, 3, 3)) * np.sqrt(2 / (9 * c))).astype(np.float32)
        dy = rng.standard_normal((1, o, size, size)).astype(np.float32)
        for direction, entry, inp, out_channels in (
            ("forward", "LsegConv3x3", x, o),
            ("adjoint", "LsegConv3x3Adjoint", dy, c),
        ):
            out = {name: np.empty((1, out_channels, size, size), np.float32) for name in libs}
            this, other = alternate_medians(
                [lambda name=name: _call(libs[name], entry, inp, w, out[name]) for name in ("this", "other")],
                warmup=2,
                runs=args.runs,
            )
            print(
                f"| {c} -> {o} | {size}x{size} | {direction} | {other * 1e3:.1f} | {this * 1e3:.1f} | {this / other:.2f} |"
            )
    if args.error:
        x = (2 * np.maximum(rng.standard_normal((1, 256, 48, 48)), 0)).astype(np.float32)
        w = (rng.standard_normal((256, 256, 3, 3)) * np.sqrt(2 / (9 * 256))).astype(np.float32)
        want = _direct64(x, w)
        for name, lib in libs.items():
            err = np.abs(_call(lib, "LsegConv3x3", x, w, np.empty_like(x)) - want)
            print(f"{name}: max abs error {err.max():.3g}, mean {err.mean():.3g} (output max {np.abs(want).max():.3g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
