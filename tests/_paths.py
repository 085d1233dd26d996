"""Where the tests find the repository and the parity fixture (``tests/fixtures/parity``, part of the repository)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


def fixture_file(*parts: str) -> Path:
    """A file under ``tests/fixtures``; a missing one is an error (the fixture is part of every clone)."""
    path = FIXTURES.joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(f"test fixture missing: {path} (the clone is incomplete; check out tests/fixtures)")
    return path
