"""docs/design.md's layout tree lists exactly the package's modules."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _documented_modules() -> set[str]:
    text = (ROOT / "docs" / "design.md").read_text()
    block = re.search(r"## Layout[^\n]*\n\n```\n(.*?)```", text, re.S)
    assert block, "docs/design.md lost its layout tree"
    listed: set[str] = set()
    folders: dict[int, str] = {}
    for line in block.group(1).splitlines():
        indent = len(line) - len(line.lstrip())
        token = line.split()[0] if line.strip() else ""
        if not (token.endswith(".py") or token.endswith("/")):
            continue  # a description carried onto the next line
        parent = "/".join(folders[i] for i in sorted(folders) if i < indent)
        path = f"{parent}/{token.rstrip('/')}" if parent else token.rstrip("/")
        if token.endswith("/"):
            folders = {i: f for i, f in folders.items() if i < indent}
            folders[indent] = token.rstrip("/")
        else:
            listed.add(path)
    return listed


def test_the_layout_tree_in_design_md_lists_every_module_and_no_other() -> None:
    actual = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "adq_fx").rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    }
    documented = _documented_modules()
    assert not actual - documented, f"add to docs/design.md's layout: {sorted(actual - documented)}"
    assert not documented - actual, f"remove from docs/design.md's layout: {sorted(documented - actual)}"
