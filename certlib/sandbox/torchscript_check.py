"""Read a TorchScript archive's code before anything loads it: every name it calls must be on the allow-list.

TorchScript is code, not data: `torch.from_file` reads and writes files, `torch.save` writes them, and a class's
`__setstate__` runs while `torch.jit.load` reads the archive. The archive stores its program as Python-syntax source
(code/__torch__/...py); this module parses it (never runs it) and refuses the archive, naming each refused name with
its file and line, unless every

- operator (`torch.X`, `torch._C._nn.X`, `ops.aten.X`, `ops.prim.X`, a tensor method `x.X(...)`) is on the explicit
  allow-list of certlib.sandbox.op_allowlist (no out= argument),
- other attribute is declared by the archive's own classes (modules, parameters, constants) or a tensor property,
- bare call is a TorchScript builtin (int, len, annotate, ...), a function or class of the archive or a local alias,
- `getattr` reads a literal, declared attribute of a local object (scripted `nn.Sequential` children:
  getattr(self, "0")), never of `torch`, and `torch`/`ops` are never used as values.

Parsing hostile source is itself an attack surface (13 MiB of generated code holds the GIL for half a minute; deep
nesting raises RecursionError or MemoryError in the parser), so this runs only in the sandbox's check process
(certlib.sandbox._check_worker, started by certlib.sandbox.runner.check_in_sandbox before any worker), under its
memory cap and the parent's CHECK_TIMEOUT_S; that process has no torch, so the app sends it the operator names of
its torch build (`torch_operator_names`). Sizes are bounded before parsing, and every failure of the parser is a
ModelError with a specific message. The app process only calls `precheck` (O(size): the zip directory). The worker
is the second line: it still runs the model with no file access at all, in case a name slips through.
"""
from __future__ import annotations

import ast
import re
import zipfile
from functools import lru_cache

from certlib.sandbox import archive_check, formats as model_formats, op_allowlist
from certlib.errors import ModelError

MAX_CODE_FILE_BYTES = 512 << 10    # largest code file measured: ~60 KiB (torchvision's ViT-B/16, EfficientNet)
# All code files: measured 10-140 KiB for the registry's architectures (ViT-B/16, EfficientNet-B0 the largest), so
# 1 MiB leaves 7x room; parsing and checking costs 2.5-10 s and ~125 MiB per MiB on a busy 2-core machine (so the
# largest admitted code stays well inside CHECK_TIMEOUT_S and the worker's memory).
MAX_CODE_BYTES = 1 << 20
MAX_CODE_FILES = 2000
CHECK_TIMEOUT_S = 30.0             # the parent's limit for the check process's answer (parse + walk)

# Calls by bare name that scripted code emits, beyond functions and classes of the archive.
BUILTINS = frozenset("annotate unchecked_cast uninitialized isinstance int float bool str len range enumerate zip "
                     "min max abs round print list tuple dict divmod hash ord chr sum any all sorted".split())
# Tensor attributes that are not operators (prim::dtype, prim::device, ...): read, never called.
TENSOR_PROPERTIES = frozenset("shape dtype device data T mT ndim is_cuda requires_grad layout is_sparse".split())
# Methods of lists, dicts and strings that scripted code calls (append/split/format are operators already).
CONTAINER_METHODS = frozenset("extend insert pop index count clear reverse keys values items get copy join "
                              "startswith endswith lower upper strip".split())
# Module-level roots that are not local values: the archive's own code, its constant table, typing.
_ARCHIVE_ROOTS = frozenset({"__torch__", "CONSTANTS"})
_TYPING_NAMES = frozenset("Tensor List Tuple Dict Optional Union Any Final NoneType Module Future Device "
                          "number Enum".split())
_SUBMODULES = frozenset({"_nn", "_fft", "_linalg", "_special"})       # torch._C._nn.gelu is aten::gelu
_LITERAL_ATTR = re.compile(r"[A-Za-z0-9_][\w.-]*$")


# ------------------------------------------------------------------------------------------ the app side

