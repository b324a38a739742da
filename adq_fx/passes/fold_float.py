"""fold_float_batchnorm: a BatchNorm2d after a float conv (the layers kept float) folds into it.

The int8 lowering folds BatchNorm into the integer layers; the layers the mapping
keeps float (a network's first conv, as the paper does) would otherwise run
their BatchNorm as a separate pass over a large activation: on ResNet-18 at
224² that pass costs about as much as one integer conv. Folding uses
``torch.nn.utils.fusion.fuse_conv_bn_eval``, PyTorch's own inference fold, and
changes the float output by round-off only.
"""

from __future__ import annotations

from collections import Counter
from typing import cast

from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ._graph import set_submodule


def fold_float_batchnorm(gm: fx.GraphModule) -> None:
    """Rewrite ``gm`` (in eval mode) in place: each plain ``nn.Conv2d`` whose only user is an
    ``nn.BatchNorm2d`` with running statistics becomes one conv with the BatchNorm folded in."""
    modules = dict(gm.named_modules())
    calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    for node in list(gm.graph.nodes):
        conv = modules.get(cast(str, node.target)) if node.op == "call_module" else None
        if type(conv) is not nn.Conv2d or len(node.users) != 1 or calls[node.target] != 1:
            continue  # a conv called twice is one module: folding it would change both calls
        (bn_node,) = node.users
        bn = modules.get(cast(str, bn_node.target)) if bn_node.op == "call_module" else None
        if type(bn) is not nn.BatchNorm2d or bn.running_mean is None or bn.running_var is None:
            continue
        if bn_node.args != (node,) or bn_node.kwargs or calls[bn_node.target] != 1:
            continue
        # Contiguous weights, as the model had them (safetensors saves contiguous tensors only).
        set_submodule(gm, cast(str, node.target), fuse_conv_bn_eval(conv.eval(), bn.eval()))
        bn_node.replace_all_uses_with(node)
        gm.graph.erase_node(bn_node)
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()


__all__ = ["fold_float_batchnorm"]
