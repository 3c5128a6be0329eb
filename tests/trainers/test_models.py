import logging

import pytest
import torch
from torch import nn

from trainers.models import ModelError, build_model


@pytest.mark.parametrize(
    ("kind", "input_shape"),
    [("mlp", (1, 8, 8)), ("mlp", (1, 28, 28)), ("mlp", (64,)), ("cnn", (1, 8, 8)), ("cnn", (1, 28, 28))],
)
def test_builtin_models_map_inputs_to_logits(kind, input_shape):
    model = build_model(kind, input_shape, 10)
    assert model(torch.zeros(3, *input_shape)).shape == (3, 10)


def test_mlp_layers_follow_hidden_widths_without_dropout():
    model = build_model("mlp", (64,), 5, hidden=(32, 16))
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    assert [(layer.in_features, layer.out_features) for layer in linears] == [(64, 32), (32, 16), (16, 5)]
    assert sum(isinstance(module, nn.ReLU) for module in model.modules()) == 2
    assert not any(isinstance(module, nn.Dropout) for module in model.modules())


def test_cnn_head_is_sized_from_the_image():
    model = build_model("cnn", (3, 28, 28), 4, channels=(8, 12))
    convs = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    assert [(conv.in_channels, conv.out_channels) for conv in convs] == [(3, 8), (8, 12)]
    assert model[-1].in_features == 12 * 7 * 7


def test_models_are_deterministic_under_manual_seed():
    torch.manual_seed(0)
    first = build_model("cnn", (1, 8, 8), 10)
    torch.manual_seed(0)
    second = build_model("cnn", (1, 8, 8), 10)
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)


def test_cnn_needs_image_data():
    with pytest.raises(ModelError, match="'cnn' needs image data"):
        build_model("cnn", (64,), 10)


def test_cnn_too_many_pooling_blocks_for_the_image():
    with pytest.raises(ModelError, match="too small for 4 pooling blocks"):
        build_model("cnn", (1, 8, 8), 10, channels=(4, 4, 4, 4))


def test_factory_gets_shape_classes_and_options():
    model = build_model("tests.trainers.toy_factory:make", (1, 8, 8), 3, options={"width": 5})
    assert model[1].out_features == 5
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 3)


def test_factory_gets_only_the_arguments_it_accepts(caplog):
    caplog.set_level(logging.INFO, logger="trainers.models")
    model = build_model("tests.trainers.toy_factory:make_torchvision_style", (1, 8, 8), 3, options={"width": 5})
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    assert "with arguments {'num_classes': 3, 'width': 5}" in caplog.text


def test_factory_taking_kwargs_gets_every_argument():
    model = build_model("tests.trainers.toy_factory:make_from_kwargs", (1, 8, 8), 3, options={"width": 5})
    assert model[1].out_features == 5
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 3)


@pytest.mark.parametrize(
    ("kind", "options", "message"),
    [
        ("tests.trainers.no_such_module:make", None, "cannot import 'tests.trainers.no_such_module'"),
        ("tests.trainers.toy_factory:missing", None, "has no attribute 'missing'"),
        ("tests.trainers.toy_factory:NOT_CALLABLE", None, "'NOT_CALLABLE' is a int, not callable"),
        ("tests.trainers.toy_factory:make_not_a_module", None, "returned a dict, not a torch.nn.Module"),
        ("tests.trainers.toy_factory:make", {"depth": 2}, r"rejected its arguments \['depth', 'input_shape', 'num_classes'\]"),
        ("tests.trainers.toy_factory:make_needing_depth", None, r"needs argument\(s\) \['depth'\] that accelsweep cannot give"),
        ("toy_factory:", None, "must look like 'package.module:factory'"),
        ("tests.trainers.toy_exits_on_import:make", None, r"cannot import .*SystemExit\(0\)"),
    ],
)
def test_factory_failures_name_the_kind_and_cause(kind, options, message):
    with pytest.raises(ModelError, match=message) as caught:
        build_model(kind, (4,), 2, options=options)
    assert kind in str(caught.value)


def test_unknown_kind_lists_valid_kinds():
    with pytest.raises(ModelError, match="valid kinds: mlp, cnn, package.module:factory"):
        build_model("resnet", (1, 8, 8), 10)


def test_options_are_refused_for_builtin_kinds():
    with pytest.raises(ModelError, match=r"options \['width'\] are only for"):
        build_model("mlp", (4,), 2, options={"width": 3})


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"num_classes": 0}, "num_classes=0"),
        ({"input_shape": ()}, r"input_shape=\(\)"),
        ({"hidden": (8, 0)}, r"hidden=\[8, 0\]"),
    ],
)
def test_bad_sizes_name_the_field(arguments, message):
    settings = {"kind": "mlp", "input_shape": (4,), "num_classes": 2, **arguments}
    with pytest.raises(ModelError, match=message):
        build_model(**settings)


def test_a_factory_raising_any_exception_names_it_and_its_error():
    with pytest.raises(ModelError) as caught:
        build_model("tests.trainers.toy_factory:make_refusing", (4,), 3)
    assert str(caught.value) == "factory tests.trainers.toy_factory:make_refusing raised ValueError: no model for 3 classes"
    assert caught.value.key == "model.kind"


@pytest.mark.parametrize(
    ("arguments", "key", "message"),
    [
        ({"kind": "mlp", "hidden": [10**9]}, "model.hidden", r"\[1000000000\] on inputs \(1, 8, 8\) with 10 classes makes 7.5e\+10 parameters: training needs ~1.2 TB; the limit is"),
        ({"kind": "mlp", "num_classes": 10**9}, "model.hidden", "with 1000000000 classes makes 6.5e"),
        ({"kind": "cnn", "channels": [10**6, 10**6]}, "model.channels", r"makes 9e\+12 parameters: training needs ~144.0 TB"),
    ],
)
def test_a_model_too_large_for_memory_is_refused_before_allocating(arguments, key, message):
    settings = {"input_shape": (1, 8, 8), "num_classes": 10, **arguments}
    with pytest.raises(ModelError, match=message) as caught:
        build_model(**settings)
    assert caught.value.key == key
