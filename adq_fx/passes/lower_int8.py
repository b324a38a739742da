"""lower_to_int8: reference LUT layers -> integer-kernel layers, folding BatchNorm and fusing post-ops.

One pass over the converted graph. Each LUT layer becomes its int8 layer; then,
following the chain of sole users, a BatchNorm2d after a conv folds into its
scale and bias, a residual add (conv output + another tensor) and a ReLU after
it run inside the kernel. The fused call takes the place of the last node it
absorbs, so the residual's producer is always computed before it.
"""

from __future__ import annotations

import operator
import warnings
from typing import TypeGuard, cast

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..int8 import Int8Conv2d, Int8Linear, UnsupportedLayer
from ..nn import LUTConv2d, LUTLinear
from ._graph import set_submodule

_RELU_FUNCTIONS = {torch.relu, F.relu}
_ADD_FUNCTIONS = {operator.add, torch.add, operator.iadd}
# Ops whose output shares storage with their first input (a write through one shows in the other).
_ALIAS_MODULES = (nn.Identity, nn.Dropout, nn.Flatten)
_ALIAS_FUNCTIONS = {operator.getitem, torch.flatten, torch.squeeze, torch.unsqueeze}
_ALIAS_METHODS = {
    "view",
    "reshape",
    "flatten",
    "contiguous",
    "squeeze",
    "unsqueeze",
    "permute",
    "transpose",
    "expand",
    "__getitem__",
    "to",
    "detach",
}


def lower_to_int8(
    gm: fx.GraphModule, *, fold_batchnorm: bool = True, off_grid: str = "snap", strict: bool = True
) -> None:
    """Rewrite ``gm`` (the output of the reference convert) in place to run integer kernels.

    A layer the kernels cannot run raises :class:`UnsupportedLayer` when ``strict``, else
    stays a reference LUT layer with a warning naming it.
    """
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        lut = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(lut, (LUTConv2d, LUTLinear)):
            continue
        try:
            layer: Int8Conv2d | Int8Linear = (Int8Conv2d if isinstance(lut, LUTConv2d) else Int8Linear)(
                lut, name=node.target, off_grid=off_grid
            )
        except UnsupportedLayer as error:
            if strict:
                raise
            warnings.warn(f"{error} It stays on the reference (float) path.", stacklevel=3)
            continue
        chain, args = [node], [node.args[0]]
        bn = _sole_user(node)
        if fold_batchnorm and isinstance(layer, Int8Conv2d) and _foldable_batchnorm(bn, modules):
            layer.fold_batchnorm(modules[cast(str, bn.target)])
            chain.append(bn)
        add = _sole_user(chain[-1])
        residual = _residual_operand(add, chain[-1])
        if isinstance(layer, Int8Conv2d) and layer.fuses_in_kernel and residual is not None:
            assert add is not None  # the residual is an operand of it
            layer.accumulates = True
            layer.private_accumulator = _unread_after(residual, add, modules)
            chain.append(add)
            args.append(residual)
        relu = _sole_user(chain[-1])
        if _is_relu(relu, modules):
            layer.relu = True
            chain.append(relu)
        set_submodule(gm, node.target, layer)
        end = chain[-1]
        with gm.graph.inserting_before(end):
            fused = gm.graph.call_module(node.target, tuple(args))
        fused.meta = dict(node.meta)
        end.replace_all_uses_with(fused)
        for absorbed in reversed(chain):
            gm.graph.erase_node(absorbed)
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()


def _sole_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _foldable_batchnorm(node: fx.Node | None, modules: dict[str, nn.Module]) -> TypeGuard[fx.Node]:
    if node is None or node.op != "call_module":
        return False
    bn = modules[cast(str, node.target)]
    return type(bn) is nn.BatchNorm2d and bn.running_mean is not None and bn.running_var is not None


def _is_relu(node: fx.Node | None, modules: dict[str, nn.Module]) -> bool:
    if node is None or len(node.args) != 1:
        return False
    if node.op == "call_module":
        return type(modules[cast(str, node.target)]) is nn.ReLU
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS and set(node.kwargs) <= {"inplace"}
    return node.op == "call_method" and node.target == "relu" and not node.kwargs


def _residual_operand(add: fx.Node | None, value: fx.Node) -> fx.Node | None:
    """The other operand of ``value + other``, when ``add`` is exactly that."""
    if add is None or add.op != "call_function" or add.target not in _ADD_FUNCTIONS or add.kwargs:
        return None
    if len(add.args) != 2 or not all(isinstance(a, fx.Node) for a in add.args):
        return None
    left, right = add.args
    if left is right:
        return None
    return right if left is value else left  # type: ignore[return-value]


def _is_alias(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        module = modules.get(cast(str, node.target))
        return isinstance(module, _ALIAS_MODULES) or (isinstance(module, nn.ReLU) and module.inplace)
    if node.op == "call_function":
        return node.target in _ALIAS_FUNCTIONS or bool(node.kwargs.get("inplace"))
    return node.op == "call_method" and node.target in _ALIAS_METHODS


def _unread_after(residual: fx.Node, add: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether no node at or after ``add`` other than ``add`` reads ``residual``'s storage.

    The kernel writes its result into the residual tensor, so every view of that storage is
    followed; graph inputs and attributes belong to the caller and are never written.
    """
    order = {n: i for i, n in enumerate(add.graph.nodes)}
    root = residual
    while _is_alias(root, modules) and root.args and isinstance(root.args[0], fx.Node):
        root = root.args[0]
    if root.op in ("placeholder", "get_attr"):
        return False
    pending, aliases = [root], {root}
    while pending:
        current = pending.pop()
        for user in current.users:
            if user is add:
                continue
            if user.op == "output" or order[user] >= order[add]:
                return False
            if _is_alias(user, modules) and user not in aliases:
                aliases.add(user)
                pending.append(user)
    return True
