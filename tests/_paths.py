"""Where the tests find the repository and the read-only reference material (``shared/``)."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """The reference folder: $LSEG_SHARED_DIR, else ``<repo>/../shared`` (CI clones the repo beside a copy of it)."""
    return Path(os.environ.get("LSEG_SHARED_DIR") or REPO.parent / "shared")


def shared_file(*parts: str) -> Path:
    """A file under ``shared/``; skips the calling test with the path in the reason if it is absent."""
    path = shared_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference file not found: {path} (set LSEG_SHARED_DIR to the shared/ folder)")
    return path
