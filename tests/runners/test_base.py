"""Feed validation and the Runner lifecycle shared by every engine."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelport.errors import (
    BackendError,
    InputDtypeError,
    InputError,
    InputShapeError,
    UnknownInputError,
)
from modelport.ir.specs import TensorSpec
from modelport.runners.base import Feeds, Outputs, Runner, check_feeds

F32 = np.dtype("float32")
I64 = np.dtype("int64")

SPECS = [
    TensorSpec("pixel_values", F32, ("N", 3, 4)),
    TensorSpec("mask", I64, ("N", None)),
]


def good_feeds(batch: int = 2) -> dict[str, np.ndarray[Any, Any]]:
    return {
        "pixel_values": np.zeros((batch, 3, 4), np.float32),
        "mask": np.ones((batch, 7), np.int64),
    }


class EchoRunner(Runner):
    """A minimal engine that records its lifecycle calls."""

    backend = "echo"

    def __init__(self) -> None:
        super().__init__(name="echo-model")
        self.events: list[str] = []

    def _activate(self) -> None:
        self.events.append("activate")

    def _deactivate(self) -> None:
        self.events.append("deactivate")

    def _input_specs(self) -> list[TensorSpec]:
        return list(SPECS)

    def _output_specs(self) -> list[TensorSpec]:
        return [TensorSpec("out", F32, ("N", 3, 4))]

    def _infer(self, feeds: Feeds) -> Outputs:
        self.events.append("infer")
        return {"out": feeds["pixel_values"] + 1.0}


# check_feeds ----------------------------------------------------------------------------------


def test_check_feeds_accepts_matching_feeds() -> None:
    check_feeds(SPECS, good_feeds(1))
    check_feeds(SPECS, good_feeds(5))


def test_unknown_input_lists_real_inputs() -> None:
    feeds = {**good_feeds(), "pixels": np.zeros((2, 3, 4), np.float32)}
    with pytest.raises(
        UnknownInputError,
        match=r"the model has no input named 'pixels'; its inputs are 'pixel_values', 'mask'",
    ):
        check_feeds(SPECS, feeds)


def test_unknown_input_uses_model_name() -> None:
    feeds = {**good_feeds(), "extra": np.zeros(1, np.float32)}
    with pytest.raises(UnknownInputError, match=r"^model 'resnet' has no input named 'extra'"):
        check_feeds(SPECS, feeds, model_name="model 'resnet'")


def test_missing_input() -> None:
    feeds = good_feeds()
    del feeds["mask"]
    with pytest.raises(UnknownInputError, match=r"needs input 'mask', which was not given"):
        check_feeds(SPECS, feeds)


def test_wrong_dtype_suggests_astype() -> None:
    feeds = good_feeds()
    feeds["pixel_values"] = feeds["pixel_values"].astype(np.float64)
    with pytest.raises(
        InputDtypeError,
        match=r"input 'pixel_values' has dtype float64, but the model expects float32 — "
        r"convert it with arr\.astype\(np\.float32\)",
    ):
        check_feeds(SPECS, feeds)


def test_wrong_integer_dtype() -> None:
    feeds = good_feeds()
    feeds["mask"] = feeds["mask"].astype(np.int32)
    with pytest.raises(InputDtypeError, match=r"arr\.astype\(np\.int64\)"):
        check_feeds(SPECS, feeds)


def test_wrong_rank() -> None:
    feeds = good_feeds()
    feeds["pixel_values"] = np.zeros((2, 12), np.float32)
    with pytest.raises(
        InputShapeError,
        match=r"input 'pixel_values' has rank 2 \(shape \[2, 12\]\), but the model expects "
        r"rank 3 \[N, 3, 4\]",
    ):
        check_feeds(SPECS, feeds)


def test_wrong_static_dim() -> None:
    feeds = good_feeds()
    feeds["pixel_values"] = np.zeros((2, 3, 5), np.float32)
    with pytest.raises(
        InputShapeError,
        match=r"input 'pixel_values' has size 5 on axis 2 \(shape \[2, 3, 5\]\), "
        r"but the model fixes that axis to 4",
    ):
        check_feeds(SPECS, feeds)


def test_non_ndarray_feed() -> None:
    feeds: dict[str, Any] = good_feeds()
    feeds["mask"] = [[1, 1], [1, 0]]
    with pytest.raises(InputDtypeError, match=r"input 'mask' is a list, not a numpy array — wrap it"):
        check_feeds(SPECS, feeds)


def test_unknown_rank_spec_accepts_any_shape() -> None:
    specs = [TensorSpec("x", F32, None)]
    check_feeds(specs, {"x": np.zeros((2, 3, 4, 5), np.float32)})
    check_feeds(specs, {"x": np.zeros((), np.float32)})


def test_input_errors_share_a_base_class() -> None:
    with pytest.raises(InputError, match="needs input"):
        check_feeds(SPECS, {})


# lifecycle ------------------------------------------------------------------------------------


def test_inactive_runner_refuses_work() -> None:
    runner = EchoRunner()
    assert not runner.is_active
    pattern = r"echo runner for 'echo-model' is not active — call activate\(\)"
    with pytest.raises(BackendError, match=pattern):
        runner.infer(good_feeds())
    with pytest.raises(BackendError, match=pattern):
        _ = runner.inputs
    with pytest.raises(BackendError, match=pattern):
        _ = runner.outputs
    assert runner.events == []


def test_context_manager_activates_and_deactivates() -> None:
    runner = EchoRunner()
    with runner as active:
        assert active is runner
        assert runner.is_active
        assert [s.name for s in runner.inputs] == ["pixel_values", "mask"]
        assert [s.name for s in runner.outputs] == ["out"]
        out = runner.infer(good_feeds())
        np.testing.assert_array_equal(out["out"], np.ones((2, 3, 4), np.float32))
    assert not runner.is_active
    assert runner.events == ["activate", "infer", "deactivate"]
    with pytest.raises(BackendError, match="is not active"):
        runner.infer(good_feeds())


def test_context_manager_deactivates_on_error() -> None:
    runner = EchoRunner()
    with pytest.raises(InputDtypeError, match="expects float32"), runner:
        runner.infer({"pixel_values": np.zeros((1, 3, 4), np.float64), "mask": np.ones((1, 1), np.int64)})
    assert not runner.is_active
    assert runner.events == ["activate", "deactivate"]


def test_activate_and_deactivate_are_idempotent() -> None:
    runner = EchoRunner()
    runner.activate()
    runner.activate()
    runner.deactivate()
    runner.deactivate()
    assert runner.events == ["activate", "deactivate"]


def test_runner_can_be_reactivated() -> None:
    runner = EchoRunner()
    with runner:
        pass
    with runner:
        runner.infer(good_feeds())
    assert runner.events == ["activate", "deactivate", "activate", "infer", "deactivate"]


def test_infer_validates_before_engine_runs() -> None:
    with EchoRunner() as runner:
        with pytest.raises(UnknownInputError, match=r"^model 'echo-model' needs input 'mask'"):
            runner.infer({"pixel_values": np.zeros((1, 3, 4), np.float32)})
        assert isinstance(runner, EchoRunner)
        assert runner.events == ["activate"]


def test_infer_check_false_skips_validation() -> None:
    with EchoRunner() as runner:
        out = runner.infer({"pixel_values": np.zeros((1, 3, 4), np.float64)}, check=False)
    assert out["out"].dtype == np.float64


def test_infer_records_time() -> None:
    with EchoRunner() as runner:
        assert runner.last_inference_time is None
        runner.infer(good_feeds())
        assert runner.last_inference_time is not None
        assert 0.0 <= runner.last_inference_time < 1.0


def test_describe_names_backend() -> None:
    assert EchoRunner().describe() == {"backend": "echo"}
