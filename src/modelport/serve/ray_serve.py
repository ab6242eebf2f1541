"""Ray Serve: the same repository and KServe v2 HTTP protocol as ``modelport serve``, on a Ray cluster.

Why: when one machine is not enough, modelport runs on an existing distributed engine instead of a
home-made one. Ray Serve already routes requests across replicas, restarts failed ones and scales
their number with the load; modelport brings the part Ray does not have, the model server.

Design. One Ray Serve deployment whose replicas each own an :class:`InferenceCore` over the
repository and serve the Starlette application of ``serve/app.py`` as their ASGI ingress, so the
protocol, the validation, the dynamic batching and the pipelines are the very code ``modelport
serve`` runs. The application is built inside each replica (``serve.ingress`` with a builder
function): models load in the replicas, never in the driver, and nothing heavy is pickled.

Lifecycle. Ray runs the application's lifespan: on startup the core loads every model (a model
that fails to load fails its replica, and :func:`deploy_ray_serve` raises); on shutdown, after Ray
has stopped routing to the replica and its requests have finished, the core drains and frees its
sessions. ``check_health`` reports a replica whose model is stuck (see ``ServerOptions.stuck_after``)
so that Ray replaces it.

What differs from one server: requests are spread across replicas by Ray's HTTP proxy;
``/metrics`` and ``/v2/models/stats`` describe the replica that answered; the repository API's
load and unload are refused (they would change one replica only) — change the folder and set
``ServerOptions.poll_interval`` (every replica reloads), or deploy again. The repository path must
be readable at the same path on every node of the cluster.

Ray is imported only inside the functions that need it; without it they raise
:class:`BackendError` naming the ``ray`` extra::

    from modelport.serve.ray_serve import run_ray_serve, parse_autoscale
    run_ray_serve("models/", port=8000, autoscale=parse_autoscale("1:4"))
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import re
import signal
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from modelport.errors import BackendError, ConfigError, ModelNotReadyError
from modelport.serve.core import InferenceCore, ServerOptions
from modelport.serve.repository import ModelRepository
from modelport.system import CPUS_ENV

__all__ = [
    "DEFAULT_APP_NAME",
    "LOCAL_RAY_ENVIRONMENT",
    "MIN_RAY_VERSION",
    "Autoscale",
    "ModelportReplica",
    "ReplicaApp",
    "build_replica_app",
    "deploy_ray_serve",
    "deployment_options",
    "import_ray",
    "init_ray",
    "parse_autoscale",
    "ray_serve_app",
    "run_ray_serve",
]

logger = logging.getLogger(__name__)

#: Oldest Ray whose ``serve.ingress`` accepts a function that builds the app in each replica.
MIN_RAY_VERSION = (2, 47)
#: The Ray Serve application (and deployment) name.
DEFAULT_APP_NAME = "modelport"
#: Object store of a local Ray instance started here: small, the models live in the replicas.
DEFAULT_OBJECT_STORE_BYTES = 256 * 1024 * 1024
#: Environment of a private local Ray (defaults; a value already set wins). Ray reads the first
#: when it is imported: it then takes 127.0.0.1 as the node address, and every Ray process listens
#: there only. The second turns off usage statistics.
LOCAL_RAY_ENVIRONMENT = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
_INSTALL_HINT = "install the 'ray' extra: pip install 'modelport[ray]'"
# Repository changes that would reach one replica only.
_REPOSITORY_CHANGE = re.compile(r"/v2/repository/models/[^/]+/(load|unload)")
# The last line of a Python traceback: "package.module.SomeError: message".
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*(?:Error|Exception): .+$", re.MULTILINE)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


# Ray itself ------------------------------------------------------------------------------------


def import_ray(module: str = "ray") -> Any:
    """``ray``, or one of its modules (``"ray.serve"``, ``"ray.data"``); :class:`BackendError` when
    Ray is missing or too old.

    Typed ``Any``: Ray's own annotations are partial, and modelport uses a handful of its calls.
    """
    try:
        import ray
    except ImportError as e:
        raise BackendError(f"Ray is not installed, and --ray needs it — {_INSTALL_HINT}") from e
    version = tuple(int(part) for part in re.findall(r"\d+", ray.__version__)[:2])
    if version < MIN_RAY_VERSION:
        wanted = ".".join(str(v) for v in MIN_RAY_VERSION)
        raise BackendError(f"Ray {ray.__version__} is installed, but modelport needs Ray >= {wanted} — {_INSTALL_HINT}")
    try:
        return importlib.import_module(module)
    except ImportError as e:  # ray without its serve or data part
        raise BackendError(f"{module} cannot be imported ({e}) — {_INSTALL_HINT}") from e


def init_ray(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    object_store_bytes: int = DEFAULT_OBJECT_STORE_BYTES,
    log_to_driver: bool = True,
) -> bool:
    """Connect this process to Ray; True when this call did it (the caller then calls ``ray.shutdown()``).

    A process already connected keeps its connection (False). ``address`` joins an existing
    cluster (``"auto"``, ``"ray://head:10001"``, ``"10.0.0.1:6379"``). Without one, a private
    local instance starts, with ``num_cpus`` (default: all cores), a ``object_store_bytes`` object
    store, no dashboard and no usage statistics, bound to 127.0.0.1 — provided Ray is first
    imported here (see :data:`LOCAL_RAY_ENVIRONMENT`); otherwise a warning says where it listens.
    """
    if address is None:
        for key, value in LOCAL_RAY_ENVIRONMENT.items():
            os.environ.setdefault(key, value)
    ray = import_ray()
    if ray.is_initialized():
        return False
    if address is not None:
        try:
            ray.init(address=address, log_to_driver=log_to_driver)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise BackendError(
                f"could not connect to the Ray cluster at {address!r}: {e} — start one with 'ray start --head', "
                "or leave out the address to start a local Ray"
            ) from e
        return True
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        object_store_memory=object_store_bytes,
        log_to_driver=log_to_driver,
    )
    node = ray.util.get_node_ip_address()
    if node != "127.0.0.1":
        logger.warning(
            "the local Ray instance listens on %s, not only on 127.0.0.1: Ray was imported before modelport could "
            "set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 — set it in the environment to keep Ray on this machine",
            node,
        )
    logger.info("started a local Ray instance on %s (%s CPUs)", node, num_cpus or "all")
    return True


# deployment options ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Autoscale:
    """Let Ray Serve keep between ``min_replicas`` and ``max_replicas`` replicas, following the load."""

    min_replicas: int
    max_replicas: int

    def __post_init__(self) -> None:
        if self.min_replicas < 1:
            raise ConfigError(
                f"autoscale minimum {self.min_replicas} must be at least 1 — a replica must be up to answer"
            )
        if self.max_replicas < self.min_replicas:
            raise ConfigError(
                f"autoscale maximum {self.max_replicas} is below the minimum {self.min_replicas} — give MIN:MAX "
                "with MIN <= MAX"
            )


def parse_autoscale(text: str) -> Autoscale:
    """``"MIN:MAX"`` (``--autoscale 1:4``) as an :class:`Autoscale`; :class:`ConfigError` otherwise."""
    low, sep, high = text.partition(":")
    if not sep or not low.strip().isdigit() or not high.strip().isdigit():
        raise ConfigError(f"--autoscale {text!r} is not MIN:MAX — give two replica counts, e.g. --autoscale 1:4")
    return Autoscale(int(low), int(high))


def deployment_options(
    *,
    replicas: int | None = None,
    autoscale: Autoscale | None = None,
    num_cpus: float = 1.0,
    max_ongoing_requests: int = 32,
) -> dict[str, Any]:
    """The Ray Serve deployment options for a fixed number of replicas (default 1) or autoscaling.

    ``num_cpus`` is reserved per replica; ``max_ongoing_requests`` is how many requests Ray lets
    one replica hold at once (its dynamic batcher needs several to batch them).
    """
    if replicas is not None and autoscale is not None:
        raise ConfigError("give a fixed number of replicas or an autoscale range, not both")
    if replicas is not None and replicas < 1:
        raise ConfigError(f"replicas must be at least 1, got {replicas}")
    if num_cpus <= 0:
        raise ConfigError(f"CPUs per replica must be positive, got {num_cpus}")
    if max_ongoing_requests < 1:
        raise ConfigError(f"max_ongoing_requests must be at least 1, got {max_ongoing_requests}")
    # Ray's num_cpus is a scheduling reservation, not a limit: the replica's thread budget is capped to it.
    cpus = {CPUS_ENV: str(max(1, math.ceil(num_cpus)))}
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": num_cpus, "runtime_env": {"env_vars": cpus}},
        "max_ongoing_requests": max_ongoing_requests,
        "graceful_shutdown_timeout_s": 60.0,
    }
    if autoscale is not None:
        options["autoscaling_config"] = {
            "min_replicas": autoscale.min_replicas,
            "initial_replicas": autoscale.min_replicas,
            "max_replicas": autoscale.max_replicas,
        }
    else:
        options["num_replicas"] = replicas or 1
    return options


# the replica -----------------------------------------------------------------------------------


class ReplicaApp:
    """The ASGI application of one replica: ``create_app`` over its own core, minus load/unload.

    Ray runs its lifespan (the core starts on startup; on shutdown it drains and frees its
    sessions) and forwards every HTTP request to it.
    """

    def __init__(self, source: str | os.PathLike[str], options: ServerOptions) -> None:
        from modelport.serve.app import create_app

        self.core = InferenceCore(ModelRepository(source), options)
        self.app = create_app(self.core)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and _REPOSITORY_CHANGE.fullmatch(scope["path"]):
            await _refuse_repository_change(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def add_exception_handler(self, exception: type[Exception], handler: Callable[..., Any]) -> None:
        """Ray Serve installs its handlers for its own errors (back pressure) through this."""
        self.app.add_exception_handler(exception, handler)

    def check_health(self) -> None:
        """Raise when the replica cannot serve (not started, or a model stuck in one batch): Ray replaces it.

        A draining replica is healthy: it is finishing its requests on its way out.
        """
        if not self.core.draining and not self.core.ready:
            raise ModelNotReadyError(
                f"a model of repository '{self.core.repository.root}' is not ready (not loaded, or stuck in one "
                f"batch for more than {self.core.options.stuck_after:g} s) — Ray Serve replaces this replica"
            )


async def _refuse_repository_change(scope: Scope, receive: Receive, send: Send) -> None:
    from starlette.responses import JSONResponse

    message = (
        f"POST {scope['path']} is refused under Ray Serve: it would change one replica only — change the "
        "repository folder and serve with a poll interval (every replica reloads), or deploy again"
    )
    await JSONResponse({"error": message}, status_code=400)(scope, receive, send)


def build_replica_app(source: str | os.PathLike[str], options: ServerOptions) -> ReplicaApp:
    """The application of one replica, its sessions already created.

    Ray reports an error raised here (in the replica's constructor) in the deployment's status,
    while one raised in the lifespan reaches the replica's log only; so the sessions are created
    here, and the lifespan's ``core.start()`` finds them active (activation is idempotent) and
    starts the batchers.
    """
    replica = ReplicaApp(source, options)
    replica.core.repository.load()
    return replica


class ModelportReplica:
    """The Ray Serve deployment class; ``serve.ingress`` adds the ASGI application (a :class:`ReplicaApp`)."""

    def check_health(self) -> None:
        app = getattr(self, "app", None)  # the ingress wrapper's application, once built
        if isinstance(app, ReplicaApp):
            app.check_health()


def _replica_builder(source: str, options: ServerOptions) -> Callable[[], ReplicaApp]:
    # A plain function (not a partial): serve.ingress calls a function in each replica, and would
    # treat any other callable as the ASGI application itself.
    def build() -> ReplicaApp:
        return build_replica_app(source, options)

    return build


# deploying -------------------------------------------------------------------------------------


def ray_serve_app(
    source: str | os.PathLike[str],
    *,
    options: ServerOptions | None = None,
    replicas: int | None = None,
    autoscale: Autoscale | None = None,
    num_cpus: float = 1.0,
    max_ongoing_requests: int = 32,
    name: str = DEFAULT_APP_NAME,
) -> Any:
    """The Ray Serve application (``Deployment.bind()``) serving a repository folder or an .onnx file.

    The repository is scanned here, so a malformed one fails before anything is deployed.
    """
    root = Path(source).resolve()
    ModelRepository(root)
    serve = import_ray("ray.serve")
    settings = deployment_options(
        replicas=replicas, autoscale=autoscale, num_cpus=num_cpus, max_ongoing_requests=max_ongoing_requests
    )
    ingress = serve.ingress(_replica_builder(str(root), options or ServerOptions()))(ModelportReplica)
    return serve.deployment(ingress, name=name, **settings).bind()


def deploy_ray_serve(
    source: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    options: ServerOptions | None = None,
    replicas: int | None = None,
    autoscale: Autoscale | None = None,
    num_cpus: float = 1.0,
    max_ongoing_requests: int = 32,
    name: str = DEFAULT_APP_NAME,
) -> str:
    """Deploy the repository on the connected Ray cluster and return its URL once every replica is up.

    Ray Serve's HTTP proxy listens on ``host``:``port`` (a Serve instance already running on the
    cluster keeps its own address). A deployment of the same ``name`` is replaced.
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"port {port} is outside 0..65535 — pick a free TCP port")
    app = ray_serve_app(
        source,
        options=options,
        replicas=replicas,
        autoscale=autoscale,
        num_cpus=num_cpus,
        max_ongoing_requests=max_ongoing_requests,
        name=name,
    )
    serve = import_ray("ray.serve")
    serve.start(http_options={"host": host, "port": port})
    try:
        serve.run(app, name=name, route_prefix="/", blocking=False)
    except Exception as e:  # Ray raises RuntimeError, or RayServeException from its controller
        raise BackendError(
            f"Ray Serve could not deploy repository '{source}': {e}{_failure_detail(serve, name)} — fix the "
            "repository (check it with 'modelport serve' on one machine), or see the replica logs under "
            "/tmp/ray/session_latest/logs/serve"
        ) from e
    url = f"http://{host}:{port}"
    logger.info("Ray Serve application '%s' serves %s at %s", name, source, url)
    return url


