"""Checkpoint compatibility: a quantizer refuses state saved under another bit configuration.

The layout (method, bits, ...) is the only guard where no shape differs (LSQ weights saved at
3 bits load silently into a 2-bit model), so it travels in the state_dict as ``_extra_state``.
It is stored as a 1-D uint8 tensor of its UTF-8 JSON (sorted keys) so that every state_dict
value is a tensor: safetensors, ``{k: v.clone() ...}`` and other tensor-only tools work.
Releases before format version 2 saved the dict itself; both load. The value is decoded by
its type, not by ``_metadata``'s version, because safetensors keeps no metadata.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..registry import canonical_name


def encode_layout(layout: Mapping[str, Any]) -> Tensor:
    """``layout`` as a 1-D uint8 tensor of its UTF-8 JSON with sorted keys (what a state_dict saves)."""
    data = json.dumps(layout, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return torch.tensor(list(data), dtype=torch.uint8)


def saved_layout(value: Tensor | Mapping[str, Any], owner: str = "<root>") -> dict[str, Any]:
    """The layout a checkpoint saved, from today's uint8 tensor or an earlier release's dict,
    with pre-registry quantizer names ("adq_codebook", ...) read as today's."""
    if isinstance(value, Mapping):
        return _with_current_names(_as_json(value))
    if not isinstance(value, Tensor) or value.dtype != torch.uint8 or value.dim() != 1:
        kind = f"a {value.dtype} tensor of shape {tuple(value.shape)}" if isinstance(value, Tensor) else value
        raise ValueError(
            f"{owner}: its _extra_state should be the 1-D uint8 tensor (UTF-8 JSON) adq_fx saves, "
            f"but the state_dict holds {kind}. Save model.state_dict() without casting that entry."
        )
    try:
        layout = json.loads(bytes(value.cpu().tolist()).decode("utf-8"))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError both are
        layout = None
    if not isinstance(layout, dict):
        raise ValueError(
            f"{owner}: its _extra_state tensor does not hold the JSON layout adq_fx saves (the "
            "checkpoint is damaged or was not written by adq_fx). Save model.state_dict() again."
        )
    return _with_current_names(layout)


def check_saved_layout(prefix: str, state_dict: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Raise, naming the module, when the saved layout differs from this module's."""
    saved = state_dict.get(prefix + "_extra_state")
    if saved is None:
        return
    module_name = prefix.rstrip(".") or "<root>"
    layout = saved_layout(saved, module_name)
    if layout == _as_json(expected):
        return
    raise ValueError(
        f"{module_name}: the state_dict was saved with {_in_order_of(layout, expected)}, but this "
        f"model was prepared with {dict(expected)}. Prepare the model with the same qconfig mapping "
        "as the checkpoint (its quantization_map says which bits each layer had) before loading."
    )


def _as_json(layout: Mapping[str, Any]) -> dict[str, Any]:
    """``layout`` as JSON reads it back (tuples become lists), so saved and current compare equal."""
    return dict(json.loads(json.dumps(dict(layout), sort_keys=True)))


def _in_order_of(layout: dict[str, Any], reference: Mapping[str, Any]) -> dict[str, Any]:
    """``layout`` with ``reference``'s keys first, in its order (JSON sorted them), for the message."""
    return {**{k: layout[k] for k in reference if k in layout}, **layout}


def _with_current_names(layout: dict[str, Any]) -> dict[str, Any]:
    return {
        k: canonical_name(v) if k.endswith("method") and isinstance(v, str) else v for k, v in layout.items()
    }


class CheckedLayout(nn.Module):
    """Saves ``layout()`` (method, bits, ...) as a uint8 extra-state tensor and refuses a checkpoint
    saved with another; format version 2 (version 1 saved the dict)."""

    _version = 2

    def layout(self) -> dict[str, Any]:
        raise NotImplementedError

    def get_extra_state(self) -> Tensor:
        return encode_layout(self.layout())

    def set_extra_state(self, state: Tensor | dict[str, Any]) -> None:
        pass  # checked in _load_from_state_dict, where the module name is known

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        check_saved_layout(prefix, state_dict, self.layout())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


__all__ = ["CheckedLayout", "check_saved_layout", "encode_layout", "saved_layout"]
