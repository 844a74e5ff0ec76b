"""`pip install .`: the wheel holds the library, the app (app.py with pages/ beside it, ui, the bundled weights in
assets/, the app's Streamlit config, the measured defaults) and the `certexplorer` command, which serves the
installed app from any folder.

The wheel is built from a copy of the checkout (`python -m build --wheel --no-isolation`: no download, and no build/
or *.egg-info left in the working tree), installed with `pip install --no-deps --target` (the dependencies are this
venv's) and run with only that folder on PYTHONPATH, from another folder.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Not part of a build's input: what the copy leaves out.
SKIPPED_TOP = {".git", ".venv", "tests", "docs", "examples", "build", "dist", "test-artifacts", ".whl", ".gl"}
SKIPPED_ANYWHERE = ("__pycache__", "*.egg-info", ".pytest_cache", "*.pyc")


def _ignore(folder: str, names: list[str]) -> set[str]:
    skipped = set(shutil.ignore_patterns(*SKIPPED_ANYWHERE)(folder, names))
    if Path(folder).resolve() == ROOT:
        skipped |= SKIPPED_TOP & set(names)
    return skipped


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source") / "certexplorer"
    shutil.copytree(ROOT, source, ignore=_ignore)
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out),
                           str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    wheels = list(out.glob("certexplorer-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_the_wheel_holds_the_library_the_app_its_weights_and_the_command(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    app = "certexplorer/app/"
    expected = {f"{app}app.py", f"{app}.streamlit/config.toml", f"{app}bench/results/defaults.json",
                "certexplorer/launcher.py", "certexplorer/__main__.py"}
    expected |= {f"{app}pages/{p.name}" for p in (ROOT / "pages").glob("*.py")}
    expected |= {f"{app}assets/{p.name}" for p in (ROOT / "assets").iterdir() if p.is_file()}
    # Every module of the library and the UI, sub-packages included (a new one must be listed in pyproject.toml).
    expected |= {p.relative_to(ROOT).as_posix() for pkg in ("certlib", "ui") for p in (ROOT / pkg).rglob("*.py")
                 if "__pycache__" not in p.parts}
    assert not expected - names, sorted(expected - names)
    assert {f"{app}assets/digits_cnn_sigma0.25.pt", f"{app}assets/digits_cnn.json"} <= names   # bundled weights
    entry_points = next(zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "certexplorer = certexplorer.launcher:main" in entry_points


def test_the_packages_dependencies_are_requirements_txts_pins():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {line.split("==")[0].lower(): line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
            if "==" in line and not line.lstrip().startswith("#")}
    listed = declared["dependencies"] + [d for extra in declared["optional-dependencies"].values() for d in extra]
    for dependency in listed:
        name = dependency.split("==")[0].lower()
        assert pins.get(name) == dependency, (dependency, pins.get(name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _health(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
            return response.read().decode()
    except OSError:
        return None


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--quiet",
                           "--disable-pip-version-check", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return target


def _installed_env(target: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    env["PYTHONPATH"] = str(target)                       # the installed copy only, never the checkout
    return env


def test_the_certexplorer_command_serves_the_installed_app_from_another_folder(installed, tmp_path):
    port = _free_port()
    server = subprocess.Popen([str(installed / "bin" / "certexplorer"), "--server.port", str(port),
                               "--server.address", "127.0.0.1"], cwd=tmp_path, env=_installed_env(installed),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None and _health(port) != "ok":
            time.sleep(0.25)
        answer = _health(port)
    finally:
        server.terminate()
        try:
            output = server.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            server.kill()
            output = server.communicate()[0]
    assert answer == "ok", output[-3000:]


def test_the_installed_app_runs_on_its_own_files(installed, tmp_path):
    # The home page's script, run headless from the installed copy: the bundled weights, the measured defaults and
    # the logo are read from certexplorer/app/, and certlib is the installed one.
    script = f"""
from pathlib import Path
import certlib
from certlib import resources
from certlib.attributions import defaults
from certlib.models import registry as models
from streamlit.testing.v1 import AppTest
app = Path({str(installed)!r}) / "certexplorer" / "app"
assert Path(certlib.__file__).is_relative_to({str(installed)!r}), certlib.__file__
assert resources.project_root() == app and models.ASSETS == app / "assets"
assert models.get_spec(models.default_model_key()).available and defaults.RESULTS_PATH.is_file()
at = AppTest.from_file(str(app / "app.py"), default_timeout=120).run()
assert not at.exception, [e.message for e in at.exception]
print("title:", [t.value for t in at.title])
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=_installed_env(installed),
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "title: ['certexplorer']" in done.stdout