def _failure_detail(serve: Any, name: str) -> str:
    """The exception line of the replica error in the deployment status, when Ray kept one."""
    try:
        deployments = serve.status().applications[name].deployments.values()
    except (KeyError, AttributeError):
        return ""
    for deployment in deployments:
        found = _EXCEPTION_LINE.findall(deployment.message)
        if found:
            return f" ({found[-1].strip()})"
    return ""


def run_ray_serve(
    source: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    options: ServerOptions | None = None,
    replicas: int | None = None,
    autoscale: Autoscale | None = None,
    num_cpus: float = 1.0,
    max_ongoing_requests: int = 32,
    address: str | None = None,
    name: str = DEFAULT_APP_NAME,
) -> None:
    """Serve a repository on Ray Serve until SIGTERM or SIGINT, then shut it down gracefully.

    ``address`` joins an existing Ray cluster (other applications there are left alone); without
    one, and without a Ray connection in this process, a local Ray instance starts on 127.0.0.1
    and stops on exit. On the signal the application is deleted: Ray stops routing, in-flight
    requests finish, every replica drains. Call it from the main thread (it handles the signals).
    """
    connected = init_ray(address)
    own_cluster = connected and address is None
    try:
        serve = import_ray("ray.serve")
        url = deploy_ray_serve(
            source,
            host=host,
            port=port,
            options=options,
            replicas=replicas,
            autoscale=autoscale,
            num_cpus=num_cpus,
            max_ongoing_requests=max_ongoing_requests,
            name=name,
        )
        try:
            with _StopSignals() as stop:
                logger.info("serving '%s' on Ray Serve at %s — stop with Ctrl-C or SIGTERM", source, url)
                received = stop.wait()
            logger.info("%s received: deleting Ray Serve application '%s'", received.name, name)
        finally:
            serve.delete(name)
        if own_cluster:
            serve.shutdown()
    finally:
        if connected:
            import_ray().shutdown()  # stops a local instance; only disconnects from a cluster


class _StopSignals:
    """While entered, SIGINT and SIGTERM set an event that :meth:`wait` returns on (main thread only).

    Handlers, not a blocked signal mask: the processes Ray starts would inherit a mask.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._received: list[signal.Signals] = []
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> _StopSignals:
        for number in (signal.SIGINT, signal.SIGTERM):
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame: FrameType | None) -> None:
        self._received.append(signal.Signals(number))
        self._event.set()

    def wait(self) -> signal.Signals:
        """The first signal received, once one is."""
        self._event.wait()
        return self._received[0]
