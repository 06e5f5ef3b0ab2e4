"""Where things are in the checkout, for tests that read sources or data (one place, not per file)."""

from pathlib import Path

HELPERS = Path(__file__).resolve().parent
TESTS = HELPERS.parent
REPO_ROOT = TESTS.parent
CSRC = REPO_ROOT / "csrc"
TEST_DATA = TESTS / "data"
