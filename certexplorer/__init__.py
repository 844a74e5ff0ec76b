"""The certexplorer app as an installed command: `certexplorer` starts the Streamlit app (app.py and its pages).

The library is `certlib`; this package only launches the app. Installed (`pip install .`), the app's files (app.py,
pages/, assets/ with the bundled weights, .streamlit/config.toml, bench/results/defaults.json) are data of the
subpackage certexplorer.app, mapped from the repository root by pyproject.toml; in a checkout they are the root
itself. certlib.resources finds either.
"""
