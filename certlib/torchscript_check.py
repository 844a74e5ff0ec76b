"""Read a TorchScript archive's code before anything loads it: every operator it calls must be on the allow-list.

TorchScript is code, not data: `torch.from_file` reads and writes files, `torch.save` writes them, and a class's
`__setstate__` runs while `torch.jit.load` reads the archive. The archive stores its program as Python-syntax source
(code/__torch__/...py); this module parses it (never runs it) and refuses the archive when a call names

- an operator outside the `aten` and `prim` namespaces (custom or distributed ops: c10d, profiler, ...),
- a `torch.X` that is not an aten/prim operator of this torch build,
- an operator of the deny-list (files, processes, RPC, futures, raw storage): DENIED_OPS, by name, also as a
  method (`t.set_(...)`),

with the operator's name in the message. The sandbox (certlib.sandbox) is the second line: it still runs the model
with no file access at all, in case an operator slips through.
"""
from __future__ import annotations

import ast
import io
import zipfile
from functools import lru_cache

from certlib.errors import ModelError

ALLOWED_NAMESPACES = ("aten", "prim")
# Operators that reach outside the tensor world: files, the process, threads/futures, RPC, raw storage, global state.
DENIED_OPS = frozenset({
    "from_file", "save", "load", "_load", "_save", "set_", "set_data", "_set_item_storage", "record_stream",
    "rpc_async", "rpc_sync", "rpc_remote", "fork", "_fork", "wait", "awaitable", "awaitable_nowait",
    "awaitable_wait", "_awaitable", "_awaitable_wait", "_awaitable_nowait", "_cufft_set_plan_cache_max_size",
    "_cufft_clear_plan_cache", "set_grad_enabled", "_set_print_stack_traces_on_fatal_signal", "system", "popen",
    "getenv", "environ", "open",
})
MAX_CODE_BYTES = 16 << 20


@lru_cache(maxsize=1)
def allowed_ops() -> frozenset[str]:
    """Names of this torch build's aten and prim operators, less DENIED_OPS."""
    import torch

    names = {s.name.split("::", 1)[1] for s in torch._C._jit_get_all_schemas()
             if s.name.split("::", 1)[0] in ALLOWED_NAMESPACES}
    names |= {n.split("::", 1)[1] for n in torch._C._jit_get_operation_names() if n.startswith("prim::")} \
        if hasattr(torch._C, "_jit_get_operation_names") else set()
    return frozenset(names - DENIED_OPS)


def _dotted(node: ast.AST) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


def _problems_in(source: str, filename: str) -> list[str]:
    try:
        tree = ast.parse(source, filename)
    except SyntaxError as exc:
        return [f"{filename} cannot be read as TorchScript code ({exc.msg})"]
    allowed, problems = allowed_ops(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in DENIED_OPS:
            shown = ".".join(_dotted(node) or ["…", node.attr])
            problems.append(f"operator {shown!r} ({filename}, line {node.lineno})")
            continue
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if not name or name[-1] in DENIED_OPS:    # reported as an attribute above
            continue
        if name[:2] == ["torch", "ops"]:
            name = name[1:]
        if name[0] == "ops" and len(name) == 3:
            ns, op = name[1], name[2]
            if ns not in ALLOWED_NAMESPACES or op not in allowed:
                problems.append(f"operator '{ns}::{op}' ({filename}, line {node.lineno})")
        elif name[0] == "ops":
            problems.append(f"operator {'.'.join(name)!r} ({filename}, line {node.lineno})")
        elif name[0] == "torch" and len(name) == 2 and name[1] not in allowed:
            problems.append(f"operator 'torch.{name[1]}' ({filename}, line {node.lineno})")
        elif name[0] == "torch" and len(name) > 2 and name[1] not in ("jit", "_C", "nn", "Tensor"):
            problems.append(f"call {'.'.join(name)!r} ({filename}, line {node.lineno})")
        elif name[0] == "torch" and len(name) > 2 and name[1] == "_C":
            problems.append(f"call {'.'.join(name)!r} ({filename}, line {node.lineno})")
    return problems


def _open_archive(data: bytes) -> zipfile.ZipFile:
    """The TorchScript zip, or a ModelError *before* torch sees anything else: no pickle is ever unpickled here."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise ModelError("the uploaded file is not a TorchScript archive (not a zip file); "
                         "export with torch.jit.script(model) or torch.jit.trace(model, x), then .save(path)")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except zipfile.BadZipFile as exc:
        raise ModelError(f"the uploaded file is not a readable TorchScript archive: {exc}") from None
    if not any("/code/" in n for n in names) or not any(n.endswith("constants.pkl") for n in names):
        raise ModelError("the uploaded file is a torch.save() checkpoint, not TorchScript: certexplorer never "
                         "unpickles arbitrary files; export with torch.jit.script(model).save(path)")
    return archive


def check_archive(data: bytes) -> None:
    """Raise ModelError when `data` is not a TorchScript archive (a zip with code/ and constants.pkl), or name
    every refused operator of its code."""
    archive = _open_archive(data)
    infos = [i for i in archive.infolist() if "/code/" in i.filename and i.filename.endswith(".py")]
    if not infos:
        raise ModelError("the TorchScript archive holds no code (code/*.py); export with torch.jit.script(model)")
    if sum(i.file_size for i in infos) > MAX_CODE_BYTES:
        raise ModelError(f"the TorchScript archive's code is larger than {MAX_CODE_BYTES >> 20} MiB")
    problems = []
    for info in infos:
        try:
            source = archive.read(info).decode("utf-8")
        except (UnicodeDecodeError, zipfile.BadZipFile, OSError) as exc:
            raise ModelError(f"{info.filename} in the TorchScript archive cannot be read: {exc}") from None
        problems += _problems_in(source, info.filename.split("/code/", 1)[1])
    problems = list(dict.fromkeys(problems))
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ModelError("the model calls operators that are not allowed in uploaded models (files, processes, "
                         f"network or custom operators): {shown}")
