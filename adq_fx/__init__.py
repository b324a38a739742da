"""adq_fx: low-bit quantization-aware training (ADQ; N2UQ and LSQ baselines) as torch.fx passes.

prepared = prepare_adq(model, default_qconfig_mapping(3), example_inputs)
... train, adding commitment_loss(prepared) to the loss ...
int_model = convert_adq(prepared)          # int8 kernels where available (backend="auto")
"""

from . import registry
from .allocate import allocate_bits, allocate_bits_min_loss, layer_noise_weights, layer_sensitivity
from .config import (
    ADQConfig,
    ASQActivationConfig,
    CodebookWeightConfig,
    LSQActivationConfig,
    LSQWeightConfig,
    POSTWeightConfig,
    ThresholdActivationConfig,
    UniformWeightConfig,
)
from .config import renamed as _renamed
from .int8 import Int8KernelsUnavailable, compile_converted
from .kernels import get_kernel_backend, kernel_backend, set_kernel_backend
from .mapping import (
    ADQConfigMapping,
    default_qconfig_mapping,
    qconfig_mapping_from_map,
    qconfig_mapping_from_plan,
)
from .optim import param_groups
from .passes import calibrate, convert_adq, prepare_adq
from .registry import register_encoder, register_quantizer
from .serialization import load_converted
from .summary import commitment_loss, model_size, model_size_bits, quantization_map


def __getattr__(name: str) -> object:
    return _renamed(__name__, name, globals())


__all__ = [
    "ADQConfig",
    "ADQConfigMapping",
    "ASQActivationConfig",
    "CodebookWeightConfig",
    "Int8KernelsUnavailable",
    "LSQActivationConfig",
    "LSQWeightConfig",
    "POSTWeightConfig",
    "ThresholdActivationConfig",
    "UniformWeightConfig",
    "allocate_bits",
    "allocate_bits_min_loss",
    "calibrate",
    "commitment_loss",
    "compile_converted",
    "convert_adq",
    "default_qconfig_mapping",
    "get_kernel_backend",
    "kernel_backend",
    "layer_noise_weights",
    "layer_sensitivity",
    "load_converted",
    "model_size",
    "model_size_bits",
    "param_groups",
    "prepare_adq",
    "qconfig_mapping_from_map",
    "qconfig_mapping_from_plan",
    "quantization_map",
    "register_encoder",
    "register_quantizer",
    "registry",
    "set_kernel_backend",
]

__version__ = "0.1.0"
