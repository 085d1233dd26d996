"""The repository stands alone: no file points to material outside it, and the parity fixture is complete."""

import json
import os

import pytest
from _paths import REPO, fixture_file

# spelled in pieces so that this file does not match itself
OUTSIDE = (
    "LSEG_" + "REFERENCE",
    "PLATFORM_" + "NOTES",
    "../" + "shared",
    "LSEG_" + "SHARED_DIR",
    "make_" + "checkpoint.py",
)
TEXT = (".py", ".md", ".yaml", ".yml", ".toml", ".cfg", ".txt", ".json", ".sh")


def _text_files():
    for root, dirs, files in os.walk(REPO):
        top = root == str(REPO)  # run outputs (output*/, data/, build/) live at the top level only
        dirs[:] = [
            d
            for d in dirs
            if not d.startswith(".")
            and d != "__pycache__"
            and not (top and (d.startswith("output") or d in ("data", "build", "dist")))
        ]
        for f in files:
            if f.endswith(TEXT) or f == "run":
                yield os.path.join(root, f)


def test_no_reference_to_files_outside_the_repository():
    hits = []
    for path in _text_files():
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        hits += [f"{os.path.relpath(path, REPO)}: {word}" for word in OUTSIDE if word in text]
    assert not hits, "\n".join(hits)


@pytest.mark.parametrize("case", ["expected_clip_vitb32_384_seed0", "expected_zs_clip_resnet101_seed0"])
def test_parity_fixture_matches_its_sidecar(case):
    import hashlib

    meta = json.loads(fixture_file("parity", case + ".json").read_text(encoding="utf-8"))
    data = fixture_file("parity", case + ".npz").read_bytes()
    assert len(data) == meta["bytes"] and hashlib.sha256(data).hexdigest() == meta["sha256"]
    assert fixture_file("parity", f"manifest_{meta['variant']}.json").is_file()
