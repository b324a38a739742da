"""Pre-trained starts: checkpoints from other code, the float cache, the validation split, k-means init."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from adq_fx import functional as qf
from adq_fx.cli import main
from adq_fx.train.checkpoints import find_state_dict, load_float_state, parse_renames, rename_keys
from adq_fx.train.config import TrainConfig
from adq_fx.train.data import load_digits_dataset
from adq_fx.train.engine import run_training
from adq_fx.train.models import build_model


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 10)


def _foreign_checkpoint(tmp_path, model: nn.Module, *, prefix: str = "module.", classifier: str = "linear."):
    """As DataParallel code that names its classifier 'linear' saves it, nested under 'state_dict'."""
    state = {
        prefix + k.replace("fc.", classifier): v
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }  # as checkpoints from before PyTorch 0.4.1
    path = tmp_path / "foreign.th"
    torch.save({"best_prec1": 91.0, "state_dict": state}, path)
    return path


def test_a_foreign_checkpoint_loads_with_its_prefix_stripped_and_one_rename(tmp_path) -> None:
    source = Classifier()
    path = _foreign_checkpoint(tmp_path, source)
    target = Classifier()
    load_float_state(target, path, ["linear.=fc."])
    for key, value in source.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(target.state_dict()[key], value), key


def test_a_checkpoint_that_does_not_fit_names_the_keys_and_the_rename_that_fixes_it(tmp_path) -> None:
    path = _foreign_checkpoint(tmp_path, Classifier())
    with pytest.raises(ValueError, match=r"2 keys missing .*'fc.weight'.*2 unexpected.*rename 'linear.=fc.'"):
        load_float_state(Classifier(), path)
    other = Classifier()
    other.fc = nn.Linear(4, 3)
    with pytest.raises(ValueError, match=r"shapes differ .*fc.weight \(10, 4\) vs \(3, 4\).*classes"):
        load_float_state(other, path, ["linear.=fc."])


def test_checkpoint_helpers_refuse_what_they_cannot_read(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"found no state_dict .*under \('state_dict'"):
        find_state_dict({"epoch": 3, "optimizer": {"lr": 0.1}}, "run.pt")
    with pytest.raises(ValueError, match=r"'linear' must read OLD=NEW"):
        parse_renames(["linear"])
    assert rename_keys({"_orig_mod.a.w": torch.ones(1)}, [("a.", "b.")]).keys() == {"b.w"}
    with pytest.raises(ValueError, match=r"float_checkpoint_rename=\.\.\.'linear'\) must read OLD=NEW"):
        TrainConfig(float_checkpoint="x.pt", float_checkpoint_rename=("linear",))
    with pytest.raises(ValueError, match=r"finetune_epochs=2\) fine-tunes a float_checkpoint"):
        TrainConfig(finetune_epochs=2)


def test_validation_split_is_the_last_images_of_each_class_and_leaves_train() -> None:
    data = load_digits_dataset()
    before_x, before_y = data.train_x.clone(), data.train_y.clone()
    data.hold_out(100)
    assert len(data.val_y) == 100 and len(data.train_y) == len(before_y) - 100
    assert torch.bincount(data.val_y, minlength=10).tolist() == [10] * 10
    for label in range(10):  # the last ten of each class, in the data set's order
        members = (before_y == label).nonzero().flatten()[-10:]
        assert torch.equal(data.val_x[data.val_y == label], before_x[members])
    with pytest.raises(ValueError, match=r"validation=105: use a multiple of the 10 classes"):
        load_digits_dataset().hold_out(105)


def test_the_float_start_is_fine_tuned_once_and_cached_for_later_runs(tmp_path, capsys) -> None:
    torch.manual_seed(0)
    pretrained = build_model("digits_cnn", 10, 1)
    checkpoint = tmp_path / "pretrained.pt"
    torch.save({"model": {"module." + k: v for k, v in pretrained.state_dict().items()}}, checkpoint)
    common = {
        "float_checkpoint": str(checkpoint),
        "finetune_epochs": 1,
        "finetune_lr": 0.05,
        "float_cache": str(tmp_path / "cache"),
        "validation": 100,
        "epochs": 1,
        "progress": False,
        "plots": False,
        "batch_size": 64,
    }
    first = run_training(TrainConfig(out_dir=str(tmp_path / "a"), seed=0, **common))
    cached = list((tmp_path / "cache").glob("float-digits_cnn-*.pt"))
    assert len(cached) == 1 and len(first["history"]["float"]) == 1
    assert first["data"]["validation"] == 100 and first["validation_accuracy"]["converted"] is not None
    # another QAT seed asks for the same start: loaded from the cache, not trained again
    second = run_training(TrainConfig(out_dir=str(tmp_path / "b"), seed=1, **common))
    assert not (tmp_path / "b" / "float_last.pt").exists()
    assert second["float_accuracy"] == first["float_accuracy"]
    assert second["validation_accuracy"]["float"] == first["validation_accuracy"]["float"]
    # a different fine-tune is a different start
    run_training(TrainConfig(out_dir=str(tmp_path / "c"), **{**common, "finetune_lr": 0.02}))
    assert len(list((tmp_path / "cache").glob("float-digits_cnn-*.pt"))) == 2
    assert (
        main(
            [
                "train",
                "--float-checkpoint",
                str(checkpoint),
                "--float-checkpoint-rename",
                "x.=y.",
                "--finetune-epochs",
                "1",
                "--epochs",
                "1",
                "--out-dir",
                str(tmp_path / "d"),
                "--no-progress",
                "--no-plots",
                "--validation",
                "100",
            ]
        )
        == 0
    )


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=0, max_value=2**16), st.sampled_from([2, 3, 4]), st.booleans())
def test_kmeans_init_steps_never_raise_the_quantization_error_and_keep_zero(seed, bits, full) -> None:
    generator = torch.Generator().manual_seed(seed)
    weights = (
        torch.distributions.Laplace(0.0, 1.0).sample((2000,))
        if seed % 2
        else torch.randn(2000, generator=generator)
    )
    init = qf.quantile_codebook(weights, bits, full_levels=full)

    def error(codebook: torch.Tensor) -> float:
        return float((codebook[qf.nearest_codes(weights, codebook)] - weights).pow(2).mean())

    refined = qf.lloyd_codebook(weights, init, 20, pin_zero=not full)
    assert refined.shape == init.shape and bool((refined.diff() >= 0).all())
    assert error(refined) <= error(init) + 1e-7
    if not full:
        assert int((refined == 0).sum()) == 1
    assert torch.equal(qf.lloyd_codebook(weights, init, 0, pin_zero=not full), init)
