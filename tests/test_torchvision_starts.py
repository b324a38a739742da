"""Starts from torchvision: pre-trained weights (--pretrained), a named KD teacher, the imagenet recipe."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
from torchvision.models._api import WeightsEnum

from adq_fx.train.config import RECIPES, TrainConfig
from adq_fx.train.models import build_model, build_teacher, load_pretrained, pretrained_weights

MODEL = "squeezenet1_1"  # the smallest torchvision classifier with pre-trained weights (1.2 M parameters)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> dict[str, torch.Tensor]:
    """torch.hub's cache holding a stand-in for MODEL's ImageNet weights, as a user copies it offline."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    torch.manual_seed(4)
    state = build_model(MODEL, 1000).state_dict()
    url = pretrained_weights(MODEL).url
    target = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[1]
    target.parent.mkdir(parents=True)
    torch.save(state, target)
    yield state
    torch.hub.set_dir(previous)


def test_pretrained_weights_load_from_the_hub_cache(hub_cache) -> None:
    model = build_model(MODEL, 1000)
    assert load_pretrained(model, MODEL) == []
    for key, value in model.state_dict().items():
        assert torch.equal(value, hub_cache[key]), key


def test_pretrained_weights_with_another_class_count_keep_a_fresh_classifier_and_say_so(hub_cache) -> None:
    model = build_model(MODEL, 10)
    fresh_classifier = model.classifier[1].weight.clone()
    with pytest.warns(UserWarning, match=r"classifier\.1\.weight.*10 classes, the weights 1000"):
        fresh = load_pretrained(model, MODEL)
    assert fresh == ["classifier.1.weight", "classifier.1.bias"]
    assert torch.equal(model.classifier[1].weight, fresh_classifier)
    assert torch.equal(model.features[0].weight, hub_cache["features.0.weight"])


def test_without_network_or_cache_the_error_names_the_cause_and_the_alternative(
    tmp_path, monkeypatch
) -> None:
    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    with pytest.raises(RuntimeError, match=r"name resolution.*without network access.*--float-checkpoint"):
        load_pretrained(build_model(MODEL, 1000), MODEL)
    with pytest.raises(RuntimeError, match="--kd-teacher"):
        build_teacher(MODEL, 1000)


def test_models_without_torchvision_weights_point_to_float_checkpoint() -> None:
    with pytest.raises(ValueError, match=r"no pre-trained weights for 'resnet20'.*--float-checkpoint"):
        pretrained_weights("resnet20")


def test_a_teacher_loads_its_weights_and_must_predict_the_students_classes(hub_cache) -> None:
    teacher = build_teacher(MODEL, 1000)
    assert torch.equal(teacher.features[0].weight, hub_cache["features.0.weight"])
    with pytest.raises(ValueError, match="predict 1000 classes, the data has 10"):
        build_teacher(MODEL, 10)


def test_the_imagenet_recipe_is_the_papers_setting_and_flags_override_it() -> None:
    config = TrainConfig.from_recipe("imagenet", epochs=2)
    assert (config.model, config.pretrained, config.lr, config.image_size) == ("resnet18", True, 0.3, 224)
    assert config.epochs == 2 and config.recipe == "imagenet" and config.loader == "stream"
    assert config.mixed_precision and config.target_bits * 16 == 45  # Table 4.3's 2.81 = 45 / 16
    assert set(RECIPES) >= {"imagenet", "cifar10"}
    with pytest.raises(ValueError, match="unknown recipe 'imagenett'"):
        TrainConfig.from_recipe("imagenett")
    with pytest.raises(ValueError, match="float_checkpoint or pretrained, not both"):
        TrainConfig(pretrained=True, float_checkpoint="x.pt")
    TrainConfig(pretrained=True, finetune_epochs=1)  # pre-trained weights may be fine-tuned first
