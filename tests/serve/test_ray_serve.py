"""Ray Serve: option parsing, the replica's application in-process, and the repository deployed on a
local Ray instance (127.0.0.1, 2 CPUs) answering KServe v2 over Ray's HTTP proxy."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelport.errors import BackendError, ConfigError, ModelNotReadyError, RepositoryError
from modelport.runners.onnxruntime import OrtRunner
from modelport.serve import HEADER_LENGTH, ServerOptions, decode_response, encode_request
from modelport.serve.ray_serve import (
    Autoscale,
    ModelportReplica,
    ReplicaApp,
    build_replica_app,
    deploy_ray_serve,
    deployment_options,
    import_ray,
    parse_autoscale,
    ray_serve_app,
    run_ray_serve,
)

from .ray_local import local_ray
from .serve_models import fixed_model, mixed_model, text_model, write_version

Arrays = dict[str, np.ndarray[Any, Any]]

# Ray's own deprecations (pydantic v1-style fields in ray.serve, its data context), raised by Ray's
# modules while they import.
RAY_WARNINGS = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """REPO/mixed (max batch 8, dynamic batching) and REPO/text."""
    root = tmp_path_factory.mktemp("ray-repo")
    write_version(root, "mixed", 1, mixed_model())
    (root / "mixed" / "config.yaml").write_text(
        "max_batch_size: 8\ndynamic_batching: {max_queue_delay_ms: 5}\n", encoding="utf-8"
    )
    write_version(root, "text", 1, text_model())
    return root


def mixed_feeds(rows: int, seed: int) -> Arrays:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((rows, 3)).astype(np.float32),
        "k": rng.integers(-3, 4, size=rows).astype(np.int64),
    }


# options ---------------------------------------------------------------------------------------


def test_parse_autoscale() -> None:
    assert parse_autoscale("1:4") == Autoscale(1, 4)
    assert parse_autoscale(" 2 : 2 ") == Autoscale(2, 2)
    for text in ("4", "1-4", "a:b", "1:", ":3", "-1:2"):
        with pytest.raises(ConfigError, match=r"--autoscale .* is not MIN:MAX — give two replica counts"):
            parse_autoscale(text)
    with pytest.raises(ConfigError, match=r"autoscale maximum 1 is below the minimum 3"):
        parse_autoscale("3:1")
    with pytest.raises(ConfigError, match=r"autoscale minimum 0 must be at least 1"):
        parse_autoscale("0:2")


def test_deployment_options() -> None:
    fixed = deployment_options(replicas=3, num_cpus=0.5, max_ongoing_requests=16)
    assert fixed["num_replicas"] == 3
    assert "autoscaling_config" not in fixed
    # the reservation also caps the replica's thread budget (MODELPORT_CPUS, rounded up to whole cores)
    assert fixed["ray_actor_options"] == {"num_cpus": 0.5, "runtime_env": {"env_vars": {"MODELPORT_CPUS": "1"}}}
    assert deployment_options(num_cpus=2.5)["ray_actor_options"]["runtime_env"]["env_vars"]["MODELPORT_CPUS"] == "3"
    assert fixed["max_ongoing_requests"] == 16
    assert deployment_options()["num_replicas"] == 1
    scaled = deployment_options(autoscale=Autoscale(2, 5))
    assert scaled["autoscaling_config"] == {"min_replicas": 2, "initial_replicas": 2, "max_replicas": 5}
    assert "num_replicas" not in scaled
    with pytest.raises(ConfigError, match=r"a fixed number of replicas or an autoscale range, not both"):
        deployment_options(replicas=2, autoscale=Autoscale(1, 2))
    with pytest.raises(ConfigError, match=r"replicas must be at least 1, got 0"):
        deployment_options(replicas=0)
    with pytest.raises(ConfigError, match=r"CPUs per replica must be positive, got 0"):
        deployment_options(num_cpus=0)
    with pytest.raises(ConfigError, match=r"max_ongoing_requests must be at least 1, got 0"):
        deployment_options(max_ongoing_requests=0)


def test_ray_missing_names_the_extra(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(BackendError, match=r"Ray is not installed, and --ray needs it — install the 'ray' extra"):
        import_ray()
    with pytest.raises(BackendError, match=r"Ray is not installed"):
        ray_serve_app(repo)


def test_a_malformed_repository_fails_before_ray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RepositoryError, match=r"model repository '.*nowhere' does not exist"):
        ray_serve_app(tmp_path / "nowhere")


# the replica's application, in-process ---------------------------------------------------------


class AsDeployed(ModelportReplica):
    """The deployment class as serve.ingress completes it: the application under ``app``."""

    def __init__(self, app: ReplicaApp) -> None:
        self.app = app


@pytest.mark.anyio
async def test_replica_app_serves_and_refuses_repository_changes(repo: Path) -> None:
    replica = build_replica_app(repo, ServerOptions())
    assert replica.core.repository.ready  # sessions are created when the replica is built
    with pytest.raises(ModelNotReadyError, match=r"is not ready .* Ray Serve replaces this replica"):
        replica.check_health()  # built but not started
    with pytest.raises(ModelNotReadyError, match=r"is not ready"):
        AsDeployed(replica).check_health()  # what Ray calls, on the deployment class
    transport = httpx.ASGITransport(app=replica)
    async with (
        replica.app.router.lifespan_context(replica.app),
        httpx.AsyncClient(transport=transport, base_url="http://replica") as http,
    ):
        replica.check_health()
        for action in ("load", "unload"):
            refused = await http.post(f"/v2/repository/models/mixed/{action}")
            assert refused.status_code == 400
            assert "refused under Ray Serve: it would change one replica only" in refused.json()["error"]
        feeds = mixed_feeds(2, seed=0)
        encoded = encode_request(feeds, binary=True, binary_output=True)
        response = await http.post("/v2/models/mixed/infer", content=encoded.body, headers=encoded.headers)
        assert response.status_code == 200, response.text
        outputs = decode_response(response.content, response.headers.get(HEADER_LENGTH)).outputs
        np.testing.assert_array_equal(outputs["k_next"], feeds["k"] + 1)
        replica.core.begin_drain()
        replica.check_health()  # a draining replica is on its way out, not broken
    assert not replica.core.repository.ready  # the lifespan's shutdown freed the sessions


# on a local Ray instance -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def ray_port() -> Iterator[int]:
    """A local Ray with Serve's HTTP proxy on 127.0.0.1:<port>; shut down after the module."""
    with local_ray():
        serve = import_ray("ray.serve")
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield port
        serve.shutdown()


