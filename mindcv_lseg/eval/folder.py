"""Segment a list of image files into an output folder, one image at a time, surviving bad images.

Used by ``tools/infer.py``. Every per-image failure (unreadable or truncated file, decompression bomb, unsupported
mode, an error or out-of-memory during inference, a write error) is reported with the file's path and the reason;
the remaining images are processed; :func:`segment_files` returns the failures so the caller can print a summary and
exit with :data:`EXIT_SOME_FAILED`.
"""

import os
import sys
import time
from typing import Callable, List, Optional, Sequence, Tuple

__all__ = ["EXIT_SOME_FAILED", "list_images", "check_output_dir", "output_names", "segment_files"]

# exit status of tools/infer.py when at least one image failed (the others' outputs are written); 2 = bad arguments
EXIT_SOME_FAILED = 3


def list_images(path: str) -> List[str]:
    """Image paths for a file or a folder (sorted, non-recursive). Raises ValueError with a specific message."""
    from .api import IMAGE_EXTENSIONS

    if not path:
        raise ValueError("no input given: pass --input photo.jpg or --input folder/")
    if os.path.isdir(path):
        files = sorted(
            os.path.join(path, f)
            for f in os.listdir(path)
            if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, f))
        )
        if not files:
            raise ValueError(f"folder {path} has no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
        return files
    if not os.path.isfile(path):
        raise ValueError(f"input not found: {path}")
    return [path]


def check_output_dir(path: str) -> None:
    """Check (without creating anything) that ``path`` can be the output folder. Raises ValueError if not."""
    if not path:
        raise ValueError("no output folder given: pass --output FOLDER")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--output {path} is a file, not a folder: pass a folder path (it is created if missing)")
    parent = path
    while parent and not os.path.exists(parent):  # the first existing ancestor must be a writable folder
        parent = os.path.dirname(parent.rstrip(os.sep))
    parent = parent or "."
    if not os.path.isdir(parent):
        raise ValueError(f"--output {path}: {parent} is a file, so the folder cannot be created")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--output {path}: no permission to write in {parent}")


def output_names(paths: Sequence[str]) -> List[str]:
    """One output stem per input: the file's stem, or ``name_ext`` when two inputs share a stem."""
    names, used = [], set()
    for path in paths:
        name = os.path.splitext(os.path.basename(path))[0]
        if name in used:
            name = os.path.basename(path).replace(".", "_")
        used.add(name)
        names.append(name)
    return names


def _reason(e: BaseException) -> str:
    if isinstance(e, MemoryError):
        return "out of memory (try --max_size, or --eval_mode slide)"
    first = (str(e).strip().splitlines() or [""])[0]
    if isinstance(e, (ValueError, OSError)) and first:  # the package's own messages name the file and the problem
        return first
    return f"{type(e).__name__}: {first}"


def segment_files(
    net,
    paths: Sequence[str],
    labels: Sequence[str],
    out_dir: str,
    config,
    text_cache,
    save_embeddings: bool = False,
    alpha: float = 0.5,
    max_size: Optional[int] = None,
    echo: Callable[[str], None] = print,
) -> Tuple[int, List[Tuple[str, str]]]:
    """Segment ``paths`` one by one and write their outputs (:func:`mindcv_lseg.eval.api.save_result`).

    A failing image is reported on stderr (``[i/n] FAILED path: reason``) and skipped; ``KeyboardInterrupt`` stops
    the loop. Returns ``(number segmented, [(path, reason), ...] of the failures)``.
    """
    from .api import save_result, segment

    failures = []
    n = len(paths)
    for i, (path, name) in enumerate(zip(paths, output_names(paths))):
        t0 = time.time()
        try:
            res = segment(
                net,
                path,
                labels,
                config=config,
                text_cache=text_cache,
                return_embeddings=save_embeddings,
                alpha=alpha,
                max_size=max_size,
            )
            for note in res.notes:
                echo(f"[{i + 1}/{n}] {path}: {note}")
            written = save_result(res, out_dir, name, save_embeddings=save_embeddings)
        except Exception as e:  # noqa: BLE001 -- one bad image must not stop the folder; the reason is reported
            failures.append((path, _reason(e)))
            print(f"[{i + 1}/{n}] FAILED {path}: {failures[-1][1]}", file=sys.stderr, flush=True)
            continue
        present = ", ".join(labels[k] for k in sorted(set(res.label_map.ravel().tolist())))
        echo(
            f"[{i + 1}/{n}] {path} ({res.image.size[0]}x{res.image.size[1]}, {time.time() - t0:.1f}s, "
            f"{res.mode}): {present} -> {', '.join(os.path.basename(p) for p in written)}"
        )
    return n - len(failures), failures
