"""Checkpoint compatibility: a quantizer refuses state saved under another bit configuration."""

from __future__ import annotations

from typing import Any


def check_saved_layout(prefix: str, state_dict: dict[str, Any], expected: dict[str, Any]) -> None:
    """Raise, naming the module, when the saved layout differs from this module's."""
    saved = state_dict.get(prefix + "_extra_state")
    if saved is None or saved == expected:
        return
    module_name = prefix.rstrip(".") or "<root>"
    raise ValueError(
        f"{module_name}: the state_dict was saved with {saved}, but this model was prepared "
        f"with {expected}. Prepare the model with the same qconfig mapping as the checkpoint "
        "(its quantization_map says which bits each layer had) before loading."
    )
