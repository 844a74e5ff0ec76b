"""The one operator allow-list of uploaded models (DESIGN §13: never "all minus a deny-list").

Both program formats are checked against it: torch.export graphs (certlib.sandbox.export_check, ATen ops only) and
TorchScript code (certlib.sandbox.torchscript_check, which adds the few scalar, list and prim operators that scripted code
calls, named below). Everything is pure Python (no torch import) so the app can list it cheaply.

Deliberately absent: view/alias ops that skip bounds checks (as_strided, _reshape_alias, _unsafe_view), sparse
constructors (_sparse_coo_tensor_unsafe), storage and file ops (set_, from_file, save, load), out= variants, and
everything a classifier does not need. `empty` (uninitialised memory) is admitted for TorchScript only, because
torchvision's stochastic depth (EfficientNet) allocates with it and fills it at once with bernoulli_ (in training
mode, which the worker never runs).
"""
from __future__ import annotations

# ATen operators a classifier needs, by purpose: shared by the torch.export and the TorchScript checks.
ATEN_BY_PURPOSE: dict[str, str] = {
    "convolution and linear": "conv1d conv2d conv3d conv_transpose1d conv_transpose2d convolution _convolution "
                              "linear matmul mm bmm addmm baddbmm einsum",
    "normalisation": "batch_norm _native_batch_norm_legit_no_training native_batch_norm layer_norm "
                     "native_layer_norm group_norm native_group_norm instance_norm",
    "activations": "relu relu_ relu6 hardtanh hardtanh_ hardswish hardswish_ hardsigmoid hardsigmoid_ sigmoid "
                   "sigmoid_ silu silu_ gelu gelu_ tanh tanh_ leaky_relu leaky_relu_ elu elu_ softplus mish mish_ "
                   "prelu glu softmax _softmax log_softmax _log_softmax",
    "pooling and resizing": "max_pool1d max_pool2d max_pool2d_with_indices avg_pool1d avg_pool2d adaptive_avg_pool1d "
                            "adaptive_avg_pool2d _adaptive_avg_pool2d adaptive_max_pool2d upsample_nearest2d "
                            "upsample_bilinear2d",
    "elementwise math": "add add_ sub sub_ rsub mul mul_ div div_ neg abs exp log log1p sqrt rsqrt pow reciprocal "
                        "clamp clamp_ clamp_min clamp_max minimum maximum where eq ne lt le gt ge sign erf sin cos "
                        "floor ceil round remainder floor_divide masked_fill masked_fill_",
    "reductions": "mean sum amax amin max min var std logsumexp argmax norm linalg_vector_norm prod cumsum all any",
    "shape (bounds-checked)": "view reshape flatten unflatten permute transpose t contiguous unsqueeze squeeze "
                              "expand expand_as cat stack split split_with_sizes chunk unbind select slice narrow "
                              "pad constant_pad_nd clone repeat flip roll detach alias _to_copy to type_as "
                              "sym_size sym_numel",
    "attention": "scaled_dot_product_attention _scaled_dot_product_flash_attention_for_cpu "
                 "_native_multi_head_attention",
    "dropout (identity in eval)": "dropout dropout_ feature_dropout alpha_dropout native_dropout",
    "initialised tensors": "zeros zeros_like ones ones_like full full_like arange scalar_tensor lift_fresh_copy",
    "shape assertions": "_assert_tensor_metadata _assert_scalar _assert_async sym_constrain_range "
                        "sym_constrain_range_for_size",
}

# What scripted TorchScript calls beyond tensor math: operators on ints, lists, strings and optionals (the aten
# namespace holds them too), and the prim operators that the serialized code names as ops.prim.X.
TORCHSCRIPT_BY_PURPOSE: dict[str, str] = {
    "scalars, lists and optionals": "dim size len append __is__ __isnot__ __not__ __contains__ format warn floordiv "
                                    "is_floating_point is_grad_enabled is_autocast_enabled Int Float Bool",
    "stochastic depth (training only)": "empty bernoulli_",
    "prim (called as ops.prim.X)": "prim::NumToTensor prim::RaiseException prim::device prim::dtype prim::is_nested "
                                   "prim::max prim::min prim::requires_grad prim::type prim::data "
                                   "prim::unchecked_unwrap_optional prim::is_cuda",
}

# Graph nodes that TorchScript's syntax itself stands for (no call names them): admitted with the syntax, listed so
# that the allow-list says everything a scripted model may run.
TORCHSCRIPT_SYNTAX_PRIMS: dict[str, str] = {
    "prim::Constant": "literals and CONSTANTS.cN",
    "prim::ListConstruct": "[a, b]",
    "prim::TupleConstruct": "(a, b)",
    "prim::TupleUnpack": "a, b = t",
    "prim::GetAttr": "self.name, and getattr(self, '0') for Sequential children (a literal name, never on torch)",
    "prim::If": "if/else",
    "prim::Loop": "for/while",
    "prim::CallMethod": "(self.child).forward(x), methods defined in the archive",
    "prim::CallFunction": "functions defined in the archive (__torch__.…)",
    "prim::Print": "print(...)",
}

ALLOWED_ATEN_OPS: frozenset[str] = frozenset(op for ops in ATEN_BY_PURPOSE.values() for op in ops.split())
_TS_EXTRA = [op for ops in TORCHSCRIPT_BY_PURPOSE.values() for op in ops.split()]
# TorchScript names: "conv2d" (aten, as torch.conv2d or a tensor method) and "prim::RaiseException".
TORCHSCRIPT_ALLOWED_OPS: frozenset[str] = ALLOWED_ATEN_OPS | frozenset(_TS_EXTRA)


def torchscript_op_allowed(namespace: str, op: str) -> bool:
    """Whether `namespace::op` may appear in uploaded TorchScript code."""
    if namespace == "aten":
        return op in TORCHSCRIPT_ALLOWED_OPS and "::" not in op
    if namespace == "prim":
        return f"prim::{op}" in TORCHSCRIPT_ALLOWED_OPS
    return False


def admitted() -> dict[str, tuple[str, ...]]:
    """Every admitted operator, grouped by purpose (what docs and tests list)."""
    groups = {purpose: tuple(ops.split()) for purpose, ops in ATEN_BY_PURPOSE.items()}
    groups.update({f"TorchScript: {purpose}": tuple(ops.split()) for purpose, ops in TORCHSCRIPT_BY_PURPOSE.items()})
    groups["TorchScript: syntax"] = tuple(TORCHSCRIPT_SYNTAX_PRIMS)
    return groups
