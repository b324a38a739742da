"""ADQConfigMapping.config_for on hand-made LayerSites: torch.ao QConfigMapping precedence."""

from __future__ import annotations

import pytest
from torch import nn

from adq_fx import ADQConfig, ADQConfigMapping, default_qconfig_mapping
from adq_fx.mapping import LayerSite

C2, C3, C4, C5, C6, C7 = (ADQConfig.with_bits(b) for b in range(2, 8))


def site(
    name: str, module_type: type[nn.Module] = nn.Conv2d, *, first: bool = False, last: bool = False
) -> LayerSite:
    return LayerSite(name=name, module_type=module_type, is_first_conv=first, is_last_linear=last)


def test_empty_mapping_keeps_everything_float() -> None:
    mapping = ADQConfigMapping()
    assert mapping.config_for(site("a.conv")) is None
    assert mapping.config_for(site("fc", nn.Linear)) is None


def test_global_applies_to_every_site_but_first_and_last() -> None:
    mapping = ADQConfigMapping().set_global(C3)
    assert mapping.config_for(site("a.conv")) is C3
    assert mapping.config_for(site("a.fc", nn.Linear)) is C3
    assert mapping.config_for(site("stem", first=True)) is None
    assert mapping.config_for(site("fc", nn.Linear, last=True)) is None


def test_keep_first_and_last_float_false_quantizes_them() -> None:
    mapping = ADQConfigMapping(keep_first_and_last_float=False).set_global(C3)
    assert mapping.config_for(site("stem", first=True)) is C3
    assert mapping.config_for(site("fc", nn.Linear, last=True)) is C3


def test_default_qconfig_mapping() -> None:
    mapping = default_qconfig_mapping(4)
    config = mapping.config_for(site("layer.conv"))
    assert config == ADQConfig.with_bits(4)
    assert config.weight.bits == 4 and config.activation.bits == 4
    assert mapping.config_for(site("stem", first=True)) is None
    assert default_qconfig_mapping(4, keep_first_and_last_float=False).config_for(
        site("stem", first=True)
    ) == ADQConfig.with_bits(4)


def test_object_type_beats_global_and_matches_exact_type() -> None:
    class MyConv(nn.Conv2d):
        pass

    mapping = (
        ADQConfigMapping().set_global(C3).set_object_type(nn.Conv2d, C5).set_object_type(nn.Linear, None)
    )
    assert mapping.config_for(site("a")) is C5
    assert mapping.config_for(site("b", nn.Linear)) is None
    assert mapping.config_for(site("c", MyConv)) is C3  # exact type, not isinstance


def test_first_last_rule_beats_object_type() -> None:
    mapping = ADQConfigMapping().set_object_type(nn.Conv2d, C5).set_object_type(nn.Linear, C4)
    assert mapping.config_for(site("stem", first=True)) is None
    assert mapping.config_for(site("fc", nn.Linear, last=True)) is None


def test_regex_beats_first_last_rule_and_object_type() -> None:
    mapping = (
        ADQConfigMapping().set_global(C2).set_object_type(nn.Conv2d, C5).set_module_name_regex(r"stem|fc", C6)
    )
    assert mapping.config_for(site("stem", first=True)) is C6
    assert mapping.config_for(site("fc", nn.Linear, last=True)) is C6
    assert mapping.config_for(site("layer.conv")) is C5


def test_regex_uses_re_match_from_the_start() -> None:
    mapping = ADQConfigMapping().set_global(C2).set_module_name_regex(r"conv", C6)
    assert mapping.config_for(site("conv1")) is C6
    assert mapping.config_for(site("layer.conv1")) is C2  # re.match anchors at the start


def test_first_registered_matching_regex_wins() -> None:
    mapping = (
        ADQConfigMapping()
        .set_global(C2)
        .set_module_name_regex(r"layer1\.", C4)
        .set_module_name_regex(r"layer1\.conv2", C6)
    )
    assert mapping.config_for(site("layer1.conv2")) is C4
    assert mapping.config_for(site("layer2.conv2")) is C2
    swapped = (
        ADQConfigMapping()
        .set_global(C2)
        .set_module_name_regex(r"layer1\.conv2", C6)
        .set_module_name_regex(r"layer1\.", C4)
    )
    assert swapped.config_for(site("layer1.conv2")) is C6
    assert swapped.config_for(site("layer1.conv1")) is C4


def test_regex_none_keeps_float_over_global() -> None:
    mapping = ADQConfigMapping().set_global(C3).set_module_name_regex(r".*downsample", None)
    assert mapping.config_for(site("layer2.downsample.0")) is None
    assert mapping.config_for(site("layer2.conv1")) is C3


def test_module_name_beats_everything() -> None:
    mapping = (
        ADQConfigMapping()
        .set_global(C2)
        .set_object_type(nn.Linear, C3)
        .set_module_name_regex(r"fc", C4)
        .set_module_name("fc", C7)
    )
    assert mapping.config_for(site("fc", nn.Linear, last=True)) is C7
    mapping.set_module_name("fc", None)
    assert mapping.config_for(site("fc", nn.Linear, last=True)) is None


