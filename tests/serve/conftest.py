"""Models and repositories for the serving tests, built in code."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from modelport.serve import ModelRepository
from modelport.serve.core import InferenceCore, ServerOptions

from .serve_models import mixed_model, text_model, write_version

Arrays = dict[str, np.ndarray[Any, Any]]


@pytest.fixture(scope="session")
def repo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """REPO/mixed/{1,2} (all versions served, 4 instances, max batch 8) and REPO/text/1."""
    repo = tmp_path_factory.mktemp("repo")
    write_version(repo, "mixed", 1, mixed_model(offset=1))
    write_version(repo, "mixed", 2, mixed_model(offset=2))
    (repo / "mixed" / "config.yaml").write_text(
        "version_policy: all\ninstance_count: 4\nmax_batch_size: 8\n", encoding="utf-8"
    )
    write_version(repo, "text", 1, text_model())
    return repo


@pytest.fixture
def feeds() -> Arrays:
    rng = np.random.default_rng(0)
    return {
        "x": rng.standard_normal((3, 3)).astype(np.float32),
        "k": np.array([-2, 0, 5], dtype=np.int64),
    }


@pytest.fixture(scope="session")
def reference() -> Callable[[Path, Arrays], Arrays]:
    """Outputs of a model file run in-process by ONNX Runtime."""

    def run(path: Path, inputs: Arrays) -> Arrays:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, inputs), strict=True))

    return run


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Async tests run on asyncio only (uvicorn and the server code are asyncio)."""
    return "asyncio"


@pytest.fixture
async def started() -> AsyncIterator[Callable[..., Any]]:
    """Start cores for a test (``await started(root, **server_options)``) and stop them all at its end."""
    cores: list[InferenceCore] = []

    async def start(root: Path, **options: Any) -> InferenceCore:
        core = InferenceCore(ModelRepository(root), ServerOptions(**options))
        await core.start()
        cores.append(core)
        return core

    yield start
    for core in cores:
        await core.stop()
