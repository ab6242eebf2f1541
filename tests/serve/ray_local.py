"""A local Ray for the Ray tests: 2 CPUs, bound to 127.0.0.1, shut down afterwards if this started it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from modelport.errors import BackendError


@contextlib.contextmanager
def local_ray() -> Iterator[None]:
    """Start (or join) a local Ray on 127.0.0.1; skips the tests when Ray is not installed."""
    from modelport.serve.ray_serve import import_ray, init_ray

    try:  # before any import of ray: Ray stays on 127.0.0.1 only when init_ray imports it first
        started = init_ray(num_cpus=2, log_to_driver=False)
    except BackendError:
        pytest.importorskip("ray")  # skips when Ray is not installed
        raise
    assert {node["NodeManagerAddress"] for node in import_ray().nodes()} == {"127.0.0.1"}
    try:
        yield
    finally:
        if started:
            import_ray().shutdown()
