import pytest
import torch

from trainers.techniques.compile import Compile, compile_model, timed_first_call


def test_values_are_checked_and_named():
    with pytest.raises(ValueError, match="Compile.compile.*'yes'"):
        Compile("yes")
    assert Compile(True).mode() == "compiled" and Compile().mode() == ""


def test_inactive_returns_the_model_itself():
    model = torch.nn.Linear(2, 2)
    assert compile_model(model, Compile(False)) is model


def test_timed_first_call_measures_the_call():
    assert timed_first_call(lambda: sum(range(100_000))) > 0
