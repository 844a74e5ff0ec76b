"""The app's side of a `torch.export` program (.pt2): never loaded here. Its checks (layout, no pickled payloads,
the op allow-list over its graph; certlib.sandbox.export_check) and torch.export.load run in a sandboxed worker
(certlib.sandbox.runner with fmt="pt2", certlib.sandbox._export_worker), which also reads the input shape from the program.

    model = certlib.load_model("resnet18.pt2")     # input shape from the program; input_size= where it is dynamic
"""
from __future__ import annotations

import hashlib

from certlib.errors import ModelError


def _given_shape(size: tuple[int, ...] | None) -> tuple[int, int, int]:
    """(C, H, W) with 0 for what the program is to state itself."""
    if size is None:
        return 0, 0, 0
    if len(size) == 2:
        return (0, *size)
    return tuple(size)


def load_pt2(data: bytes, size: tuple[int, ...] | None, class_names: tuple[str, ...] | None, name: str,
             device: str | None = "cpu", size_is_fallback: bool = False):
    """A LoadedModel whose module runs the exported program in a sandboxed worker; ModelError with the reason.
    size: (C, H, W) or (H, W) the program must take; with size_is_fallback, only where its sizes are dynamic."""
    from certlib.models import registry as models
    from certlib.data.images import display_name
    from certlib.sandbox.runner import SandboxedModule, SandboxWorker

    models.resolve_device(device)               # a bad device name is still an error
    worker = SandboxWorker(data, *_given_shape(size), fmt="pt2",
                           load_options={"sizes_for_dynamic_only": bool(size_is_fallback)})
    if class_names is not None and len(class_names) != worker.num_classes:
        worker.close()
        raise ModelError(f"{len(class_names)} class names given but the program returns {worker.num_classes} scores")
    c, h, w = worker.shape
    digest = hashlib.sha256(data).hexdigest()
    spec = models.ModelSpec(
        key=f"user:{digest[:12]}", label=f"{display_name(name, 'uploaded model')} (torch.export program)",
        family="user", arch="torchscript",        # like TorchScript: a sandboxed forward pass, no layers to hook
        in_channels=c, input_size=(h, w), flexible_size=False, resize_size=min(h, w),
        class_names=class_names or tuple(f"class {i}" for i in range(worker.num_classes)), cam_layer=None,
        description=f"torch.export program, input [B,{c},{h},{w}] in [0,1], {worker.num_classes} classes",
    )
    notes = worker.notes + (("uploaded models run on the CPU, in a sandboxed process",) if device == "cuda" else ())
    return models.LoadedModel(spec=spec, module=SandboxedModule(worker), weights_sha256=digest, device="cpu",
                              notes=notes)
