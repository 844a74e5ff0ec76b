"""The sandbox worker's side of `torch.export` programs (.pt2): warm-up, checks, loading. Imported by
certlib.sandbox._worker before Landlock shuts the file system, and given torch as an argument (like its Server), so
importing this module costs nothing in the app.

Order: the archive is checked as data (certlib.sandbox.export_check: layout, no pickled payloads, shape expressions, the op
allow-list over the JSON graph), sample inputs must load with torch's weights_only unpickler (else torch.export.load
would retry them with the full unpickler), then torch.export.load, then the loaded graph is checked again.
"""
from __future__ import annotations

import io
from pathlib import Path

from certlib import resources
from certlib.sandbox import export_check
from certlib.errors import ModelError

DYNAMIC_BATCH_HOW = ("export with a dynamic batch dimension: torch.export.export(model, (x,), dynamic_shapes="
                     "{'x': {0: torch.export.Dim('batch')}}) with x of batch size 2 or more")


WARMUP_PROGRAM = resources.assets_dir() / "export_warmup.pt2"


def _tiny_program(torch) -> bytes:
    """A tiny conv → relu → mean program with a dynamic batch, exported and saved (what the warm-up loads)."""
    class Tiny(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.relu(torch.nn.functional.conv2d(x, torch.ones(2, 1, 1, 1))).mean((2, 3))

    x = torch.rand(2, 1, 2, 2)
    ep = torch.export.export(Tiny(), (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    return buf.getvalue()


def warm_up(torch) -> None:
    """Load, run and differentiate a tiny program with a dynamic batch, so that every module these paths import
    lazily (torch.export's deserializer, sympy, the shape environment) is loaded before the file system goes away.
    The program is shipped (assets/export_warmup.pt2): exporting one here would import the compiler and cost each
    .pt2 worker seconds. Where it does not load (another torch), it is exported afresh."""
    try:
        module = load(torch, WARMUP_PROGRAM.read_bytes(), {})[0]
    except (OSError, ModelError):
        module = load(torch, _tiny_program(torch), {})[0]
    x = torch.rand(3, 1, 2, 2, requires_grad=True)
    torch.autograd.grad(module(x).sum(), x)


def write_warmup_program(torch) -> Path:
    """Re-export assets/export_warmup.pt2 (after a torch upgrade: `python -m certlib.sandbox._export_worker`)."""
    WARMUP_PROGRAM.write_bytes(_tiny_program(torch))
    return WARMUP_PROGRAM


def _target_name(target) -> str:
    """The name a call_function target is allow-listed under: 'aten.conv2d.default', '_operator.getitem', …"""
    schema = getattr(target, "_schema", None)
    if schema is not None and hasattr(target, "_overloadname"):
        return f"{schema.name.replace('::', '.')}.{target._overloadname}"
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__name__', type(target).__name__)}"


def check_graph(ep) -> None:
    """The op allow-list over the loaded program's graph (and any sub-graph): what runs is what was read."""
    targets = []
    for gm in ep.graph_module.modules():
        graph = getattr(gm, "graph", None)
        for node in graph.nodes if graph is not None else ():
            if node.op == "call_function":
                targets.append(_target_name(node.target))
            elif node.op in ("call_module", "call_method"):
                targets.append(f"{node.op} {node.target}")
    refused = export_check.refused_targets(targets)
    if refused:
        raise ModelError(export_check.refusal_message(refused))
    _check_eval_mode(ep)


# Operators whose `training` flag is an argument of the exported graph: a program exported in training mode keeps
# batch statistics and random dropout, and its scores would depend on the batch.
_TRAINING_ARG = {"aten.batch_norm.default": 5, "aten.dropout.default": 2, "aten.dropout_.default": 2,
                 "aten.native_dropout.default": 2, "aten.feature_dropout.default": 2, "aten.alpha_dropout.default": 2}


def _check_eval_mode(ep) -> None:
    for node in ep.graph.nodes:
        index = _TRAINING_ARG.get(_target_name(node.target)) if node.op == "call_function" else None
        if index is not None and len(node.args) > index and node.args[index] is True:
            raise ModelError("the program was exported in training mode (batch norm or dropout in training): call "
                             "model.eval() before torch.export.export")


def _input_shape(ep) -> tuple:
    """The single image input's shape as the program states it: ints where static, None where symbolic."""
    names = list(ep.graph_signature.user_inputs)
    if len(names) != 1:
        raise ModelError(f"the exported program takes {len(names)} inputs; a classifier takes one image batch")
    node = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name == names[0])
    val = node.meta.get("val")
    shape = getattr(val, "shape", None)
    if shape is None or len(shape) != 4:
        raise ModelError(f"the exported program's input has shape {list(shape) if shape is not None else '?'}; "
                         "expected [batch, channels, height, width]")
    return tuple(d if isinstance(d, int) else None for d in shape)


def _resolve(program: tuple, header: dict) -> tuple[int, int, int]:
    """C, H, W: the program's static sizes, checked against those given (unless the request says the given ones are
    only for dynamic sizes, as the upload form's defaults are); a dynamic size must be given."""
    out, strict = [], not header.get("sizes_for_dynamic_only")
    for what, static, given in zip(("channels", "height", "width"), program[1:],
                                   (header.get("in_channels"), header.get("height"), header.get("width"))):
        given = int(given or 0)
        if strict and static is not None and given and static != given:
            raise ModelError(f"the exported program takes inputs of {what} {static}, not {given}")
        if static is None and not given:
            raise ModelError(f"the exported program's input {what} is dynamic: give the input size to use")
        out.append(static if static is not None else given)
    return tuple(out)


def load(torch, data: bytes, header: dict):
    """(module taking [B,C,H,W], header with the C/H/W used, notes) for a checked .pt2 program."""
    for member in export_check.check_archive(data):
        _check_sample_inputs(torch, data, member)
    try:
        ep = torch.export.load(io.BytesIO(data))
    except (RuntimeError, ValueError, KeyError, AssertionError, TypeError, AttributeError, NotImplementedError,
            RecursionError) as exc:
        text = str(exc).strip().splitlines()
        raise ModelError(f"torch.export.load could not read the program: {(text[-1] if text else '')[:300]}") \
            from None
    check_graph(ep)
    program = _input_shape(ep)
    c, h, w = _resolve(program, header)
    module, notes = ep.module(), []
    if program[0] == 1:
        module = RowByRow(torch, module)
        notes.append("this program was exported with a static batch of 1, so it runs one image at a time (slower); "
                     + DYNAMIC_BATCH_HOW)
    elif program[0] is not None:
        raise ModelError(f"the exported program only takes batches of exactly {program[0]}; " + DYNAMIC_BATCH_HOW)
    return module, {**header, "in_channels": c, "height": h, "width": w}, notes


def _check_sample_inputs(torch, data: bytes, member: str) -> None:
    import zipfile

    raw = zipfile.ZipFile(io.BytesIO(data)).read(member)
    if not raw:
        return
    try:
        torch.load(io.BytesIO(raw), weights_only=True)
    except Exception:  # the safe unpickler refused it: torch.export.load would retry with the unsafe one
        raise ModelError("the .pt2 archive's sample inputs are not plain tensors (they would be unpickled with "
                         "code execution); export with tensor inputs only") from None


class RowByRow:
    """A program exported for batches of one, called once per image (autograd flows through torch.cat)."""

    def __init__(self, torch, module) -> None:
        self.torch, self.module = torch, module

    def __call__(self, x):
        return self.torch.cat([self.module(x[i:i + 1]) for i in range(x.shape[0])])

    def eval(self):
        return self


if __name__ == "__main__":
    import torch as _torch

    print(write_warmup_program(_torch))