@pytest.fixture
def serve_api(ray_port: int) -> Iterator[Any]:
    """``ray.serve``; the test's application is deleted afterwards."""
    serve = import_ray("ray.serve")
    yield serve
    for name in list(serve.status().applications):
        serve.delete(name)


async def infer_all(url: str, requests: list[tuple[Arrays, bool]]) -> list[Arrays]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:

        async def one(feeds: Arrays, binary: bool) -> Arrays:
            encoded = encode_request(feeds, binary=binary, binary_output=binary)
            response = await http.post("/v2/models/mixed/infer", content=encoded.body, headers=encoded.headers)
            assert response.status_code == 200, response.text
            return decode_response(response.content, response.headers.get(HEADER_LENGTH)).outputs

        return await asyncio.gather(*(one(feeds, binary) for feeds, binary in requests))


@pytest.mark.slow
@RAY_WARNINGS
def test_replicas_serve_the_repository_over_kserve_v2(repo: Path, ray_port: int, serve_api: Any) -> None:
    url = deploy_ray_serve(repo, port=ray_port, replicas=2, num_cpus=0.5)
    assert url == f"http://127.0.0.1:{ray_port}"
    deployment = serve_api.status().applications["modelport"].deployments["modelport"]
    assert deployment.replica_states == {"RUNNING": 2}

    requests = [(mixed_feeds(1 + i % 4, seed=i), i % 2 == 0) for i in range(16)]  # binary and JSON
    answers = asyncio.run(infer_all(url, requests))
    with OrtRunner(repo / "mixed" / "1" / "model.onnx") as runner:
        for (feeds, _), got in zip(requests, answers, strict=True):
            want = runner.infer(feeds)
            assert set(got) == set(want)
            for name, value in want.items():
                # Elementwise ops: the replica's batching cannot change a bit, so the tolerance is 0.
                np.testing.assert_allclose(got[name], value, rtol=0, atol=0, err_msg=name)

    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.get("/v2/health/live").json() == {"live": True}
        assert http.get("/v2/health/ready").status_code == 200
        assert http.get("/v2").json()["name"] == "modelport"
        metadata = http.get("/v2/models/mixed").json()
        assert [i["name"] for i in metadata["inputs"]] == ["x", "k"]
        assert http.get("/v2/models/text/ready").status_code == 200
        refused = http.post("/v2/repository/models/mixed/unload")
        assert refused.status_code == 400
        assert "it would change one replica only" in refused.json()["error"]
        assert http.get("/v2/models/mixed/ready").status_code == 200  # still served by every replica
        missing = http.get("/v2/models/nope")
        assert missing.status_code == 404
        assert "model 'nope' is not in repository" in missing.json()["error"]


