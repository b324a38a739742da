"""The README's demo table: runs `adq-fx demo` with its defaults and records the result.

python benchmarks/demo_table.py      # writes benchmarks/results/demo.json
"""

from __future__ import annotations

import json
from pathlib import Path

from adq_fx.demo import DemoConfig, format_table, run_demo


def main() -> None:
    results = run_demo(DemoConfig(progress=False))
    out = Path(__file__).parent / "results" / "demo.json"
    out.write_text(json.dumps(results, indent=2))
    print(format_table(results))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