def test_module_name_covers_descendants_nearest_ancestor_wins() -> None:
    mapping = (
        ADQConfigMapping()
        .set_global(C2)
        .set_module_name("layer2", C4)
        .set_module_name("layer2.block1", C6)
        .set_module_name("layer2.block0.conv1", None)
    )
    assert mapping.config_for(site("layer2.block0.conv2")) is C4
    assert mapping.config_for(site("layer2.block0.conv1")) is None
    assert mapping.config_for(site("layer2.block1.conv1")) is C6
    assert mapping.config_for(site("layer2.block1.downsample.0")) is C6
    assert mapping.config_for(site("layer2")) is C4
    assert mapping.config_for(site("layer3.block0.conv1")) is C2


def test_module_name_ancestor_matches_whole_name_components_only() -> None:
    mapping = ADQConfigMapping().set_global(C2).set_module_name("layer1", C5)
    assert mapping.config_for(site("layer10.conv")) is C2
    assert mapping.config_for(site("layer1_conv")) is C2
    assert mapping.config_for(site("layer1.conv")) is C5


def test_module_name_ancestor_beats_regex_on_the_child() -> None:
    mapping = (
        ADQConfigMapping()
        .set_global(C2)
        .set_module_name_regex(r"layer1\.conv1", C6)
        .set_module_name("layer1", C4)
    )
    assert mapping.config_for(site("layer1.conv1")) is C4


def test_module_name_ancestor_beats_first_conv_rule() -> None:
    mapping = ADQConfigMapping().set_global(C3).set_module_name("features", C5)
    assert mapping.config_for(site("features.0", first=True)) is C5


def test_empty_module_name_is_the_root_and_covers_everything() -> None:
    mapping = ADQConfigMapping().set_global(C2).set_module_name("", C5)
    assert mapping.config_for(site("a.b.c")) is C5
    assert mapping.config_for(site("stem", first=True)) is C5


@pytest.mark.parametrize("setter", ["global", "object_type", "regex", "module_name"])
def test_later_set_of_the_same_key_overrides(setter: str) -> None:
    mapping = ADQConfigMapping()
    for config in (C4, C6):
        if setter == "global":
            mapping.set_global(config)
        elif setter == "object_type":
            mapping.set_object_type(nn.Conv2d, config)
        elif setter == "regex":
            mapping.set_module_name_regex(r"layer", config)
        else:
            mapping.set_module_name("layer.conv", config)
    assert mapping.config_for(site("layer.conv")) is C6


def test_regex_reregistered_keeps_its_original_position() -> None:
    # a dict keeps insertion order on update: resetting the first regex does not move it behind the second
    mapping = (
        ADQConfigMapping()
        .set_module_name_regex(r"a", C2)
        .set_module_name_regex(r"a\.b", C3)
        .set_module_name_regex(r"a", C4)
    )
    assert mapping.config_for(site("a.b")) is C4


def test_setters_chain_and_repr_lists_entries() -> None:
    mapping = ADQConfigMapping(keep_first_and_last_float=False)
    assert mapping.set_global(C3) is mapping
    assert mapping.set_object_type(nn.Linear, None) is mapping
    assert mapping.set_module_name_regex("x", C4) is mapping
    assert mapping.set_module_name("y", C5) is mapping
    text = repr(mapping)
    assert "keep_first_and_last_float=False" in text and "'x'" in text and "'y'" in text


def test_check_all_entries_used_accepts_entries_that_match() -> None:
    sites = [site("stem", first=True), site("layer1.conv1"), site("fc", nn.Linear, last=True)]
    mapping = (
        ADQConfigMapping()
        .set_object_type(nn.Linear, C3)
        .set_module_name_regex(r"layer", C4)
        .set_module_name("layer1", C5)
        .set_module_name("stem", None)
    )
    mapping.check_all_entries_used(sites, {"stem", "layer1", "layer1.conv1", "fc"})


def test_check_all_entries_used_names_the_unused_entry() -> None:
    sites = [site("stem", first=True), site("layer1.conv1")]
    with pytest.raises(ValueError, match=r"set_module_name\('layer1.bn'\).*it is not a Conv2d/Linear"):
        ADQConfigMapping().set_module_name("layer1.bn", C3).check_all_entries_used(
            sites, {"stem", "layer1", "layer1.conv1", "layer1.bn"}
        )
    with pytest.raises(ValueError, match=r"set_module_name\('layer'\).*no such module"):
        ADQConfigMapping().set_module_name("layer", C3).check_all_entries_used(sites, {"stem", "layer1"})
    with pytest.raises(ValueError, match=r"set_object_type\(Linear\).*quantizable types present: Conv2d"):
        ADQConfigMapping().set_object_type(nn.Linear, C3).check_all_entries_used(sites, set())
