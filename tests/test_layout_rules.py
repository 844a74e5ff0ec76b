"""The code's layout rules (issue #28, item 4), checked on the source with `ast`:

- a page imports from the top-level `certlib` API and at most ONE certlib sub-package (its domain); everything else
  it needs comes through the app's adapter layer, ui/;
- no function in certlib/, ui/, pages/ or app.py is longer than 60 lines.

The last tests feed the checks synthetic sources, so that a check that can no longer fail is caught too.
"""
import ast
from pathlib import Path

import pytest

import certlib

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "app.py").is_file())
CERTLIB = ROOT / "certlib"
PAGES = sorted((ROOT / "pages").glob("*.py"))
MAX_FUNCTION_LINES = 60


def _is_certlib_module(name: str) -> bool:
    """certlib/<name>.py or certlib/<name>/: a module of its own, not a name the top level re-exports."""
    return (CERTLIB / f"{name}.py").is_file() or (CERTLIB / name / "__init__.py").is_file()


def certlib_parts(source: str) -> set[str]:
    """The certlib sub-packages (or top-level modules) a source imports from, at any depth of the code:
    `certlib.X…` counts as X, and `from certlib import name` counts as `name` only when that is a module of its own
    (`from certlib import CertlibError` uses the top-level API, `from certlib import viz` uses the module viz)."""
    parts: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "certlib":
                parts |= {alias.name for alias in node.names if _is_certlib_module(alias.name)}
                continue
            modules = [node.module]
        else:
            continue
        for module in modules:
            head, _, rest = module.partition(".")
            if head == "certlib" and rest:
                parts.add(rest.split(".")[0])
    return parts


def top_level_names(source: str) -> set[str]:
    """The names a source takes from the top-level certlib API (`from certlib import X`, X not a module)."""
    return {alias.name for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "certlib"
            for alias in node.names if not _is_certlib_module(alias.name)}


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int, int]]:
    """(qualified name, first line, length in lines) of every function or method longer than `limit` lines,
    counted from its `def` to its last line (decorators not counted)."""
    found: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    length = child.end_lineno - child.lineno + 1
                    if length > limit:
                        found.append((name, child.lineno, length))
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def _sources() -> list[Path]:
    files = [*CERTLIB.rglob("*.py"), *(ROOT / "ui").rglob("*.py"), *PAGES, ROOT / "app.py"]
    return sorted(f for f in files if "__pycache__" not in f.parts)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_a_page_imports_at_most_one_certlib_sub_package(page):
    source = page.read_text(encoding="utf-8")
    parts = certlib_parts(source)
    assert len(parts) <= 1, (f"{page.relative_to(ROOT)} imports from {len(parts)} certlib sub-packages "
                             f"({', '.join(sorted(parts))}): keep its domain's and reach the rest through ui/")
    missing = top_level_names(source) - set(dir(certlib))
    assert not missing, f"{page.relative_to(ROOT)} imports {sorted(missing)}, which the top-level certlib lacks"


def test_every_page_is_checked():
    assert {p.name for p in PAGES} >= {"certified_pixels.py", "compare.py", "learn.py", "metrics.py",
                                       "sparsified_smoothgrad.py", "uniform_smoothing.py"}


def test_no_function_is_longer_than_60_lines():
    sources = _sources()
    assert len(sources) > 50 and ROOT / "app.py" in sources          # the walk found the code
    too_long = [f"{path.relative_to(ROOT)}:{line} {name} ({length} lines)"
                for path in sources for name, line, length in long_functions(path.read_text(encoding="utf-8"))]
    assert not too_long, f"functions longer than {MAX_FUNCTION_LINES} lines: " + "; ".join(too_long)


def test_the_import_rule_detects_a_second_sub_package():
    assert certlib_parts("from certlib.pixel import cert\nfrom certlib.pixel.check import check_certificate\n") \
        == {"pixel"}
    assert certlib_parts("from certlib import SHOWN_ERRORS, describe_error\nimport certlib\n") == set()
    assert certlib_parts("from certlib.pixel import cert\nfrom certlib.data import images\n") == {"pixel", "data"}
    assert certlib_parts("from certlib import viz\nfrom certlib.sparse import viz as sv\n") == {"viz", "sparse"}
    assert certlib_parts("def f():\n    import certlib.runs.export\n") == {"runs"}      # inside a function too
    assert certlib_parts("from ui import runs\nfrom . import certlib\n") == set()        # not certlib's packages
    assert top_level_names("from certlib import CertlibError, viz\n") == {"CertlibError"}


def test_the_length_rule_detects_a_long_function():
    def function(name: str, lines: int, indent: str = "") -> str:
        return f"{indent}def {name}():\n" + f"{indent}    x = 1\n" * (lines - 1)

    assert long_functions(function("fits", 60)) == []
    assert long_functions(function("too_long", 61)) == [("too_long", 1, 61)]
    nested = "class Engine:\n" + function("run", 70, "    ") + "    async def stop(self):\n        pass\n"
    assert long_functions(nested) == [("Engine.run", 2, 70)]
    inner = "def outer():\n" + function("inner", 62, "    ")
    assert long_functions(inner) == [("outer", 1, 63), ("outer.inner", 2, 62)]
