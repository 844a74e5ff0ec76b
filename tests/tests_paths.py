"""Paths every test may need, independent of the test's own folder (tests/<package>/ mirrors certlib/<package>/)."""
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
APP = str(ROOT / "app.py")
FIXTURES = TESTS / "fixtures"
