"""Command line: ``adq-fx demo`` and ``adq-fx train`` (also ``python -m adq_fx ...``)."""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import os
import types
import typing
from collections.abc import Sequence
from dataclasses import MISSING, asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .demo import DemoConfig, format_table, run_demo

if TYPE_CHECKING:
    from .train.config import TrainConfig


TRAIN_DESCRIPTION = """\
The full recipe: float start, bit allocation, QAT, convert, evaluate. A run is
described in layers, each overriding the one before: TrainConfig's defaults (shown
below), then --recipe NAME, then --config FILE (TOML, JSON, YAML, or a run's
results.json), then the flags on this command line. --print-config shows the result.
"""


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
        description=TRAIN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    _add_train_flags(train)
    args = parser.parse_args(argv)
    if args.command == "train":
        return _train(vars(args), train)

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
    """One flag per TrainConfig field, typed from its annotation, so the two never drift apart.

    Help and group come from each field's metadata. The parser's defaults are SUPPRESS (an unset
    flag stays out of the namespace, so it cannot override a recipe or file): the dataclass default
    is written into the help instead.
    """
    from .train.config import GROUPS, TrainConfig

    groups = {name: parser.add_argument_group(name, about) for name, about in GROUPS.items()}
    groups["run"].add_argument(
        "--config",
        metavar="FILE",
        help="Read settings from FILE (.toml, .json, .yaml/.yml, or a run's results.json); "
        "keys are field names, snake_case or kebab-case.",
    )
    groups["run"].add_argument(
        "--print-config",
        action="store_true",
        help="Print the resolved settings as JSON (usable as --config) and exit without training.",
    )
    hints = typing.get_type_hints(TrainConfig)
    for field in fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        hint = hints[field.name]
        help = f"{field.metadata['help']} (default: {_shown(field.default)})".replace("%", "%%")
        group = groups[field.metadata["group"]]
        metavar = field.metadata.get("metavar")
        if "choices" in field.metadata:  # open sets, such as the registered quantizer names
            group.add_argument(flag, choices=field.metadata["choices"](), help=help)
        elif hint is bool or (_optional_of(hint) is bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, help=help)
        elif typing.get_origin(hint) is tuple:
            element = typing.get_args(hint)[0]
            group.add_argument(flag, type=element, nargs="+", metavar=metavar or "N", help=help)
        elif typing.get_origin(hint) is typing.Literal:
            group.add_argument(flag, choices=typing.get_args(hint), help=help)
        else:
            kind = _optional_of(hint) or hint
            group.add_argument(flag, type=kind, metavar=metavar or _METAVARS[kind], help=help)


_METAVARS = {int: "N", float: "X", str: "TEXT"}


def _shown(default: Any) -> str:
    """A default as a user would type it: tuples space-separated, None as 'unset'."""
    if default is MISSING or default is None:
        return "unset"
    if isinstance(default, tuple):
        return " ".join(str(v) for v in default) if default else "none"
    return str(default)