@pytest.mark.slow
@RAY_WARNINGS
def test_autoscale_starts_at_the_minimum(repo: Path, ray_port: int, serve_api: Any) -> None:
    url = deploy_ray_serve(repo, port=ray_port, autoscale=parse_autoscale("1:2"), num_cpus=0.5)
    deployment = serve_api.status().applications["modelport"].deployments["modelport"]
    assert deployment.replica_states == {"RUNNING": 1}
    feeds = mixed_feeds(3, seed=7)
    (got,) = asyncio.run(infer_all(url, [(feeds, True)]))
    np.testing.assert_allclose(got["y"], feeds["x"] + feeds["k"][:, None].astype(np.float32), rtol=0, atol=0)


@pytest.mark.slow
@RAY_WARNINGS
def test_a_model_that_fails_to_load_fails_the_deploy(tmp_path: Path, ray_port: int, serve_api: Any) -> None:
    write_version(tmp_path, "fixed", 1, fixed_model())
    (tmp_path / "fixed" / "config.yaml").write_text("max_batch_size: 4\n", encoding="utf-8")
    with pytest.raises(
        BackendError, match=r"could not deploy .*RepositoryError: model 'fixed' version 1 sets max_batch"
    ):
        deploy_ray_serve(tmp_path, port=ray_port, num_cpus=0.5)


@pytest.mark.slow
@RAY_WARNINGS
def test_run_ray_serve_serves_until_sigterm(repo: Path, ray_port: int, serve_api: Any) -> None:
    """run_ray_serve blocks in this (main) thread; a client thread waits for it, asks, then sends SIGTERM."""
    serving, returned = threading.Event(), threading.Event()
    answers: list[int] = []
    main = threading.get_ident()

    class OnServing(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("serving"):
                serving.set()

    def client() -> None:
        serving.wait(300)
        if returned.is_set() or not serving.is_set():
            return  # run_ray_serve failed (it raises in the main thread): no signal to take
        with httpx.Client(base_url=f"http://127.0.0.1:{ray_port}", timeout=30) as http:
            answers.append(http.get("/v2/health/ready").status_code)
            answers.append(http.get("/v2/models/mixed/ready").status_code)
        signal.pthread_kill(main, signal.SIGTERM)  # run_ray_serve's handler takes it

    logger = logging.getLogger("modelport.serve.ray_serve")
    handler, level = OnServing(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=client)
    thread.start()
    try:
        run_ray_serve(repo, port=ray_port, replicas=1, num_cpus=0.5)
    finally:
        returned.set()
        serving.set()
        thread.join()
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert answers == [200, 200]
    assert "modelport" not in serve_api.status().applications  # deleted on the signal
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back
