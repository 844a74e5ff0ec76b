"""What a `torch.export` program (.pt2) may contain, checked before and after `torch.export.load` in the sandbox.

A .pt2 is a zip: a JSON graph (models/<name>.json), raw tensor bytes, and a few pickles. Loading it is not inert:
`torch.export.load` unpickles weights and constants marked `use_pickle` with `weights_only=False`, falls back to
`weights_only=False` for sample inputs that the safe unpickler refuses, and evaluates every symbolic shape expression
(`expr_str`) with `sympy.sympify`, i.e. Python's eval. So, in the worker and before torch.export.load sees the
bytes (`check_archive`):

- no pickled weight, constant or custom object, no legacy weights file; sample inputs that load with weights_only;
- every `expr_str` (and symbol name) written in sympy's own small grammar (`_check_expression`): no attribute
  access, no dunder, no name outside sympy's and torch's shape functions;
- every node's target on the allow-list (`refused_targets`).

After loading, the deserialized graph is checked again (certlib.sandbox._export_worker), so that what runs is what was read.

EXPORT_ALLOWED_OPS is explicit: the ATen operators a classifier needs, named here (DESIGN §13: never "all minus a
deny-list"). It is certlib.sandbox.op_allowlist's list, shared with the TorchScript check; it has no
view/alias op that skips bounds checks (as_strided, _reshape_alias, _unsafe_view), no uninitialised memory (empty*),
no sparse, storage, file or process op. Everything is pure Python (no torch import) so the app can list it cheaply.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from typing import Iterable, Iterator

from certlib.sandbox import archive_check, op_allowlist
from certlib.errors import ModelError

# ----------------------------------------------------------------------------------------- the allow-list

# The list itself lives in certlib.sandbox.op_allowlist, shared with the TorchScript check.
_OPS_BY_PURPOSE = op_allowlist.ATEN_BY_PURPOSE
EXPORT_ALLOWED_OPS: frozenset[str] = op_allowlist.ALLOWED_ATEN_OPS
# Python-level targets of an exported graph: tuple indexing and arithmetic on symbolic sizes.
PYTHON_TARGETS = frozenset(f"_operator.{f}" for f in ("getitem", "add", "sub", "mul", "floordiv", "truediv", "mod",
                                                      "neg", "pow", "eq", "ne", "lt", "le", "gt", "ge")) | \
    frozenset(f"math.{f}" for f in ("ceil", "floor", "sqrt", "trunc"))


def allowed_by_purpose() -> dict[str, tuple[str, ...]]:
    """The allow-list grouped by what a classifier needs it for (shown in docs and tests)."""
    return {purpose: tuple(ops.split()) for purpose, ops in _OPS_BY_PURPOSE.items()}


def target_refused(target: str) -> bool:
    """True unless `target` ("torch.ops.aten.conv2d.default", "aten.conv2d.default", "_operator.getitem") is on
    the allow-list. `out=` overloads write into a given tensor and are refused."""
    if target in PYTHON_TARGETS:
        return False
    name = target[len("torch.ops."):] if target.startswith("torch.ops.") else target
    parts = name.split(".")
    if len(parts) != 3 or parts[0] != "aten":
        return True
    op, overload = parts[1], parts[2]
    return op not in EXPORT_ALLOWED_OPS or overload == "out" or overload.endswith("_out")


def refused_targets(targets: Iterable[str]) -> list[str]:
    """The refused ones among `targets`, each once, in order."""
    return list(dict.fromkeys(t for t in targets if target_refused(t)))


def refusal_message(refused: list[str]) -> str:
    shown = ", ".join(refused[:8]) + (f" and {len(refused) - 8} more" if len(refused) > 8 else "")
    return (f"the exported program calls operators that are not on the allow-list of uploaded models: {shown} "
            "(allowed: convolutions, linear, norms, activations, pooling, elementwise math, reductions and "
            "bounds-checked shape ops)")


# ------------------------------------------------------------------------------ symbolic shape expressions

# sympy's constructors in srepr form ("Symbol('s77', positive=True, integer=True)") and torch's shape functions
# (torch.utils._sympy.functions, as the deserializer passes them to sympify).
SYMPY_NAMES = frozenset("""Symbol Integer Rational Float Add Mul Pow Max Min Abs Eq Ne Lt Le Gt Ge StrictLessThan
StrictGreaterThan LessThan GreaterThan And Or Not true false True False oo zoo nan positive integer nonnegative
negative real finite FloorDiv ModularIndexing Where PythonMod Mod CleanDiv CeilToInt FloorToInt CeilDiv IntTrueDiv
FloatTrueDiv LShift RShift IsNonOverlappingAndDenseIndicator TruncToFloat TruncToInt RoundToInt RoundDecimal
ToFloat FloatPow PowByNatural Identity""".split())
_TOKEN = re.compile(r"\s+|'[A-Za-z_][A-Za-z0-9_]*'|[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d+)?(?:e[+-]?\d+)?|[-+*/%(),=<>!]")
_SYMBOL = re.compile(r"[a-z]+\d+$")
MAX_EXPRESSION_CHARS = 2000


def _check_expression(text: str) -> None:
    """Refuse an expression that is more than sympy names, symbols (s0, u1), numbers and arithmetic: sympify runs
    it through eval, so no attribute, subscript, dunder or other name may get there."""
    if not isinstance(text, str) or len(text) > MAX_EXPRESSION_CHARS:
        raise ModelError("the exported program holds a symbolic shape expression that is not a short string")
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ModelError(f"the exported program's shape expression {text[:80]!r} holds {text[pos]!r}, which "
                             "a shape expression never needs")
        word = m.group().strip("'")
        if word[:1].isalpha() or word[:1] == "_":
            if "__" in word or not (word in SYMPY_NAMES or _SYMBOL.match(word)):
                raise ModelError(f"the exported program's shape expression {text[:80]!r} names {word!r}, which is "
                                 "neither a size symbol nor a sympy shape function")
        pos = m.end()


# ------------------------------------------------------------------------------------------- the archive

MAX_JSON_BYTES = 256 << 20


def _walk(node, key: str | None = None) -> Iterator[tuple[str | None, object, dict | list]]:
    """(key, value, parent) of every value of a JSON document, depth first, without recursion (a deep document is
    read without a RecursionError)."""
    stack = [(None, node, None)]
    while stack:
        k, value, parent = stack.pop()
        yield k, value, parent
        if isinstance(value, dict):
            stack.extend((ck, cv, value) for ck, cv in value.items())
        elif isinstance(value, list):
            stack.extend((k, cv, value) for cv in value)


def _json(archive: zipfile.ZipFile, name: str):
    info = archive.getinfo(name)
    if info.file_size > MAX_JSON_BYTES:
        raise ModelError(f"{name} in the .pt2 archive is larger than {MAX_JSON_BYTES >> 20} MiB")
    raw = archive_check.read_member(archive, info, MAX_JSON_BYTES, ".pt2 archive")    # inflated at most this far
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ModelError(f"{name} in the .pt2 archive is not readable JSON ({str(exc)[:120]})") from None


def check_program_json(doc) -> None:
    """Targets on the allow-list, shape expressions in sympy's grammar, no custom objects (one models/*.json)."""
    targets = []
    for key, value, parent in _walk(doc):
        if key == "target" and isinstance(parent, dict) and "inputs" in parent:
            targets.append(str(value))
        elif key == "expr_str":
            _check_expression(value)
        elif key in ("as_custom_obj", "custom_obj_info"):
            raise ModelError("the exported program holds a custom (torchbind) object, which uploads may not")
        elif key == "range_constraints" and isinstance(value, dict):
            for symbol in value:
                _check_expression(symbol)
    refused = refused_targets(targets)
    if refused:
        raise ModelError(refusal_message(refused))


