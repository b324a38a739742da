"""Command line: ``adq-fx demo`` (also ``python -m adq_fx demo``)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from .demo import DemoConfig, format_table, run_demo


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adq-fx", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="float -> ADQ QAT -> integer model on the bundled digits data")
    demo.add_argument("--float-epochs", type=int, default=DemoConfig.float_epochs)
    demo.add_argument("--qat-epochs", type=int, default=DemoConfig.qat_epochs)
    demo.add_argument("--bits", type=int, nargs="+", default=list(DemoConfig.bits))
    demo.add_argument("--seed", type=int, default=DemoConfig.seed)
    demo.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)

    config = DemoConfig(float_epochs=args.float_epochs, qat_epochs=args.qat_epochs, bits=tuple(args.bits),
                        seed=args.seed, progress=not args.no_progress)
    results = run_demo(config)
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0
