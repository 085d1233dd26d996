"""Settings and timing shared by the forward benchmarks and their PyTorch baseline (no MindSpore, no torch here)."""

import os
import statistics
import sys
import time
from typing import Callable, List, Sequence, Tuple

LABELS = ["other", "sky", "tree", "car", "person"]  # the parity case's labels
MAX_LABELS = 150
TORCH_MODELS = ("lseg_vitb32", "lseg_vitl16_384")  # the entries benchmarks/torch_lseg.py builds


def import_package() -> None:
    """Import ``mindcv_lseg`` for its text modules only, without MindSpore, unless it is loaded already (the
    package then only defines itself, as the tools do before parsing their arguments)."""
    if "mindcv_lseg" not in sys.modules:
        os.environ["MINDCV_LSEG_DEFER_IMPORTS"] = "1"
        try:
            import mindcv_lseg  # noqa: F401
        finally:
            os.environ.pop("MINDCV_LSEG_DEFER_IMPORTS")


def labels_for(num_labels: int) -> List[str]:
    """The label set of a benchmark: the five parity labels for N <= 5, else the first N of ADE20K's 150 (the
    reference's strings, as the package ships them)."""
    if not 1 <= num_labels <= MAX_LABELS:
        raise ValueError(f"--labels must be between 1 and {MAX_LABELS}, got {num_labels}")
    if num_labels <= len(LABELS):
        return LABELS[:num_labels]
    import_package()
    from mindcv_lseg.text.labels import ADE20K_150

    return list(ADE20K_150[:num_labels])


def input_size(values: Sequence[int]) -> Tuple[int, int]:
    """``--size H [W]`` -> (H, W); a ValueError unless both are positive multiples of 32."""
    if len(values) not in (1, 2):
        raise ValueError(f"--size takes H or H W, got {len(values)} values")
    h, w = (values[0], values[0]) if len(values) == 1 else values
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise ValueError(f"--size: H and W must be positive multiples of 32, got {h} {w}")
    return h, w


def median_time(fn: Callable[[], object], warmup: int, runs: int) -> float:
    """Seconds per call of ``fn``: the median of ``runs`` timed calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def alternate_medians(fns: Sequence[Callable[[], object]], warmup: int, runs: int) -> List[float]:
    """Median seconds per call of each of ``fns``, timed alternately (one call of each per round, after ``warmup``
    untimed calls of each): a change of load on the machine affects every side alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(runs):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]
