"""Loading modules (and example inputs) from 'package.module:function' and file factories."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch")

import torch
from torch import nn

from modelport.errors import ConfigError, ExportError
from modelport.export import export_torch, load_factory, resolve_module

pytestmark = pytest.mark.torch

FACTORIES = """
import torch
from torch import nn


class Doubler(nn.Module):
    def forward(self, x):
        return x * 2


def plain():
    return Doubler()


def with_tuple():
    return Doubler(), (torch.ones(2, 3),)


def with_tensor():
    return Doubler(), torch.ones(1, 4)


def with_dict():
    return Doubler(), {"x": torch.ones(1, 2)}


instance = Doubler()
not_callable = 42


def returns_string():
    return "a model"


def returns_bad_examples():
    return Doubler(), [torch.ones(1), 3]


def raises():
    raise ValueError("weights not found")
"""


@pytest.fixture
def factory_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_models.py"
    path.write_text(textwrap.dedent(FACTORIES))
    return path


@pytest.fixture
def factory_module(factory_file: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The factory file importable as a module named 'my_models'."""
    monkeypatch.syspath_prepend(str(factory_file.parent))
    monkeypatch.delitem(sys.modules, "my_models", raising=False)
    return "my_models"


def test_file_factory_returning_a_module(factory_file: Path) -> None:
    module, examples = load_factory(f"{factory_file}:plain")
    assert type(module).__name__ == "Doubler"
    assert examples is None


def test_module_factory_returning_examples(factory_module: str) -> None:
    loaded = load_factory(f"{factory_module}:with_tuple")
    assert isinstance(loaded.example_inputs, tuple)
    assert loaded.example_inputs[0].shape == (2, 3)
    tensor = load_factory(f"{factory_module}:with_tensor").example_inputs
    assert isinstance(tensor, tuple) and tensor[0].shape == (1, 4)
    named = load_factory(f"{factory_module}:with_dict").example_inputs
    assert isinstance(named, dict) and list(named) == ["x"]


def test_file_factory_can_import_its_neighbours(tmp_path: Path) -> None:
    (tmp_path / "neighbour_blocks.py").write_text("from torch import nn\nBLOCK = nn.Linear\n")
    (tmp_path / "uses_neighbour.py").write_text(
        "from neighbour_blocks import BLOCK\n\ndef make():\n    return BLOCK(2, 3)\n"
    )
    module, _ = load_factory(f"{tmp_path / 'uses_neighbour.py'}:make")
    assert isinstance(module, nn.Linear)
    assert str(tmp_path) not in sys.path


def test_attribute_may_be_a_module_instance(factory_module: str) -> None:
    assert isinstance(load_factory(f"{factory_module}:instance").module, nn.Module)


def test_export_from_a_factory_uses_its_example_inputs(factory_file: Path, tmp_path: Path) -> None:
    result = export_torch(f"{factory_file}:with_tuple", tmp_path / "d.onnx")
    assert result.passed
    assert result.inputs[0].shape == (2, 3)


def test_resolve_module_accepts_modules_and_callables() -> None:
    linear = nn.Linear(2, 2)
    assert resolve_module(linear).module is linear
    loaded = resolve_module(lambda: (linear, torch.zeros(1, 2)))
    assert loaded.module is linear and loaded.example_inputs is not None
    with pytest.raises(ConfigError, match=r"expected an nn.Module, a factory spec .* got a int"):
        resolve_module(3)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("my_models", "factory 'my_models' should have the form 'package.module:function'"),
        (":plain", "should have the form 'package.module:function' or 'path/to/file.py:function'"),
        ("my_models:", "should have the form"),
        (
            "my_models:make-model",
            "'make-model' in factory 'my_models:make-model' is not a Python name",
        ),
        (
            "no_such_pkg.models:make",
            "cannot import module 'no_such_pkg.models' .* no module named 'no_such_pkg'",
        ),
        (
            "my_models:missing",
            "module 'my_models' has no attribute 'missing' .* it defines Doubler, instance, plain",
        ),
        (
            "my_models:not_callable",
            "factory 'my_models:not_callable' names a int, which is not callable",
        ),
        ("missing/file.py:make", "factory file 'missing/file.py' does not exist"),
    ],
)
def test_bad_factory_specs_are_config_errors(factory_module: str, spec: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_factory(spec)


@pytest.mark.parametrize(
    ("attr", "match"),
    [
        (
            "returns_string",
            r"returned a str, but a factory must return an nn.Module or "
            r"\(nn.Module, example_inputs\)",
        ),
        ("returns_bad_examples", "example input 1 is a int, not a torch.Tensor"),
        ("raises", "factory 'my_models:raises' raised ValueError: weights not found"),
    ],
)
def test_bad_factory_results_are_export_errors(factory_module: str, attr: str, match: str) -> None:
    with pytest.raises(ExportError, match=match):
        load_factory(f"{factory_module}:{attr}")


def test_factory_raising_chains_the_cause(factory_module: str) -> None:
    with pytest.raises(ExportError) as info:
        load_factory(f"{factory_module}:raises")
    assert isinstance(info.value.__cause__, ValueError)


def test_module_failing_to_import_is_an_export_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import torch\nraise RuntimeError('checkpoint missing')\n")
    with pytest.raises(ExportError, match=r"importing factory file .*broken.py.* RuntimeError: checkpoint missing"):
        load_factory(f"{broken}:make")


def test_missing_dependency_of_a_module_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "needs_dep.py").write_text("import surely_not_installed_pkg\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ExportError, match="it needs 'surely_not_installed_pkg', which is not installed"):
        load_factory("needs_dep:make")
