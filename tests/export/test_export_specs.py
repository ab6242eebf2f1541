"""Parsing NAME:SHAPE[:DTYPE] input specs and NAME:AXIS=LABEL dynamic-axis specs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from modelport.errors import ConfigError
from modelport.export.specs import (
    parse_dynamic_axes,
    parse_dynamic_axis,
    parse_input_spec,
    parse_input_specs,
)
from modelport.ir.specs import TensorSpec


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "pixel_values:1x3x224x224",
            TensorSpec("pixel_values", np.dtype("float32"), (1, 3, 224, 224)),
        ),
        ("ids:1x128:int64", TensorSpec("ids", np.dtype("int64"), (1, 128))),
        ("x:8", TensorSpec("x", np.dtype("float32"), (8,))),
        (" mask : 2X16 : BOOL ", TensorSpec("mask", np.dtype("bool"), (2, 16))),
        ("h:1x4:fp16", TensorSpec("h", np.dtype("float16"), (1, 4))),
    ],
)
def test_input_spec(text: str, expected: TensorSpec) -> None:
    assert parse_input_spec(text) == expected


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("x", r"should have the form NAME:SHAPE\[:DTYPE\], e.g. pixel_values:1x3x224x224"),
        ("x:1x3:float32:nchw", "should have the form NAME:SHAPE"),
        (":1x3", "has no name"),
        ("x:", "has no shape"),
        ("x:1xbatchx3", "dimension 'batch' in input spec 'x:1xbatchx3' is not a positive integer"),
        ("x:1x0", "dimension '0' .* is not a positive integer"),
        ("x:1x-3", "dimension '-3'"),
        ("x:1x3:float128", "unknown dtype 'float128' .* use one of: float32, fp32"),
    ],
)
def test_bad_input_spec(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_input_spec(text)


def test_input_specs_reject_a_repeated_name() -> None:
    assert [s.name for s in parse_input_specs(["a:1", "b:2"])] == ["a", "b"]
    with pytest.raises(ConfigError, match="input 'a' is given twice"):
        parse_input_specs(["a:1", "a:2"])


def test_dynamic_axis_specs() -> None:
    assert parse_dynamic_axis("x:0=batch") == ("x", {0: "batch"})
    assert parse_dynamic_axis("ids: 0=batch, 1=seq") == ("ids", {0: "batch", 1: "seq"})
    assert parse_dynamic_axes(["ids:0=batch", "ids:1=seq", "mask:0=batch"]) == {
        "ids": {0: "batch", 1: "seq"},
        "mask": {0: "batch"},
    }


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("x", r"should have the form NAME:AXIS=LABEL\[,AXIS=LABEL...\], e.g. pixel_values:0=batch"),
        ("x:", "should have the form NAME:AXIS=LABEL"),
        (":0=batch", "should have the form NAME:AXIS=LABEL"),
        ("x:batch", "'batch' in dynamic-axis spec 'x:batch' is not AXIS=LABEL"),
        ("x:-1=batch", "'-1=batch' .* is not AXIS=LABEL with a non-negative integer axis"),
        ("x:0=", "label '' in dynamic-axis spec 'x:0=' is not a valid name"),
        ("x:0=seq-len", "label 'seq-len' .* use letters, digits and '_'"),
        ("x:0=a,0=b", "axis 0 of 'x' is labelled both 'a' and 'b'"),
    ],
)
def test_bad_dynamic_axis_spec(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_dynamic_axis(text)


def test_dynamic_axes_conflict_across_specs() -> None:
    with pytest.raises(ConfigError, match="axis 0 of 'x' is labelled both 'batch' and 'n'"):
        parse_dynamic_axes(["x:0=batch", "x:0=n"])


def test_importing_the_export_package_does_not_import_torch() -> None:
    code = (
        "import sys, modelport.export, modelport.runners.torch; assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
