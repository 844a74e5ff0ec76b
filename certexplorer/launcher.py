"""`certexplorer [streamlit run options]`: serve the app with Streamlit, e.g. `certexplorer --server.port 8600`.

Streamlit gets the path of the installed (or checked-out) app.py, so it finds pages/ beside it (its multipage
discovery looks there) and reads the app's .streamlit/config.toml beside it too (Streamlit reads a config file next
to the main script, after the user's and the working directory's). The app itself imports `certlib` and `ui` as
top-level packages, which an install puts on the path; Streamlit adds app.py's folder to the path for the rest.
"""
from __future__ import annotations

import sys
from pathlib import Path

from certlib import resources


def app_script() -> Path:
    """The app's entry script: certexplorer/app/app.py when installed, the checkout's app.py otherwise."""
    script = resources.project_root() / "app.py"
    if not script.is_file():
        raise FileNotFoundError(f"certexplorer's app.py is not at {script}: reinstall the package (pip install .)")
    return script


def main(argv: list[str] | None = None) -> None:
    """Run `streamlit run <app.py> [argv]` in this process (argv: options such as --server.port 8600)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] in (["-h"], ["--help"]):
        print(__doc__.strip().splitlines()[0])
        print(f"app: {app_script()}\nStreamlit's options: streamlit run --help")
        return
    from streamlit.web import cli as streamlit_cli   # imported here: --help needs no Streamlit

    sys.argv = ["streamlit", "run", str(app_script()), *args]
    sys.exit(streamlit_cli.main())