def precheck(data: bytes) -> None:
    """What the app process checks before handing an upload to the worker: O(size) and cheap (magic bytes, the zip
    directory's size from its end record, then one parse of that bounded directory; nothing inflated or parsed)."""
    if data[:4] != b"PK\x03\x04":
        model_formats.refuse_unsafe(model_formats.detect_format(data))      # a pickle is named as such
        raise ModelError("the uploaded file is not TorchScript (a zip archive holding code/ and constants.pkl); "
                         "export with torch.jit.script(model).save(path), or upload safetensors or a .pt2")
    archive = archive_check.open_zip(data, "TorchScript archive")
    if len(archive.infolist()) > model_formats.MAX_ZIP_ENTRIES:
        raise ModelError(f"the TorchScript archive lists {len(archive.infolist()):,} files; the limit is "
                         f"{model_formats.MAX_ZIP_ENTRIES:,}")
    names = [i.filename for i in archive.infolist()]
    if not any("/code/" in n for n in names) or not any(n.endswith("constants.pkl") for n in names):
        if any(n.endswith("data.pkl") for n in names):
            model_formats.refuse_unsafe(model_formats.PICKLE)
        raise ModelError("the uploaded file is not TorchScript (a zip archive holding code/ and constants.pkl); "
                         "export with torch.jit.script(model).save(path), or upload safetensors or a .pt2")
    archive_check.check_declared_sizes(archive, "TorchScript archive")
    _code_infos(archive)                   # the declared code sizes: a refusal here needs no worker


