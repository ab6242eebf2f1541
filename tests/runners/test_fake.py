"""FakeRunner: a Runner backed by a Python function."""

from __future__ import annotations

import numpy as np
import pytest

from modelport.errors import BackendError, InputShapeError
from modelport.ir.specs import TensorSpec
from modelport.runners.base import Feeds, Outputs
from modelport.runners.fake import FakeRunner

F32 = np.dtype("float32")
INPUTS = [TensorSpec("x", F32, ("N", 3))]
OUTPUTS = [TensorSpec("y", F32, ("N", 3))]


def double(feeds: Feeds) -> Outputs:
    return {"y": feeds["x"] * 2}


def test_counts_calls() -> None:
    runner = FakeRunner(double, INPUTS, OUTPUTS)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    with runner:
        assert runner.calls == 0
        for _ in range(3):
            out = runner.infer({"x": x})
        np.testing.assert_array_equal(out["y"], x * 2)
        assert runner.calls == 3


def test_rejected_feeds_are_not_counted() -> None:
    runner = FakeRunner(double, INPUTS, OUTPUTS)
    with runner:
        with pytest.raises(InputShapeError, match="fixes that axis to 3"):
            runner.infer({"x": np.zeros((2, 4), np.float32)})
        assert runner.calls == 0


def test_activation_resets_the_count() -> None:
    runner = FakeRunner(double, INPUTS, OUTPUTS)
    with runner:
        runner.infer({"x": np.zeros((1, 3), np.float32)})
        assert runner.calls == 1
    assert runner.calls == 1
    with runner:
        assert runner.calls == 0


def test_declares_its_specs() -> None:
    with FakeRunner(double, INPUTS, OUTPUTS, name="twice") as runner:
        assert runner.inputs == INPUTS
        assert runner.outputs == OUTPUTS
        assert runner.inputs is not INPUTS  # a copy: callers cannot edit the declaration
        assert runner.name == "twice"
        assert runner.backend == "fake"


def test_describe_names_the_function() -> None:
    runner = FakeRunner(double, INPUTS, OUTPUTS)
    assert runner.describe() == {"backend": "fake", "function": "double"}


def test_inactive_fake_runner_raises() -> None:
    runner = FakeRunner(double, INPUTS, OUTPUTS, name="twice")
    with pytest.raises(BackendError, match="fake runner for 'twice' is not active"):
        runner.infer({"x": np.zeros((1, 3), np.float32)})
    assert runner.calls == 0
