"""The training recipe on the embedded digits data: end to end, resume, devices, KD, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import adq_fx
from adq_fx.cli import main
from adq_fx.train.config import TrainConfig
from adq_fx.train.data import random_crop_flip
from adq_fx.train.engine import TrainingDiverged, run_training
from adq_fx.train.kd import distillation_loss
from adq_fx.train.models import CifarResNet, build_model


def _config(tmp_path, **overrides) -> TrainConfig:
    settings = {
        "out_dir": str(tmp_path),
        "float_epochs": 2,
        "epochs": 2,
        "float_lr": 0.1,
        "progress": False,
        "plots": False,
        "batch_size": 64,
    }
    settings.update(overrides)
    return TrainConfig(**settings)


def test_recipe_end_to_end_with_mixed_precision_and_kd(tmp_path) -> None:
    board = tmp_path / "tensorboard"
    results = run_training(
        _config(tmp_path, mixed_precision=True, target_bits=2.5, kd=True, plots=True, tensorboard=str(board))
    )
    assert results["converted_accuracy"] == results["qat_accuracy"]
    assert results["float_accuracy"] > 30.0
    assert set(results["bit_plan"]) == set(results["sensitivities"]) == {"conv2", "conv3", "hidden"}
    assert sum(b for b, _ in results["bit_plan"].values()) == 8  # round(3 layers x 2.5)
    assert results["size_bits"]["converted"] < results["size_bits"]["float"]
    assert [h["epoch"] for h in results["history"]["qat"]] == [0, 1]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["machine"]["torch"] == torch.__version__ and saved["config"]["kd"] is True
    for name in ("curves.png", "bits.png", "codebooks.png", "converted.pt", "qat_last.pt"):
        assert (tmp_path / name).stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(board)).Reload()
    assert {"float/loss", "qat/loss", "qat/lr", "qat/images_per_second", "qat/epoch_test_acc"} <= set(
        events.Tags()["scalars"]
    )
    assert [e.step for e in events.Scalars("qat/epoch_test_acc")] == [0, 1]


def test_resume_continues_bit_identically(tmp_path) -> None:
    straight = run_training(_config(tmp_path / "straight", epochs=3))
    first = run_training(_config(tmp_path / "pieces", epochs=3, stop_after_epochs=3))
    assert first["stopped"]
    # then stop within an epoch (23 steps of 64 images each), checkpointing every 4 steps on the way
    middle = run_training(
        _config(tmp_path / "pieces", epochs=3, resume=True, stop_after_steps=10, checkpoint_every=4)
    )
    assert middle["stopped"] and "step 10 of 23" in middle["reason"]
    resumed = run_training(_config(tmp_path / "pieces", epochs=3, resume=True))

    def metrics(results: dict) -> dict:  # wall time differs, everything else must not
        return {
            phase: [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in history]
            for phase, history in results["history"].items()
        }

    assert metrics(resumed) == metrics(straight)
    assert len(resumed["history"]["float"]) == 2 and len(resumed["history"]["qat"]) == 3
    a = torch.load(tmp_path / "straight" / "converted.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "pieces" / "converted.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]) if isinstance(a[key], torch.Tensor) else a[key] == b[key], key


def test_bf16_autocast_and_channels_last_on_cpu(tmp_path) -> None:
    results = run_training(_config(tmp_path, bf16=True, channels_last=True, float_epochs=1, epochs=1))
    assert results["machine"]["bf16"] and results["machine"]["channels_last"]
    assert results["qat_accuracy"] > 20.0  # 10 classes: training under bf16 learned something
    # the quantizers compare in fp32, so only the bf16 convolutions differ between QAT and LUT layers
    assert abs(results["converted_accuracy"] - results["qat_accuracy"]) <= 1.0


def test_torch_compile_runs_the_quantizers(tmp_path) -> None:
    pytest.importorskip("torch._dynamo")
    results = run_training(_config(tmp_path, compile=True, float_epochs=1, epochs=1))
    assert results["qat_accuracy"] == results["converted_accuracy"]


def test_distillation_loss_matches_soft_cross_entropy() -> None:
    student, teacher = torch.randn(4, 5), torch.randn(4, 5)
    expected = -(teacher.softmax(1) * student.log_softmax(1)).sum(1).mean()
    assert torch.allclose(distillation_loss(student, teacher), expected)
    targets = torch.randint(0, 5, (4,))
    mixed = distillation_loss(student, teacher, targets, hard_weight=0.5)
    hard = torch.nn.functional.cross_entropy(student, targets)
    assert torch.allclose(mixed, 0.5 * expected + 0.5 * hard)
    with pytest.raises(ValueError, match="hard targets"):
        distillation_loss(student, teacher, hard_weight=0.5)
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(student, teacher, temperature=0.0)


def test_cifar_resnets_have_the_published_sizes() -> None:
    sizes = {depth: sum(p.numel() for p in CifarResNet(depth).parameters()) for depth in (20, 32, 56)}
    assert sizes == {20: 269722, 32: 464154, 56: 853018}  # He et al. 2016: 0.27M, 0.46M, 0.85M
    with pytest.raises(ValueError, match="6n \\+ 2"):
        CifarResNet(21)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("no_such_net", 10)


def test_random_crop_flip_keeps_content_and_shape() -> None:
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    out = random_crop_flip(x, padding=0, generator=torch.Generator().manual_seed(0))
    for i in range(2):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))


@pytest.mark.parametrize(("weight", "activation"), [("n2uq", "n2uq"), ("lsq", "lsq"), ("post", "asq")])
def test_baseline_quantizers_through_the_recipe(tmp_path, weight, activation) -> None:
    results = run_training(
        _config(tmp_path, weight_quantizer=weight, activation_quantizer=activation, float_epochs=1, epochs=1)
    )
    assert results["converted_accuracy"] == results["qat_accuracy"]
    saved = torch.load(tmp_path / "converted.pt", weights_only=True)["quantization_map"]
    methods = {(e["weight_method"], e["activation_method"]) for e in saved.values()}
    assert methods == {(weight, activation)}  # the map names each quantizer as the CLI does


def test_torchrun_with_two_processes_on_cpu(tmp_path) -> None:
    """DDP through torchrun (gloo): rank 0 alone writes results; training and convert agree."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(29500 + os.getpid() % 1000),
        "-m",
        "adq_fx",
        "train",
        "--out-dir",
        str(tmp_path),
        "--float-epochs",
        "1",
        "--epochs",
        "1",
        "--train-subset",
        "512",
        "--no-progress",
        "--no-plots",
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("converted") == 1  # one report, from rank 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["machine"]["world_size"] == 2
    assert results["converted_accuracy"] == results["qat_accuracy"]


