"""Throughput of ``mindcv_lseg.tokenize`` on the 150 ADE20K labels used by LSeg.

Cold  = vocabulary not loaded yet (includes reading the 1.3 MB merges file) and empty BPE cache.
Warm  = vocabulary loaded and every label already in the BPE cache (the steady state of repeated calls).

Usage:
    python benchmarks/tokenizer.py [--repeats 5] [--warm-iters 50]
"""

import argparse
import statistics
import time

from mindcv_lseg.text import tokenizer as tk

# LSeg's ADE20K label strings (docs/reference_numerics.md, "Labels"), kept here so the benchmark is self-contained.
ADE150 = (
    "wall building sky floor tree ceiling road bed windowpane grass cabinet sidewalk person earth door table "
    "mountain plant curtain chair car water painting sofa shelf house sea mirror rug field armchair seat fence "
    "desk rock wardrobe lamp bathtub railing cushion base box column signboard chest counter sand sink "
    "skyscraper fireplace refrigerator grandstand path stairs runway case pool pillow screen stairway river "
    "bridge bookcase blind coffee toilet flower book hill bench countertop stove palm kitchen computer swivel "
    "boat bar arcade hovel bus towel light truck tower chandelier awning streetlight booth television airplane "
    "dirt apparel pole land bannister escalator ottoman bottle buffet poster stage van ship fountain conveyer "
    "canopy washer plaything swimming stool barrel basket waterfall tent bag minibike cradle oven ball food "
    "step tank trade microwave pot animal bicycle lake dishwasher screen blanket sculpture hood sconce vase "
    "traffic tray ashcan fan pier crt plate monitor bulletin shower radiator glass clock flag"
).split()
assert len(ADE150) == 150


def _time(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="cold runs (each reloads the vocabulary)")
    parser.add_argument("--warm-iters", type=int, default=50, help="warm runs")
    args = parser.parse_args()

    labels = list(ADE150)
    load, cold_tok = [], []
    for _ in range(args.repeats):
        tk.get_tokenizer.cache_clear()
        load.append(_time(tk.get_tokenizer))  # read merges + build vocab
        cold_tok.append(_time(lambda: tk.tokenize(labels)))  # empty BPE cache
    cold_total = [a + b for a, b in zip(load, cold_tok)]
    warm = [_time(lambda: tk.tokenize(labels)) for _ in range(args.warm_iters)]

    med = statistics.median
    n = len(labels)
    print(f"labels: {n} ADE20K names, context_length 77")
    print(f"vocab load (once per process):       {med(load) * 1e3:8.1f} ms   (median of {args.repeats})")
    print(f"cold tokenize (empty BPE cache):     {med(cold_tok) * 1e3:8.2f} ms  = {n / med(cold_tok):9.0f} labels/s")
    print(f"cold total (load + tokenize):        {med(cold_total) * 1e3:8.1f} ms")
    print(
        f"warm tokenize (cached):              {med(warm) * 1e3:8.2f} ms  = {n / med(warm):9.0f} labels/s"
        f"   (median of {args.warm_iters})"
    )


if __name__ == "__main__":
    main()
