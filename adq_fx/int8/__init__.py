"""Integer inference: int8 kernels (oneDNN), packed codes, the int8 weight grid."""

from .compiled import compile_converted
from .grid import GridLevels, to_int8_grid, weight_limit
from .modules import Int8Conv2d, Int8Linear, UnsupportedLayer
from .onednn import Int8KernelsUnavailable, kernel_problem
from .packing import pack_codes, packed_size, unpack_codes

__all__ = [
    "GridLevels",
    "Int8Conv2d",
    "Int8KernelsUnavailable",
    "Int8Linear",
    "UnsupportedLayer",
    "compile_converted",
    "kernel_problem",
    "pack_codes",
    "packed_size",
    "to_int8_grid",
    "unpack_codes",
    "weight_limit",
]
