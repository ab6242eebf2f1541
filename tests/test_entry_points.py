"""The one loader for user functions named as package.module:function."""

from __future__ import annotations

import pytest

from modelport.entry_points import load_callable
from modelport.errors import CalibrationDataError, ConfigError

NOT_CALLABLE = 3


def helper() -> int:
    return 7


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nocolon", r"thing 'nocolon' should have the form 'package.module:function'"),
        ("modelport_missing_xyz:f", r"cannot import module 'modelport_missing_xyz' for thing .* PYTHONPATH"),
        ("json:nope", r"module 'json' has no attribute 'nope' \(thing 'json:nope'\)"),
        (f"{__name__}:NOT_CALLABLE", r"thing '.*:NOT_CALLABLE' is a int, not a function — name a function f\(\)"),
    ],
)
def test_errors_name_the_role_and_the_fix(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_callable(spec, what="thing", expects="a function f()")


def test_loads_and_raises_the_callers_error_type() -> None:
    assert load_callable(f"{__name__}:helper", what="thing", expects="f")() == 7
    with pytest.raises(CalibrationDataError, match="should have the form"):
        load_callable("x", what="calibration entry point", expects="f", error=CalibrationDataError)
