"""The embedded default run and its command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from adq_fx.cli import main
from adq_fx.demo import DemoConfig, run_demo
from adq_fx.train.data import load_digits_tensors


def test_digits_data_ships_with_scikit_learn() -> None:
    x_train, y_train, x_test, y_test = load_digits_tensors()
    assert len(y_train) == len(x_train)
    assert x_train.shape[1:] == (1, 8, 8) and len(x_train) + len(x_test) == 1797
    assert float(x_train.min()) >= 0.0 and float(x_train.max()) <= 1.0
    assert set(y_test.tolist()) == set(range(10))


def test_run_demo_trains_quantizes_and_converts() -> None:
    results = run_demo(DemoConfig(float_epochs=3, qat_epochs=1, bits=(2,), progress=False))
    float_row, adq_row = results["rows"]
    assert float_row["accuracy"] > 50.0  # three epochs on digits learn something real
    assert adq_row["bits"] == "2/2"
    assert adq_row["converted_accuracy"] == adq_row["accuracy"]
    assert adq_row["max_abs_diff"] <= 1e-5 * adq_row["max_abs_logit"]
    assert adq_row["size_kib"] < float_row["size_kib"] / 4
    assert results["machine"]["torch"] == torch.__version__ and results["machine"]["cpu"]


def test_run_demo_is_deterministic_for_a_seed() -> None:
    config = DemoConfig(float_epochs=1, qat_epochs=1, bits=(3,), progress=False)
    first, second = run_demo(config), run_demo(config)
    assert [r["accuracy"] for r in first["rows"]] == [r["accuracy"] for r in second["rows"]]


def test_cli_prints_table_and_writes_json(tmp_path, capsys) -> None:
    out = tmp_path / "demo.json"
    assert (
        main(
            [
                "demo",
                "--float-epochs",
                "1",
                "--qat-epochs",
                "1",
                "--bits",
                "3",
                "--no-progress",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "| ADQ | 3/3 |" in printed and "| float | 32/32 |" in printed
    assert json.loads(out.read_text())["config"]["bits"] == [3]


def test_python_dash_m_entry_point() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "adq_fx", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and "demo" in done.stdout


@pytest.mark.parametrize("kwargs", [{"float_epochs": 0}, {"qat_epochs": 0}, {"bits": ()}])
def test_demo_config_rejects_bad_values(kwargs) -> None:
    with pytest.raises(ValueError, match="DemoConfig"):
        DemoConfig(**kwargs)
