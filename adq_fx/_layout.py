"""1-D views of activations in memory order, and back: elementwise work then runs on
channels_last tensors without a copy."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def is_channels_last(t: Tensor) -> bool:
    """4-D, channels_last and not also contiguous (a 1x1 image is both)."""
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def memory_order(t: Tensor) -> Tensor | None:
    """A 1-D view of ``t`` in memory order for the two layouts we meet, else None."""
    if t.is_contiguous():
        return t.view(-1)
    if is_channels_last(t):
        return t.permute(0, 2, 3, 1).reshape(-1)  # a view: NHWC is contiguous
    return None


def unflatten_like(flat: Tensor, template: Tensor) -> Tensor:
    """Inverse of :func:`flatten_alike`'s views: ``flat`` shaped, and laid out, as ``template``."""
    if is_channels_last(template):
        n, c, h, w = template.shape
        return flat.view(n, h, w, c).permute(0, 3, 1, 2)
    return flat.view(template.shape)


def flatten_alike(*tensors: Tensor) -> tuple[list[Tensor], Callable[[Tensor], Tensor]]:
    """1-D versions of same-shaped tensors, element i of each the same element, and the
    function that shapes a 1-D result back like the first tensor.

    Memory-order views when all share a layout (no copy for channels_last),
    logical-order copies otherwise.
    """
    first = tensors[0]
    views = [memory_order(t) for t in tensors]
    if all(v is not None for v in views) and len({is_channels_last(t) for t in tensors}) == 1:
        return views, lambda flat: unflatten_like(flat, first)  # type: ignore[return-value]
    return [t.reshape(-1) for t in tensors], lambda flat: flat.view(first.shape)


def gather(table: Tensor, positions: Tensor) -> Tensor:
    """table[positions] for a small table, through index_select (several times faster on CPU);
    the result keeps the layout of ``positions``."""
    (flat,), unflatten = flatten_alike(positions)
    return unflatten(table.index_select(0, flat))
