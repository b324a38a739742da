"""Checkpoint compatibility: a quantizer refuses state saved under another bit configuration."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..registry import canonical_name


def check_saved_layout(prefix: str, state_dict: dict[str, Any], expected: dict[str, Any]) -> None:
    """Raise, naming the module, when the saved layout differs from this module's."""
    saved = state_dict.get(prefix + "_extra_state")
    if saved is None or _with_current_names(saved) == expected:
        return
    module_name = prefix.rstrip(".") or "<root>"
    raise ValueError(
        f"{module_name}: the state_dict was saved with {saved}, but this model was prepared "
        f"with {expected}. Prepare the model with the same qconfig mapping as the checkpoint "
        "(its quantization_map says which bits each layer had) before loading."
    )


def _with_current_names(layout: Any) -> Any:
    """A saved layout with pre-registry quantizer names ("adq_codebook", ...) read as today's."""
    if not isinstance(layout, dict):
        return layout
    return {
        k: canonical_name(v) if k.endswith("method") and isinstance(v, str) else v for k, v in layout.items()
    }


class CheckedLayout(nn.Module):
    """Saves ``layout()`` (method, bits, ...) as extra state and refuses a checkpoint saved with another."""

    def layout(self) -> dict[str, Any]:
        raise NotImplementedError

    def get_extra_state(self) -> dict[str, Any]:
        return self.layout()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        pass  # checked in _load_from_state_dict, where the module name is known

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        check_saved_layout(prefix, state_dict, self.layout())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
