"""compile_converted: a converted model as one compiled graph, for deployment.

Eagerly, every layer of a converted model is a Python call: at batch 1 that
overhead and the threshold encoders (a binary search per element) cost more
than the integer convolutions. Compiled whole, the encoders become one
vectorised search pass fused with the ReLU or add before them, and
with inductor's C++ wrapper the kernel calls no longer go through Python
(``benchmarks/inference_speed.py`` measures each variant). Plain
``torch.compile(converted)`` also traces the model as one graph; this helper
adds the C++ wrapper, drops dynamo's per-call checks of the module's attributes
on a private copy that nothing else can change, and compiles at once, so a
failure shows here rather than at the first request.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, cast

import torch
from torch import nn

from ..kernels import COMPILE_FAILURES

__all__ = ["compile_converted"]


def _is_converted(model: nn.Module) -> bool:
    from ..nn import LUT_MODULES
    from .modules import Int8Conv2d, Int8Linear

    converted_types = (Int8Conv2d, Int8Linear, *set(LUT_MODULES.values()))
    return any(isinstance(m, converted_types) for m in model.modules())


def compile_converted(model: nn.Module, example_inputs: Any, *, cpp_wrapper: bool = True) -> nn.Module:
    """A compiled copy of ``model`` (the output of :func:`adq_fx.convert_adq`), compiled on
    ``example_inputs`` before it returns. Call it under ``torch.no_grad()``.

    The copy is frozen: loading a state_dict into ``model`` afterwards does not reach it
    (compile again instead). Inputs of a new shape compile once more, as with any
    ``torch.compile``. Where inductor's C++ wrapper fails to build, the Python wrapper is used
    with a warning; where the model cannot be traced as one graph, the error says why.
    """
    if not _is_converted(model):
        raise ValueError(
            f"compile_converted: {type(model).__name__} has no converted adq_fx layer; call "
            "adq_fx.convert_adq(prepared) first (compile a float or prepared model with torch.compile)."
        )
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    options: dict[str, Any] = {}
    skip_module_guards = getattr(torch.compiler, "skip_guard_on_all_nn_modules_unsafe", None)
    if skip_module_guards is not None:  # a private copy: its attributes never change after this
        options["guard_filter_fn"] = skip_module_guards
    attempts = [True, False] if cpp_wrapper else [False]
    for with_cpp_wrapper in attempts:
        frozen = copy.deepcopy(model).eval()  # a fresh copy per attempt: no state of a failed one
        compiled = torch.compile(frozen, fullgraph=True, options={**options, "cpp_wrapper": with_cpp_wrapper})
        try:
            with torch.no_grad():
                compiled(*inputs)
        except COMPILE_FAILURES as error:
            if with_cpp_wrapper:
                warnings.warn(
                    "compile_converted: inductor's C++ wrapper failed to build "
                    f"({type(error).__name__}: {error}); using its Python wrapper (slower at small "
                    "batches). Pass cpp_wrapper=False to skip the attempt.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            raise RuntimeError(
                f"compile_converted: torch.compile failed ({type(error).__name__}: {error}); "
                "the eager converted model computes the same values."
            ) from error
        except torch._dynamo.exc.Unsupported as error:
            raise ValueError(
                f"compile_converted: the model cannot be traced as one graph ({error}). Use "
                "torch.compile(model) without fullgraph, or the eager converted model."
            ) from error
        return cast(nn.Module, compiled)  # an OptimizedModule wrapping the copy
    raise AssertionError("unreachable")  # the last attempt returns or raises