def _optional_of(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        return rest[0] if len(rest) == 1 else None
    return None


# How a run was started and cut into pieces, not what it trains: left out when repeating a results.json.
RUN_CONTROL = ("resume", "stop_after_epochs", "stop_after_steps")


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw mapping in a TOML, JSON or YAML file; a results.json gives the config it stored.

    Keys are not checked here (config_values does that), so each format is one small parser.
    """
    path = Path(path)
    parse = _PARSERS.get(path.suffix.lower())
    if parse is None:
        raise ValueError(f"--config {path}: unknown file type {path.suffix!r}; use .toml, .json or .yaml.")
    try:
        text = path.read_text()
    except OSError as err:
        raise ValueError(f"--config {path}: cannot read it ({err.strerror or err}).") from err
    data = parse(text, path)
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        # A run's results.json: repeat that run, not the way its last piece was started or cut.
        data = {k: v for k, v in data["config"].items() if k not in RUN_CONTROL}
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a table of settings (key = value), not {data!r}.")
    return data


def _parse_toml(text: str, path: Path) -> Any:
    import tomllib  # Python >= 3.11

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"--config {path}: not valid TOML: {err}.") from None


def _parse_json(text: str, path: Path) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--config {path}: not valid JSON: {err}.") from None


def _parse_yaml(text: str, path: Path) -> Any:
    """PyYAML, imported only for a YAML file: it is not one of adq_fx's dependencies."""
    try:
        yaml = importlib.import_module("yaml")
    except ImportError:
        raise ValueError(
            f"--config {path}: reading YAML needs PyYAML (pip install pyyaml); "
            "or write the file as TOML or JSON."
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"--config {path}: not valid YAML: {err}") from None


_PARSERS = {".toml": _parse_toml, ".json": _parse_json, ".yaml": _parse_yaml, ".yml": _parse_yaml}


def config_values(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """A file's settings as TrainConfig keyword arguments: names checked, kebab-case accepted, values typed.

    A misspelt key or a wrong type is refused here, naming the key and the file, rather than
    silently ignored or failing later inside training.
    """
    from .train.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in hints:
            close = difflib.get_close_matches(name, list(hints), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "; `adq-fx train --help` lists the settings."
            raise ValueError(f"{source}: unknown setting {key!r}{hint}")
        if name in values:
            raise ValueError(
                f"{source}: {key!r} sets {name} a second time (snake_case and kebab-case); keep one."
            )
        values[name] = _typed(value, hints[name], f"{source}: {key}")
    return values


def _typed(value: Any, hint: Any, where: str) -> Any:
    """``value`` as ``hint`` asks, or a ValueError naming ``where``; lists become tuples."""
    inner = _optional_of(hint)
    if inner is not None:
        return None if value is None else _typed(value, inner, where)
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where} must be a list, e.g. [{value!r}]; got {value!r}.")
        element = typing.get_args(hint)[0]
        return tuple(_typed(v, element, f"{where}[{i}]") for i, v in enumerate(value))
    if typing.get_origin(hint) is typing.Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ValueError(f"{where} must be one of {', '.join(map(repr, allowed))}; got {value!r}.")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ValueError(f"{where} must be {_KIND_NAMES[hint]}; got {value!r} ({type(value).__name__}).")
    return value


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def resolve_config(file_values: dict[str, Any], flag_values: dict[str, Any]) -> TrainConfig:
    """Layer the settings: TrainConfig's defaults < the recipe < the file < the flags.

    The recipe is the flags' if they name one, else the file's; the result records it.
    """
    from .train.config import TrainConfig

    recipe = flag_values.get("recipe", file_values.get("recipe"))
    settings = {k: v for k, v in {**file_values, **flag_values}.items() if k != "recipe"}
    return TrainConfig.from_recipe(recipe, **settings) if recipe is not None else TrainConfig(**settings)


def train_config(arguments: dict[str, Any]) -> TrainConfig:
    """The run a parsed ``adq-fx train`` command line describes (its --config file read and layered)."""
    flags = {k: v for k, v in arguments.items() if k not in ("command", "config", "print_config")}
    for name, value in flags.items():
        if isinstance(value, list):  # nargs="+" gives lists; TrainConfig holds tuples
            flags[name] = tuple(value)
    path = arguments.get("config")
    from_file = config_values(read_config_file(path), f"--config {path}") if path else {}
    return resolve_config(from_file, flags)


def _train(arguments: dict[str, Any], parser: argparse.ArgumentParser) -> int:
    try:
        config = train_config(arguments)
    except ValueError as err:  # a bad file, key, type or value: argparse's form, without the long usage
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    if arguments.get("print_config"):
        print(json.dumps(asdict(config), indent=2))
        return 0
    from .train.engine import run_training

    results = run_training(config)
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun, rank 0 reports
    if results.get("stopped"):
        print(f"{results['reason']}; continue with the same command and --resume")
        return 0
    print(format_summary(results))
    return 0


def format_summary(results: dict[str, Any]) -> str:
    """The run at a glance, as an aligned table: accuracies, bits, size, time and where it all went."""
    data, size = results["data"], results["size_bits"]
    int8 = results.get("int8_accuracy")
    rows = [
        ("data", f"{data['name']} ({data['train']} train / {data['test']} test)"),
        ("float top-1", f"{results['float_accuracy']:.2f}%"),
        ("QAT top-1", f"{results['qat_accuracy']:.2f}%"),
        ("converted reference top-1", f"{results['converted_accuracy']:.2f}%"),
        ("int8 top-1", f"{int8:.2f}%" if int8 is not None else f"skipped: {results.get('int8_skipped')}"),
        (
            "average bits",
            f"{results['average_bits']:.3f} (parameter-weighted {results['parameter_weighted_bits']:.3f})",
        ),
        ("size", f"{size['float'] / 8192:.1f} KiB float -> {size['converted'] / 8192:.1f} KiB quantized"),
        ("seconds", f"{results['seconds']:.1f}"),
        ("out dir", str(results["config"]["out_dir"])),
    ]
    if "machine" in results:
        rows.insert(1, ("device", str(results["machine"]["device"])))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:{width}}  {value}" for label, value in rows)
