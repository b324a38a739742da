"""Graph passes: each a plain function GraphModule -> GraphModule over one node loop."""

from .calibrate import calibrate
from .convert import convert_adq
from .prepare import prepare_adq

__all__ = ["calibrate", "convert_adq", "prepare_adq"]