def test_train_config_validation() -> None:
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainConfig(target_bits=2.5)
    with pytest.raises(ValueError, match="bit_options"):
        TrainConfig(bit_options=(1, 2))
    # the registered names (adq_fx.registry), sorted
    with pytest.raises(ValueError, match=r"weight_quantizer='pact'\) must be 'adq', 'lsq', 'n2uq' or 'post'"):
        TrainConfig(weight_quantizer="pact")
    with pytest.raises(ValueError, match=r"activation_quantizer='adq'\) must be 'asq', 'lsq' or 'n2uq'"):
        TrainConfig(activation_quantizer="adq")
    with pytest.raises(ValueError, match=r"threshold_init='lsq'\) must be 'auto', 'uniform' or 'first_b"):
        TrainConfig(threshold_init="lsq")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"kernels='fast'\) must be 'auto', 'eager' or 'compiled'"):
        TrainConfig(kernels="fast")  # type: ignore[arg-type]


def test_a_run_uses_its_kernel_backend_and_first_batch_thresholds_then_restores_the_backend(tmp_path) -> None:
    before = adq_fx.get_kernel_backend()
    results = run_training(
        _config(tmp_path, float_epochs=1, epochs=1, kernels="eager", threshold_init="first_batch")
    )
    assert results["machine"]["kernels"] == "eager"
    assert adq_fx.get_kernel_backend() == before
    assert results["converted_accuracy"] == results["qat_accuracy"]
    state = torch.load(tmp_path / "qat_last.pt", weights_only=False)["model"]
    initialised = {k: v for k, v in state.items() if k.endswith("input_quantizer.initialized")}
    assert initialised and all(bool(v) for v in initialised.values())
    betas = [v for k, v in state.items() if k.endswith("input_quantizer.beta1")]
    assert betas and all(v.item() != 1.0 for v in betas)  # scaled from data, not N2UQ's fixed start


def test_cli_train(tmp_path, capsys) -> None:
    assert (
        main(
            [
                "train",
                "--out-dir",
                str(tmp_path),
                "--float-epochs",
                "1",
                "--epochs",
                "1",
                "--no-progress",
                "--no-plots",
                "--target-bits",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "converted" in out and "parameter-weighted" in out


def test_a_diverging_run_stops_with_a_clear_error_and_checkpoints_no_broken_weights(tmp_path) -> None:
    with pytest.raises(
        TrainingDiverged,
        match=r"float phase, epoch 1: the (training loss is (nan|inf)|model's state is not finite).*--float-",
    ):
        run_training(_config(tmp_path, float_lr=1e6, checkpoint_every=2))
    for path in tmp_path.rglob("*.pt"):  # whatever was saved came from before the divergence
        state = torch.load(path, weights_only=False, map_location="cpu")["model"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), path


def test_min_loss_allocation_plans_from_the_float_models_noise_weights(tmp_path) -> None:
    settings = {"float_epochs": 1, "epochs": 1, "mixed_precision": True, "target_bits": 3.0}
    results = run_training(_config(tmp_path, bit_allocation="min_loss", **settings))
    assert results["config"]["bit_allocation"] == "min_loss"
    float_model = build_model("digits_cnn", 10, in_channels=1)
    float_model.load_state_dict(torch.load(tmp_path / "float.pt", weights_only=True)["model"])
    noise = adq_fx.layer_noise_weights(float_model, results["sensitivities"])
    expected = adq_fx.allocate_bits_min_loss(noise, 3.0)
    assert {name: bits for name, (bits, _) in results["bit_plan"].items()} == expected
    assert expected != adq_fx.allocate_bits(results["sensitivities"], 3.0)  # the rules differ on this net


def test_resume_refuses_quantizers_configured_otherwise_than_the_checkpoint(tmp_path) -> None:
    """A run started under other quantizer settings (a default changed since, say) is not resumed."""
    first = run_training(
        _config(tmp_path, float_epochs=1, epochs=2, stop_after_epochs=2, commitment_units="channel")
    )
    assert first["stopped"]
    expected = r"commitment_units is 'channel' in the checkpoint and 'layer' now.*--commitment-units channel"
    with pytest.raises(ValueError, match=expected):
        run_training(_config(tmp_path, float_epochs=1, epochs=2, resume=True))
    resumed = run_training(
        _config(tmp_path, float_epochs=1, epochs=2, resume=True, commitment_units="channel")
    )
    assert not resumed.get("stopped") and len(resumed["history"]["qat"]) == 2