def _code_infos(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The code members, their count and declared sizes within the limits (read from the directory only)."""
    code = [i for i in archive.infolist() if "/code/" in i.filename and i.filename.endswith(".py")]
    if not code:
        raise ModelError("the TorchScript archive holds no code (code/*.py); export with torch.jit.script(model)")
    if len(code) > MAX_CODE_FILES:
        raise ModelError(f"the TorchScript archive holds {len(code):,} code files; the limit is {MAX_CODE_FILES:,}")
    big = max(code, key=lambda i: i.file_size)
    if big.file_size > MAX_CODE_FILE_BYTES:
        raise ModelError(f"{big.filename[:100]} in the TorchScript archive is {big.file_size / 2**20:.1f} MiB of "
                         f"code; the limit is {MAX_CODE_FILE_BYTES >> 10} KiB a file")
    total = sum(i.file_size for i in code)
    if total > MAX_CODE_BYTES:
        raise ModelError(f"the TorchScript archive holds {total / 2**20:.1f} MiB of code; the limit is "
                         f"{MAX_CODE_BYTES >> 20} MiB (a classifier's scripted code is well under 1 MiB)")
    return code


# ------------------------------------------------------------------------------------------ the worker side

def check_archive(data: bytes, operators: frozenset[str] | None = None) -> None:
    """Raise ModelError when `data` is not a TorchScript archive (a zip with code/ and constants.pkl) within the
    size limits, or its code does not parse, or it names anything off the allow-list (each name with file and
    line). `operators`: every operator name of the torch build that will load the archive (torch_operator_names();
    read from torch when not given). Runs in the sandbox's check process, which has no torch of its own and is
    sent the names; costs O(code size) time and memory, bounded by MAX_CODE_BYTES."""
    operators = torch_operator_names() if operators is None else frozenset(operators)
    trees = {name: _parse(source, name) for name, source in _code_files(data)}
    defs, attrs = _declared_names(trees.values())
    problems = _shadowed_operators(defs, operators)
    for name, tree in trees.items():
        problems += _Checker(name, defs, attrs, operators).problems(tree)
    problems = list(dict.fromkeys(problems))
    if problems:
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
        raise ModelError("the model calls operators or attributes that are not allowed in uploaded models (only "
                         "the operators a classifier needs are: certlib.sandbox.op_allowlist): " + shown)


def _code_files(data: bytes) -> list[tuple[str, str]]:
    archive = archive_check.open_zip(data, "TorchScript archive")
    infos = archive.infolist()
    names = [i.filename for i in infos]
    if not any("/code/" in n for n in names) or not any(n.endswith("constants.pkl") for n in names):
        raise ModelError("the uploaded file is a torch.save() checkpoint, not TorchScript: certexplorer never "
                         "unpickles arbitrary files; export with torch.jit.script(model).save(path)")
    archive_check.check_declared_sizes(archive, "TorchScript archive")
    code = _code_infos(archive)
    return [(i.filename.split("/code/", 1)[1], _decode(i, archive)) for i in code]


def _decode(info: zipfile.ZipInfo, archive: zipfile.ZipFile) -> str:
    raw = archive_check.read_member(archive, info, MAX_CODE_FILE_BYTES, "TorchScript archive")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelError(f"{info.filename[:100]} in the TorchScript archive is not UTF-8 text (byte "
                         f"{exc.start})") from None
    if "\x00" in text:
        raise ModelError(f"{info.filename[:100]} in the TorchScript archive holds a NUL byte")
    return text


def _parse(source: str, filename: str) -> ast.Module:
    """ast.parse, with each way the parser gives up on hostile source named."""
    try:
        return ast.parse(source, filename)
    except SyntaxError as exc:
        raise ModelError(f"{filename} cannot be read as TorchScript code ({exc.msg}, line {exc.lineno})") from None
    except RecursionError:
        raise ModelError(f"{filename} nests expressions too deeply to be checked (the parser's recursion limit); "
                         "scripted models never do") from None
    except MemoryError:
        raise ModelError(f"{filename} is nested too deeply or too large to be parsed within the sandbox's "
                         "memory") from None
    except ValueError as exc:
        raise ModelError(f"{filename} cannot be read as TorchScript code ({exc})") from None


def _declared_names(trees) -> tuple[frozenset[str], frozenset[str]]:
    """(functions and classes, attributes) that the archive itself defines: methods, free functions, classes, and
    class attributes (modules, parameters, buffers, constants), including Sequential children declared as
    __annotations__["0"]."""
    defs, attrs = set(), set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                defs.add(node.name)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                attrs.add(node.target.id)
            elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and \
                    node.value.id == "__annotations__" and isinstance(node.slice, ast.Constant):
                attrs.add(str(node.slice.value))
            if isinstance(node, ast.ClassDef):      # class-level plain assignments (Final constants, __parameters__)
                attrs.update(t.id for stmt in node.body if isinstance(stmt, ast.Assign)
                             for t in stmt.targets if isinstance(t, ast.Name))
    return frozenset(defs), frozenset(attrs)


@lru_cache(maxsize=1)
def torch_operator_names() -> frozenset[str]:
    """Every aten/prim operator name of this torch build (without namespace): the names a tensor method call may
    reach. The app reads them once and sends them to the check process, which never imports torch."""
    import torch

    return frozenset(s.name.split("::", 1)[-1] for s in torch._C._jit_get_all_schemas())


def _refused_operator(name: str, operators: frozenset[str]) -> bool:
    """A name that, called on a tensor, would run an operator off the allow-list."""
    return name in operators and name not in op_allowlist.TORCHSCRIPT_ALLOWED_OPS


def _shadowed_operators(defs: frozenset[str], operators: frozenset[str]) -> list[str]:
    """A function the archive defines under the name of a refused operator would make `x.as_strided(...)` look
    like a call of the archive's own code: such names are refused (no classifier needs one)."""
    return [f"the archive defines {n!r}, the name of an operator that is not allowed"
            for n in sorted(defs) if _refused_operator(n, operators) and not _is_dunder(n)]


def _self_reads(tree: ast.Module) -> set[int]:
    """ids of `self.X` nodes inside methods of the archive's classes: there `self` is a module, so X is one of its
    declared attributes even when it is named like an operator (Conv2d's `stride`, Upsample's `mode`)."""
    found = set()
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        for method in (m for m in cls.body if isinstance(m, ast.FunctionDef)):
            if method.args.args and method.args.args[0].arg == "self":
                found.update(id(n) for n in ast.walk(method) if isinstance(n, ast.Attribute)
                             and isinstance(n.value, ast.Name) and n.value.id == "self")
    return found


def _dotted(node: ast.AST) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


class _Checker:
    """One file's names against the allow-list; iterative (ast.walk), so deep trees cost no recursion."""

    def __init__(self, filename: str, defs: frozenset[str], attrs: frozenset[str],
                 operators: frozenset[str]) -> None:
        self.filename, self.defs, self.attrs, self.operators = filename, defs, attrs, operators
        self.found: list[str] = []
        self.called: set[int] = set()
        self.on_self: set[int] = set()

    def problems(self, tree: ast.Module) -> list[str]:
        nodes = list(ast.walk(tree))      # walked once: the walk costs as much as the checks
        inner = set()           # Attribute/Name nodes that are the value of an Attribute: part of a longer chain
        for node in nodes:
            if isinstance(node, ast.Attribute):
                inner.add(id(node.value))
            elif isinstance(node, ast.Call):
                self.called.add(id(node.func))
        self.on_self = _self_reads(tree)
        assigned = {t.id for n in nodes if isinstance(n, (ast.Assign, ast.AnnAssign, ast.For))
                    for t in ast.walk(n.targets[0] if isinstance(n, ast.Assign) else n.target)
                    if isinstance(t, ast.Name)}
        for node in nodes:
            if isinstance(node, ast.Attribute) and id(node) not in inner:
                self._chain(node)
            elif isinstance(node, ast.Name) and node.id in ("torch", "ops") and id(node) not in inner:
                self._refuse(f"{node.id!r} used as a value", node)
            elif isinstance(node, ast.Call):
                self._call(node, assigned)
            elif isinstance(node, (ast.Lambda, ast.Global, ast.Nonlocal, ast.Yield, ast.YieldFrom, ast.Await,
                                   ast.AsyncFunctionDef)):
                self._refuse(type(node).__name__.lower(), node)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                self._imports(node)
        return self.found

    def _refuse(self, what: str, node: ast.AST) -> None:
        self.found.append(f"{what} ({self.filename}, line {getattr(node, 'lineno', '?')})")

    def _imports(self, node: ast.Import | ast.ImportFrom) -> None:
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        for module in modules:
            if module.split(".")[0] not in ("__torch__", "torch", "typing"):
                self._refuse(f"import of {module!r}", node)

    def _chain(self, node: ast.Attribute) -> None:
        parts = _dotted(node)
        if parts is None:                       # (expression).name: the name alone can be judged
            if not self._member_allowed(node.attr, id(node) in self.called, False):
                self._refuse(f"attribute or method {node.attr!r}", node)
            return
        root, rest = parts[0], parts[1:]
        if root == "torch":
            self._torch_chain(rest, node)
        elif root == "ops":
            self._ops_chain(rest, node)
        elif root in _ARCHIVE_ROOTS:
            if any(_is_dunder(p) for p in rest):
                self._refuse(f"{'.'.join(parts)!r}", node)
        else:
            links = []                          # the chain's Attribute nodes, innermost first
            link = node
            while isinstance(link, ast.Attribute):
                links.append(link)
                link = link.value
            for link in reversed(links):
                if not self._member_allowed(link.attr, id(link) in self.called, id(link) in self.on_self):
                    self._refuse(f"attribute or method {link.attr!r} of {root!r}", node)

    def _torch_chain(self, rest: list[str], node: ast.AST) -> None:
        if len(rest) == 3 and rest[0] == "ops":
            return self._ops_chain(rest[1:], node)
        if len(rest) == 3 and rest[:2] in (["_C", s] for s in _SUBMODULES):
            op = rest[2]
        elif len(rest) == 1:
            op = rest[0]
        else:
            return self._refuse(f"'torch.{'.'.join(rest)}'", node)
        if not op_allowlist.torchscript_op_allowed("aten", op):
            self._refuse(f"operator 'aten::{op}'", node)

    def _ops_chain(self, rest: list[str], node: ast.AST) -> None:
        if len(rest) != 2:
            return self._refuse(f"'ops.{'.'.join(rest)}'", node)
        if not op_allowlist.torchscript_op_allowed(rest[0], rest[1]):
            self._refuse(f"operator '{rest[0]}::{rest[1]}'", node)

    def _member_allowed(self, name: str, called: bool, on_self: bool) -> bool:
        """A method call must be an allowed operator, a container method or the archive's own function; a read
        may also be a declared attribute or a tensor property, but one named like a refused operator only on
        `self` (elsewhere the receiver may be a tensor, and `f = x.as_strided` is valid TorchScript)."""
        if _is_dunder(name):
            return name in ("__annotations__", "__parameters__", "__buffers__")
        if op_allowlist.torchscript_op_allowed("aten", name) or name in CONTAINER_METHODS or name in self.defs:
            return True
        if called:
            return False
        return name in TENSOR_PROPERTIES or (name in self.attrs and (on_self or not _refused_operator(name, self.operators)))

    def _call(self, node: ast.Call, assigned: set[str]) -> None:
        if any(k.arg == "out" for k in node.keywords):
            self._refuse("an out= argument (writes into a given tensor)", node)
        if not isinstance(node.func, ast.Name):
            return                              # attribute calls are judged as chains
        name = node.func.id
        if name == "getattr":
            return self._getattr(node)
        if name in BUILTINS or name in self.defs or name in assigned or name in _TYPING_NAMES:
            return
        self._refuse(f"call of {name!r}", node)

    def _getattr(self, node: ast.Call) -> None:
        """Only the form scripting emits: getattr(local, "<declared attribute>"), e.g. getattr(self, "0")."""
        args = node.args
        ok = (len(args) == 2 and not node.keywords and isinstance(args[0], ast.Name)
              and args[0].id not in ("torch", "ops") and args[0].id not in _ARCHIVE_ROOTS
              and isinstance(args[1], ast.Constant) and isinstance(args[1].value, str)
              and _LITERAL_ATTR.match(args[1].value) and not _is_dunder(args[1].value)
              and args[1].value in self.attrs)
        if not ok:
            target = args[0].id if args and isinstance(args[0], ast.Name) else "…"
            attr = args[1].value if len(args) > 1 and isinstance(args[1], ast.Constant) else "…"
            self._refuse(f"getattr({target}, {attr!r}) (attribute access by string)", node)
