import time

import pytest
import torch

from trainers.techniques.compile import Compile, compile_model, timed_first_call


def test_values_are_checked_and_named():
    with pytest.raises(ValueError, match="Compile.compile.*'yes'"):
        Compile("yes")
    assert Compile(True).label() == "compiled" and Compile().label() == ""


def test_inactive_returns_the_model_itself():
    model = torch.nn.Linear(2, 2)
    assert compile_model(model, Compile(False)) is model


def test_timed_first_call_covers_the_whole_call():
    inside = {}

    def call():
        inside["start"] = time.perf_counter()
        sum(range(100_000))
        inside["end"] = time.perf_counter()

    assert timed_first_call(call) >= inside["end"] - inside["start"]