def _check_payloads(archive: zipfile.ZipFile, config_name: str, what: str) -> None:
    config = _json(archive, config_name).get("config", {})
    if not isinstance(config, dict):
        raise ModelError(f"{config_name} in the .pt2 archive is malformed")
    for fqn, meta in config.items():
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False or \
                not str(meta.get("path_name", "")).startswith(("weight_", "tensor_")):
            raise ModelError(f"the .pt2 archive stores {what} {str(fqn)[:80]!r} as a pickle or custom object, "
                             "which runs code when loaded; export plain tensors")


# What torch.export.save writes, relative to the archive's root folder. Anything else is refused: compiled
# AOTInductor / ExecuTorch payloads (native code), and the legacy layout that torch.export.load unpickles.
_MEMBERS = re.compile(r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
                      r"|models/[\w.-]+\.json|data/(weights|constants|sample_inputs)/[\w.-]+|extra/[\w./-]+)$")


def _root_and_members(archive: zipfile.ZipFile) -> tuple[str, list[str]]:
    names = archive.namelist()
    root = next((n[: -len("archive_format")] for n in names if n.endswith("archive_format")), None)
    if root is None or root.count("/") != 1 or archive.read(root + "archive_format").strip() != b"pt2":
        raise ModelError("the file is not a torch.export archive (no archive_format 'pt2')")
    for name in names:
        if not name.startswith(root) or not _MEMBERS.match(name[len(root):]) or ".." in name:
            raise ModelError(f"the .pt2 archive holds {name[:100]!r}, which is not part of a torch.export program "
                             "(compiled AOTInductor/ExecuTorch payloads and legacy pickles are refused)")
    return root, [n[len(root):] for n in names]


def check_archive(data: bytes) -> list[str]:
    """Everything that can be checked before torch.export.load: the layout, the payloads, every program's graph.
    Returns the sample-inputs members, for the caller to check with torch's weights_only loader."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        archive_check.check_declared_sizes(archive, ".pt2 archive")      # zip bombs, before any member is read
        root, members = _root_and_members(archive)
    except (zipfile.BadZipFile, ValueError, OSError, KeyError) as exc:
        raise ModelError(f"the .pt2 file is not a readable zip archive: {exc}") from None
    programs = [m[len("models/"):-len(".json")] for m in members if m.startswith("models/")]
    if not programs:
        raise ModelError("the .pt2 archive holds no exported program (models/*.json)")
    for model in programs:
        if f"data/weights/{model}.pt" in members or f"data/constants/{model}.pt" in members:
            raise ModelError("the .pt2 archive stores its weights in the legacy pickle format; re-export it with "
                             "this torch's torch.export.save")
        for config, what in ((f"data/weights/{model}_weights_config.json", "weight"),
                             (f"data/constants/{model}_constants_config.json", "constant")):
            if config not in members:
                raise ModelError(f"the .pt2 archive lacks {config}")
            _check_payloads(archive, root + config, what)
        check_program_json(_json(archive, f"{root}models/{model}.json"))
    return [root + m for m in members if m.startswith("data/sample_inputs/")]
