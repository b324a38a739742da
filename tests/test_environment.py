"""What results record about the machine."""

from __future__ import annotations

import platform

import torch

from adq_fx.environment import describe, machine_info


def test_machine_info_records_versions_threads_and_device() -> None:
    info = machine_info()
    assert info["torch"] == torch.__version__ and info["python"] == platform.python_version()
    assert info["threads"] == torch.get_num_threads() and info["device"] == "cpu" and info["gpu"] is None
    assert info["cpu"] and info["cores"] >= 1
    line = describe(info)
    assert f"torch {torch.__version__}" in line and f"{info['threads']} threads" in line


def test_describe_names_the_gpu_when_one_was_used() -> None:
    info = {**machine_info(), "gpu": "Some GPU", "device": "cuda:0"}
    assert describe(info).startswith("Some GPU;")
