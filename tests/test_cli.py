"""`adq-fx train`'s flags, --config files, --recipe and their layering; no training (--print-config)."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from adq_fx.cli import config_values, format_summary, main, read_config_file, resolve_config
from adq_fx.train.config import GROUPS, RECIPES, TrainConfig


def _resolved(capsys, *argv: str) -> dict:
    """The config `adq-fx train ... --print-config` prints."""
    assert main(["train", *argv, "--print-config"]) == 0
    return json.loads(capsys.readouterr().out)


def _error(capsys, *argv: str) -> str:
    """What `adq-fx train ...` says on stderr when it refuses the settings."""
    with pytest.raises(SystemExit) as exit_:
        main(["train", *argv, "--print-config"])
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_every_field_has_a_help_sentence_and_a_known_group() -> None:
    for field in fields(TrainConfig):
        assert field.metadata.get("help", "").endswith("."), f"{field.name}: add metadata help=..."
        assert field.metadata.get("group") in GROUPS, (
            f"{field.name}: add metadata group= one of {list(GROUPS)}"
        )


def test_help_shows_every_group_and_the_dataclass_defaults(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for group in ("data", "model", "quantization", "schedule", "distillation", "system"):
        assert f"\n{group}:\n" in out
    assert "(default: 10)" in out  # epochs, though the parser's own defaults are SUPPRESS
    assert "--kd, --no-kd" in out and "--config FILE" in out and "--print-config" in out


def test_print_config_without_anything_is_the_dataclass_defaults(capsys) -> None:
    resolved = _resolved(capsys)
    assert TrainConfig(**config_values(resolved, "printed")) == TrainConfig()


def test_layering_defaults_recipe_file_flags(tmp_path, capsys) -> None:
    run = tmp_path / "run.toml"
    run.write_text('recipe = "cifar10"\nepochs = 3\nlr = 0.2\n')
    resolved = _resolved(capsys, "--config", str(run), "--lr", "0.5")
    assert resolved["recipe"] == "cifar10"
    assert resolved["model"] == RECIPES["cifar10"]["model"]  # recipe over the default
    assert resolved["validation"] == RECIPES["cifar10"]["validation"]
    assert resolved["epochs"] == 3  # file over the recipe
    assert resolved["lr"] == 0.5  # flag over the file
    assert resolved["momentum"] == TrainConfig().momentum  # no one set it


def test_the_recipe_flag_wins_over_the_files(tmp_path, capsys) -> None:
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"recipe": "cifar10", "epochs": 2}))
    resolved = _resolved(capsys, "--config", str(run), "--recipe", "imagenet")
    assert resolved["recipe"] == "imagenet" and resolved["model"] == "resnet18"
    assert resolved["epochs"] == 2  # the file still sits over the recipe


def test_recipe_print_config_shows_what_the_recipe_sets(capsys) -> None:
    resolved = _resolved(capsys, "--recipe", "imagenet")
    for key, value in RECIPES["imagenet"].items():
        assert resolved[key] == (list(value) if isinstance(value, tuple) else value)


def test_kebab_case_keys_and_tuple_fields_from_file_lists(tmp_path) -> None:
    run = tmp_path / "run.toml"
    run.write_text('bit-options = [2, 4]\nfloat_checkpoint_rename = ["linear.=fc."]\nfloat-lr = 1\n')
    config = resolve_config(config_values(read_config_file(run), str(run)), {})
    assert config.bit_options == (2, 4) and config.float_checkpoint_rename == ("linear.=fc.",)
    assert config.float_lr == 1.0 and isinstance(config.float_lr, float)


def test_tuple_fields_from_flags_override_the_file(tmp_path, capsys) -> None:
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"bit_options": [2, 4], "float_checkpoint_rename": ["a.=b."]}))
    resolved = _resolved(
        capsys, "--config", str(run), "--bit-options", "3", "4", "--float-checkpoint-rename", "linear.=fc."
    )
    assert resolved["bit_options"] == [3, 4] and resolved["float_checkpoint_rename"] == ["linear.=fc."]


def test_bool_flags_override_the_files_value(tmp_path, capsys) -> None:
    run = tmp_path / "run.toml"
    run.write_text("kd = true\nplots = false\n")
    assert _resolved(capsys, "--config", str(run))["kd"] is True
    resolved = _resolved(capsys, "--config", str(run), "--no-kd", "--plots")
    assert resolved["kd"] is False and resolved["plots"] is True


def test_a_runs_results_json_repeats_that_run(tmp_path, capsys) -> None:
    config = TrainConfig.from_recipe("cifar10", epochs=4, bit_options=(2, 3))
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"config": json.loads(json.dumps(vars(config))), "qat_accuracy": 50.0}))
    resolved = _resolved(capsys, "--config", str(results))
    assert TrainConfig(**config_values(resolved, "printed")) == config
    assert _resolved(capsys, "--config", str(results), "--epochs", "5")["epochs"] == 5
    # the last piece of a run cut with --stop-after-steps and --resume repeats as the whole run
    pieces = TrainConfig.from_recipe("cifar10", resume=True, stop_after_steps=7, stop_after_epochs=1)
    results.write_text(json.dumps({"config": json.loads(json.dumps(vars(pieces)))}))
    resolved = _resolved(capsys, "--config", str(results))
    assert [resolved[k] for k in ("resume", "stop_after_steps", "stop_after_epochs")] == [False, None, None]


def test_yaml_when_pyyaml_is_there(tmp_path, capsys) -> None:
    pytest.importorskip("yaml")
    run = tmp_path / "run.yaml"
    run.write_text("epochs: 2\nkd-teacher: null\nbit_options: [3, 4]\n")
    resolved = _resolved(capsys, "--config", str(run))
    assert resolved["epochs"] == 2 and resolved["kd_teacher"] is None and resolved["bit_options"] == [3, 4]


def test_yaml_without_pyyaml_says_what_to_do(tmp_path, monkeypatch) -> None:
    import importlib

    real = importlib.import_module

    def without_yaml(name: str, *args, **kwargs):
        if name == "yaml":
            raise ImportError("No module named 'yaml'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", without_yaml)
    run = tmp_path / "run.yml"
    run.write_text("epochs: 2\n")
    with pytest.raises(ValueError, match=r"pip install pyyaml.*TOML or JSON"):
        read_config_file(run)


def test_unknown_key_names_the_key_the_file_and_the_closest_field(tmp_path, capsys) -> None:
    run = tmp_path / "run.toml"
    run.write_text("bit_option = [2, 3]\n")
    err = _error(capsys, "--config", str(run))
    assert "'bit_option'" in err and str(run) in err and "did you mean 'bit_options'" in err


def test_wrong_types_name_the_key(tmp_path, capsys) -> None:
    for text, key in (
        ('epochs = "3"', "epochs"),
        ("kd = 1", "kd"),
        ("epochs = true", "epochs"),
        ("bit_options = 3", "bit_options"),
        ('loader = "disk"', "loader"),
        ("[model]\nname = 'x'", "model"),
    ):
        run = tmp_path / "run.toml"
        run.write_text(text + "\n")
        err = _error(capsys, "--config", str(run))
        assert f"{run}: {key}" in err, err


def test_bad_files_are_refused_clearly(tmp_path, capsys) -> None:
    assert "cannot read it" in _error(capsys, "--config", str(tmp_path / "missing.toml"))
    ini = tmp_path / "run.ini"
    ini.write_text("epochs = 3\n")
    assert "use .toml, .json or .yaml" in _error(capsys, "--config", str(ini))
    broken = tmp_path / "run.json"
    broken.write_text("{epochs: 3")
    assert "not valid JSON" in _error(capsys, "--config", str(broken))
    twice = tmp_path / "twice.toml"
    twice.write_text("bit-options = [2]\nbit_options = [3]\n")
    assert "sets bit_options a second time" in _error(capsys, "--config", str(twice))
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    assert "expected a table of settings" in _error(capsys, "--config", str(listed))


def test_invalid_values_are_trainconfigs_own_errors(tmp_path, capsys) -> None:
    run = tmp_path / "run.toml"
    run.write_text('recipe = "mnist"\n')
    assert "unknown recipe 'mnist'" in _error(capsys, "--config", str(run))
    assert "must be positive" in _error(capsys, "--lr", "-1")


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("codebook_levels", "TrainConfig(codebook_levels='half') must be 'alg1' or 'full'."),
        ("commitment_units", "TrainConfig(commitment_units='half') must be 'channel' or 'layer'."),
        ("loader", "TrainConfig(loader='half') must be 'auto', 'memory' or 'stream'."),
    ],
)
def test_every_choice_field_is_checked_at_construction(field: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        TrainConfig(dataset="digits", **{field: "half"})
    assert str(info.value) == message


def test_summary_is_an_aligned_table() -> None:
    results = {
        "data": {"name": "digits", "train": 1437, "validation": 0, "test": 360},
        "float_accuracy": 97.5,
        "qat_accuracy": 96.25,
        "converted_accuracy": 96.25,
        "int8_accuracy": None,
        "int8_skipped": "no oneDNN",
        "average_bits": 3.0,
        "parameter_weighted_bits": 3.0,
        "size_bits": {"float": 8192 * 100, "converted": 8192 * 10},
        "seconds": 12.34,
        "config": {"out_dir": "runs/digits"},
    }
    lines = format_summary(results).splitlines()
    values = {line[: line.index("  ")]: line[line.index("  ") :].strip() for line in lines}
    assert values["QAT top-1"] == "96.25%" and values["converted reference top-1"] == "96.25%"
    assert values["int8 top-1"] == "skipped: no oneDNN"
    assert values["size"] == "100.0 KiB float -> 10.0 KiB quantized"
    assert values["out dir"] == "runs/digits" and values["seconds"] == "12.3"
    starts = {len(line) - len(line[line.index("  ") :].lstrip()) for line in lines}
    assert len(starts) == 1  # every value starts in the same column
    assert format_summary(results).count("converted") == 1  # test_train's torchrun test counts reports by it
