"""Where the project's files outside the Python packages are: bundled weights and images (assets/), the app's
entry script and pages, the measured defaults (bench/results/defaults.json).

In a checkout they sit beside certlib/ at the repository root. An installed certexplorer (`pip install .`) keeps
certlib/ and ui/ as top-level packages and ships those files as data of its launcher package, under
certexplorer/app/ beside certlib/ (pyproject.toml maps the repository root there, with pages/ beside app.py, as
Streamlit's multipage discovery needs). Both are found from this file's position: nothing is imported.
"""
from __future__ import annotations

from pathlib import Path

PACKAGES_ROOT = Path(__file__).resolve().parent.parent     # the checkout's root, or site-packages when installed
INSTALLED_APP = PACKAGES_ROOT / "certexplorer" / "app"


def project_root() -> Path:
    """The folder holding assets/, app.py, pages/ and bench/results/: the installed app's, else the checkout."""
    return INSTALLED_APP if (INSTALLED_APP / "app.py").is_file() else PACKAGES_ROOT


def assets_dir() -> Path:
    return project_root() / "assets"
