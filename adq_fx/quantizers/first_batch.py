"""Data-driven initialisation on the first batch a module sees, saved with the checkpoint."""

from __future__ import annotations

import torch
from torch import Tensor, nn


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

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if "initialized" in self._buffers:
            self._ready = bool(self.initialized)
