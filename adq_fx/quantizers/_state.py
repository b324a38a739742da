"""Checkpoint compatibility: a quantizer refuses state saved under another bit configuration."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


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


class CheckedLayout(nn.Module):
    """Saves ``layout()`` (method, bits, ...) as extra state and refuses a checkpoint saved with another."""

    def layout(self) -> dict[str, Any]:
        raise NotImplementedError

    def get_extra_state(self) -> dict[str, Any]:
        return self.layout()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        pass  # checked in _load_from_state_dict, where the module name is known

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        check_saved_layout(prefix, state_dict, self.layout())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class FirstBatchInit(nn.Module):
    """A data-driven init run on the first batch the module sees (train or eval).

    Whether it ran is saved as the ``initialized`` buffer, so a loaded checkpoint
    is not initialised again; a Python mirror avoids a host sync per step.
    Subclasses call ``_track_first_batch()`` in ``__init__`` (only when they use a
    data init, so other checkpoints keep their keys) and ``_initialize_once(x)``
    first thing in ``forward``, and implement ``initialize(x)``.
    """

    initialized: Tensor
    _ready: bool = True  # modules that never track a first batch are always ready

    def _track_first_batch(self) -> None:
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self._ready = False

    @property
    def awaiting_first_batch(self) -> bool:
        """True until the data init has run (its parameters are still placeholders)."""
        return not self._ready

    def initialize(self, x: Tensor) -> None:
        raise NotImplementedError

    def _initialize_once(self, x: Tensor) -> None:
        if not self._ready:
            with torch.no_grad():
                self.initialize(x)
            self.initialized.fill_(True)
            self._ready = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if "initialized" in self._buffers:
            self._ready = bool(self.initialized)
