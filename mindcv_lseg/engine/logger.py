"""Training logs: a plain-text log, per-epoch metrics as CSV and JSON, and a PNG plot of loss and val mIoU.

Only rank 0 writes files (other ranks get a console-only logger at WARNING level). All files are written
atomically (temp file + ``os.replace``), so a killed run never leaves a half-written CSV/JSON/PNG.
The plot is drawn with Pillow (already a dependency) instead of matplotlib.

The text log uses the line format of mindcv's logger (``mindcv.utils.logger.set_logger``), but not that function:
it keeps the first logger of a name for the life of the process (a second run in the same process would write
into the first run's folder), it names the file ``rank{N}.log`` rather than the documented ``train.log``, its default
``color=True`` raises unless ``rich`` or ``termcolor`` is installed (neither is a dependency), and it gives ranks
other than 0 no console output, so their warnings would be lost.
"""

import csv
import io
import json
import logging
import math
import os
import sys
from typing import Dict, List, Optional, Sequence

from PIL import Image, ImageDraw, ImageFont

from ..fileio import atomic_write_bytes

__all__ = ["create_logger", "MetricsHistory", "plot_curves"]


def create_logger(
    log_dir: Optional[str], rank: int = 0, name: str = "mindcv_lseg.train", filename: str = "train.log"
) -> logging.Logger:
    """Logger writing ``log_dir/filename`` (rank 0, appended across resumes) and the console.

    Rank > 0 logs warnings and errors to the console only.
    """
    logger = logging.getLogger(name)
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    logger.propagate = False
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(name)s %(levelname)s - %(message)s", datefmt="[%Y-%m-%d %H:%M:%S]")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if rank == 0 and log_dir:
        os.makedirs(log_dir, exist_ok=True)
        fh = logging.FileHandler(os.path.join(log_dir, filename), mode="a", encoding="utf-8")
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    return logger


class MetricsHistory:
    """Per-epoch metrics rows (dicts), saved as ``metrics.csv`` and ``metrics.json`` in ``out_dir``.

    Rows are keyed by ``epoch``; adding a row for an existing epoch replaces it (a resumed run rewrites the epochs
    it repeats). The history is also stored in the training checkpoints so the curve survives a resume.
    """

    def __init__(self, out_dir: Optional[str], rank: int = 0):
        self.out_dir = out_dir
        self.rank = rank
        self.rows: List[Dict] = []

    def add(self, row: Dict) -> None:
        self.rows = [r for r in self.rows if r.get("epoch") != row.get("epoch")] + [dict(row)]
        self.rows.sort(key=lambda r: r.get("epoch", 0))

    def to_json(self) -> str:
        return json.dumps(self.rows)

    def load_json(self, text: str) -> None:
        self.rows = list(json.loads(text)) if text else []

    def truncate(self, last_epoch: int) -> None:
        """Drop rows after ``last_epoch`` (used on resume)."""
        self.rows = [r for r in self.rows if r.get("epoch", 0) <= last_epoch]

    def column(self, key: str) -> List:
        return [(r["epoch"], r[key]) for r in self.rows if r.get(key) is not None]

    def save(self) -> None:
        """Write ``metrics.csv`` and ``metrics.json`` (rank 0)."""
        if self.rank != 0 or not self.out_dir:
            return
        keys: List[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})
        atomic_write_bytes(os.path.join(self.out_dir, "metrics.csv"), buf.getvalue().encode("utf-8"))
        atomic_write_bytes(
            os.path.join(self.out_dir, "metrics.json"), (json.dumps(self.rows, indent=1) + "\n").encode("utf-8")
        )


# ------------------------------------------------------------------------------------------------------ plotting
def _nice_ticks(lo: float, hi: float, n: int = 5) -> List[float]:
    if not math.isfinite(lo) or not math.isfinite(hi):
        return []
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    ticks, t = [], start
    while t <= hi + 1e-12 * abs(step):
        ticks.append(round(t, 10))
        t += step
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100 or abs(v) < 0.01:
        return f"{v:.2g}"
    return f"{v:.3g}"


def _panel(draw: ImageDraw.ImageDraw, box, series: Sequence, title: str, color, font, y_range=None) -> None:
    """One line chart in ``box = (x0, y0, x1, y1)`` of points ``[(x, y), ...]``."""
    x0, y0, x1, y1 = box
    left, right, top, bottom = x0 + 56, x1 - 14, y0 + 26, y1 - 34
    draw.text((x0 + 56, y0 + 6), title, fill=(0, 0, 0), font=font)
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    pts = [(float(x), float(y)) for x, y in series if y is not None and math.isfinite(float(y))]
    if not pts:
        draw.text((left + 10, (top + bottom) // 2), "no data", fill=(120, 120, 120), font=font)
        return
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    xlo, xhi = min(xs), max(xs)
    if xhi == xlo:
        xlo, xhi = xlo - 1, xhi + 1
    if y_range is not None:
        ylo, yhi = y_range
    else:
        ylo, yhi = min(ys), max(ys)
        pad = (yhi - ylo) * 0.08 or max(abs(yhi) * 0.1, 1e-3)
        ylo, yhi = ylo - pad, yhi + pad

    def px(x, y):
        return (left + (x - xlo) / (xhi - xlo) * (right - left), bottom - (y - ylo) / (yhi - ylo) * (bottom - top))

    for t in _nice_ticks(ylo, yhi):
        _, yy = px(xlo, t)
        draw.line([left, yy, right, yy], fill=(225, 225, 225))
        draw.text((x0 + 4, yy - 6), _fmt(t), fill=(0, 0, 0), font=font)
    for t in _nice_ticks(xlo, xhi, 6):
        if abs(t - round(t)) > 1e-9:
            continue
        xx, _ = px(t, ylo)
        draw.line([xx, bottom, xx, bottom + 4], fill=(0, 0, 0))
        draw.text((xx - 6, bottom + 6), str(int(round(t))), fill=(0, 0, 0), font=font)
    draw.text(((left + right) // 2 - 14, bottom + 19), "epoch", fill=(0, 0, 0), font=font)
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    coords = [px(x, y) for x, y in pts]
    if len(coords) > 1:
        draw.line(coords, fill=color, width=2)
    for cx, cy in coords:
        draw.ellipse([cx - 2.5, cy - 2.5, cx + 2.5, cy + 2.5], fill=color)


def plot_curves(history: MetricsHistory, path: str, title: str = "") -> Optional[str]:
    """Draw ``train_loss`` and ``val_miou`` per epoch side by side into a PNG (rank 0; atomic)."""
    if history.rank != 0:
        return None
    w, h = 960, 400
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    if title:
        draw.text((10, 4), title, fill=(0, 0, 0), font=font)
    _panel(draw, (0, 16, w // 2, h), history.column("train_loss"), "train loss (epoch mean)", (31, 119, 180), font)
    _panel(draw, (w // 2, 16, w, h), history.column("val_miou"), "val mIoU", (214, 39, 40), font, y_range=(0.0, 1.0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path
