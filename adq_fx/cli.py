"""Command line: ``adq-fx demo`` (also ``python -m adq_fx demo``)."""

from __future__ import annotations

import argparse
import json
import os
import types
import typing
from collections.abc import Sequence
from dataclasses import MISSING, fields
from typing import Any

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
    train = sub.add_parser(
        "train",
        help="the full recipe on digits, CIFAR-10 or an ImageFolder tree",
        argument_default=argparse.SUPPRESS,
    )
    _add_train_flags(train)
    args = parser.parse_args(argv)
    if args.command == "train":
        return _train(vars(args))

    config = DemoConfig(
        float_epochs=args.float_epochs,
        qat_epochs=args.qat_epochs,
        bits=tuple(args.bits),
        seed=args.seed,
        progress=not args.no_progress,
    )
    results = run_demo(config)
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, typed from its annotation, so the two never drift apart."""
    from .train.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    for field in fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        hint = hints[field.name]
        default = field.default if field.default is not MISSING else None
        if "choices" in field.metadata:  # open sets, such as the registered quantizer names
            parser.add_argument(flag, choices=field.metadata["choices"](), help=f"default {default}")
        elif hint is bool or (_optional_of(hint) is bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=f"default {default}")
        elif typing.get_origin(hint) is tuple:
            element = typing.get_args(hint)[0]
            parser.add_argument(flag, type=element, nargs="+", help=f"default {default}")
        elif typing.get_origin(hint) is typing.Literal:
            parser.add_argument(flag, choices=typing.get_args(hint), help=f"default {default}")
        else:
            kind = _optional_of(hint) or hint
            parser.add_argument(flag, type=kind, help=f"default {default}")


def _optional_of(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        return rest[0] if len(rest) == 1 else None
    return None


def _train(arguments: dict[str, Any]) -> int:
    from .train.config import TrainConfig
    from .train.engine import run_training

    arguments.pop("command")
    for name in ("bit_options", "float_checkpoint_rename"):
        if name in arguments:
            arguments[name] = tuple(arguments[name])
    results = run_training(TrainConfig(**arguments))
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun, rank 0 reports
    if results.get("stopped"):
        print(f"{results['reason']}; continue with the same command and --resume")
        return 0
    data, size = results["data"], results["size_bits"]
    print(
        f"data {data['name']} ({data['train']} train / {data['test']} test); "
        f"device {results['machine']['device']}; {results['seconds']:.1f} s"
    )
    print(
        f"float {results['float_accuracy']:.2f}% | QAT {results['qat_accuracy']:.2f}% | "
        f"converted {results['converted_accuracy']:.2f}% | bits: mean {results['average_bits']:.3f}, "
        f"parameter-weighted {results['parameter_weighted_bits']:.3f} | "
        f"size {size['float'] / 8192:.1f} -> {size['converted'] / 8192:.1f} KiB"
    )
    print(f"results, checkpoints and plots in {results['config']['out_dir']}")
    return 0
