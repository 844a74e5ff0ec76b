"""examples/certify_your_model.ipynb runs top to bottom (nbclient), in a kernel on this interpreter, and the
README's "Use it from Python" section is the notebook's first code cell."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "examples" / "certify_your_model.ipynb"


def _first_code_cell() -> str:
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    return next(c.source for c in nb.cells if c.cell_type == "code")


def test_readme_python_section_is_the_notebooks_first_cell():
    readme = (ROOT / "README.md").read_text()
    assert f"```python\n{_first_code_cell()}\n```" in readme


def test_example_notebook_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    # A kernel spec of this very interpreter, with the repository importable: a "python3" spec installed elsewhere
    # on the machine could point at another Python.
    spec = tmp_path / "jupyter" / "kernels" / "certlib-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "certlib test", "language": "python", "env": {"PYTHONPATH": str(ROOT)}}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, kernel_name="certlib-test", timeout=300,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = {i: c.outputs for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    html = [o for cell in outputs.values() for o in cell if "text/html" in o.get("data", {})]
    assert len(html) >= 2 and all("data:image/png;base64," in o["data"]["text/html"] for o in html)
    assert "(True, True)" in str(outputs)                          # the save/load round trip
    assert (tmp_path / "chelsea.npz").is_file()
