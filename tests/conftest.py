"""Hypothesis profiles: random exploration by default, fixed examples in CI (so a red CI reproduces)."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
