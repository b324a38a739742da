"""Codes stored at their bit-width: a little-endian bit stream, b bits per code.

Dense for every width (3-bit codes take 3 bits, not 4): eight b-bit codes are
exactly b bytes, so the stream wastes at most one partial byte per layer.
Packing and unpacking run once, at convert and at load, never per forward,
so plain tensor ops are fast enough.
"""

from __future__ import annotations

import torch
from torch import Tensor


def packed_size(count: int, bits: int) -> int:
    """Bytes that ``count`` codes of ``bits`` bits take."""
    return (count * bits + 7) // 8


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"code width must be an integer from 1 to 8 bits, got {bits!r}")


def pack_codes(codes: Tensor, bits: int) -> Tensor:
    """uint8 codes (any shape, each < 2^bits) -> 1-D uint8 stream of ``packed_size`` bytes.

    >>> pack_codes(torch.tensor([1, 2, 3, 0], dtype=torch.uint8), 2).tolist()
    [57]
    """
    _check_bits(bits)
    flat = codes.detach().reshape(-1).to(torch.uint8)
    if flat.numel() and int(flat.max()) >= 2**bits:
        raise ValueError(f"pack_codes: a code is {int(flat.max())}, which does not fit in {bits} bits")
    shifts = torch.arange(bits, dtype=torch.uint8)
    stream = ((flat.unsqueeze(1) >> shifts) & 1).reshape(-1)  # bit j of code i at i*bits + j
    stream = torch.cat([stream, stream.new_zeros((-stream.numel()) % 8)])
    weights = (2 ** torch.arange(8)).to(torch.int32)
    return (stream.view(-1, 8).to(torch.int32) * weights).sum(1).to(torch.uint8)


def unpack_codes(packed: Tensor, bits: int, count: int) -> Tensor:
    """Inverse of :func:`pack_codes`: the first ``count`` codes, 1-D uint8.

    >>> unpack_codes(torch.tensor([57], dtype=torch.uint8), 2, 4).tolist()
    [1, 2, 3, 0]
    """
    _check_bits(bits)
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != packed_size(count, bits):
        raise ValueError(
            f"unpack_codes: expected a 1-D uint8 stream of {packed_size(count, bits)} bytes for "
            f"{count} codes of {bits} bits, got {tuple(packed.shape)} {packed.dtype}"
        )
    stream = ((packed.unsqueeze(1) >> torch.arange(8, dtype=torch.uint8)) & 1).reshape(-1)
    per_code = stream[: count * bits].view(count, bits).to(torch.int32)
    return (per_code * (2 ** torch.arange(bits)).to(torch.int32)).sum(1).to(torch.uint8)
