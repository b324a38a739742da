"""Float checkpoints written by other code: find the state_dict, strip wrappers, rename, load strictly."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

# Prefixes that wrappers add to every key: DataParallel / DDP, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Keys under which training scripts commonly nest the weights.
NESTED_KEYS = ("state_dict", "model", "model_state_dict", "net", "weights")


def parse_renames(renames: Sequence[str]) -> list[tuple[str, str]]:
    """``["linear.=fc.", ...]`` -> ``[("linear.", "fc."), ...]``: key prefix OLD becomes NEW."""
    pairs = []
    for rename in renames:
        old, sep, new = rename.partition("=")
        if not sep or not old:
            raise ValueError(
                f"checkpoint rename {rename!r} must read OLD=NEW (a key prefix and its "
                "replacement, e.g. 'linear.=fc.'; NEW may be empty to drop a prefix)."
            )
        pairs.append((old, new))
    return pairs


def find_state_dict(blob: Any, source: str) -> dict[str, Tensor]:
    """The tensor mapping inside a loaded checkpoint: the blob itself or one of NESTED_KEYS."""
    if isinstance(blob, Mapping):
        if blob and all(isinstance(v, Tensor) for v in blob.values()):
            return dict(blob)
        for key in NESTED_KEYS:
            if key in blob and isinstance(blob[key], Mapping):
                return find_state_dict(blob[key], f"{source}[{key!r}]")
    keys = list(blob)[:8] if isinstance(blob, Mapping) else type(blob).__name__
    raise ValueError(
        f"{source}: found no state_dict (a mapping of names to tensors) at the top level or "
        f"under {NESTED_KEYS}; it holds {keys}. Save model.state_dict() and pass that file."
    )


def rename_keys(state: Mapping[str, Tensor], renames: Sequence[tuple[str, str]]) -> dict[str, Tensor]:
    """Strip a wrapper prefix every key carries, then apply each OLD=NEW prefix rename in order."""
    out = dict(state)
    for prefix in WRAPPER_PREFIXES:
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix) :]: v for k, v in out.items()}
    for old, new in renames:
        out = {(new + k[len(old) :] if k.startswith(old) else k): v for k, v in out.items()}
    return out


def _suggestion(missing: list[str], unexpected: list[str]) -> str:
    """A rename that maps the unexpected keys onto the missing ones, when one top-level name does it."""

    def heads(keys: list[str]) -> set[str]:
        return {k.split(".")[0] + "." for k in keys}

    if len(heads(missing)) == 1 and len(heads(unexpected)) == 1:
        (old,), (new,) = heads(unexpected), heads(missing)
        if {new + k[len(old) :] for k in unexpected} == set(missing):
            return f" The names differ only in their first part: pass the rename '{old}={new}'."
    return " Map the names with renames OLD=NEW (--float-checkpoint-rename)."


def load_float_state(model: nn.Module, path: str | Path, renames: Sequence[str] = ()) -> None:
    """Load a float checkpoint into ``model`` strictly, saying which keys and shapes disagree."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    state = rename_keys(find_state_dict(blob, str(path)), parse_renames(renames))
    expected = model.state_dict()
    # BatchNorm fills a missing step counter itself (checkpoints from before PyTorch 0.4.1 lack it).
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ValueError(
            f"{path}: the checkpoint does not fit {type(model).__name__}: {len(missing)} keys missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})."
            + _suggestion(missing, unexpected)
        )
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise ValueError(
            f"{path}: shapes differ from {type(model).__name__} for {wrong[:3]}; is it the "
            "same architecture and number of classes?"
        )
    model.load_state_dict(state)


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, so a cache entry is tied to the checkpoint's content, not its name."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


__all__ = ["file_digest", "find_state_dict", "load_float_state", "parse_renames", "rename_keys"]
