"""Kubernetes and KServe manifests for a model repository, validated before they are written.

``modelport k8s REPO`` turns a repository into what a cluster needs to run ``modelport serve``
on it, so that scaling out is ``kubectl apply`` and not a hand-written YAML file that drifts
from the server. Two shapes:

* **Deployment + Service** (the default). The repository is mounted read-only at ``/models``
  from a volume — never a ConfigMap, which holds at most 1 MiB of text. The volume is an existing
  PersistentVolumeClaim (``pvc``, default claim ``<name>-models``, which you create and fill), or
  an ``emptyDir`` that an init container fills from a *model image* (``model_image``: an image
  with the repository under ``/models`` and a ``cp``, e.g. ``FROM busybox`` + ``COPY REPO
  /models``). The Service exposes HTTP and gRPC.
* **KServe** (``kserve``): a ServingRuntime (a custom runtime whose container runs ``modelport
  serve /mnt/models``) and a v1beta1 InferenceService using it with ``protocolVersion: v2``.
  KServe's storage initializer copies ``storageUri`` (the repository folder) to ``/mnt/models``.
  Knative allows one port per container, so only HTTP is declared; gRPC still listens on its port
  inside the pod. The startupProbe needs Knative Serving 1.15 or later in KServe's Serverless mode
  (RawDeployment takes it as is). Knative owns the pod's termination grace period (the revision
  timeout), so the server only gets its drain delay.

Probes use the server's own routes: readiness on ``/v2/health/ready`` (400 while a model is not
loaded or is stuck, and while draining), liveness on ``/v2/health/live``, and a startupProbe, also
on ``/v2/health/live``, that allows for model loading (the port opens only once every model is
loaded): 60 s plus 30 s per GiB of model data the instances load, unless given. Shutdown is
graceful: after SIGTERM the server answers not-ready for ``drain_delay`` seconds, then finishes
the requests it admitted (uvicorn waits up to :data:`SERVER_SHUTDOWN_TIMEOUT_S`), so
``terminationGracePeriodSeconds`` is the sum plus a margin and the kubelet never kills a draining
server.

Resource requests say where each number came from, in ``modelport/*`` annotations:

* CPU: the intra-op threads the server runs, instances × threads summed over every served version.
  From ``modelport analyze`` results when given (the best candidate's settings); otherwise from each
  model's config.yaml (or config.pbtxt). An unset thread count is counted as the server would on
  the analyzed machine (its cores divided among the instances); from a config it cannot be known
  (the server divides the *node's* cores), so it counts 1 and says so — pin ``intra_op_threads``.
* Memory: the server's measured peak resident memory × :data:`MEMORY_HEADROOM` when the analysis
  recorded it for every served model; otherwise an estimate, (runtime baseline + model files ×
  instances + the largest model once more while it loads) × the same headroom. The baseline and
  the per-instance factor (one copy of the weights per ONNX Runtime session, plus a transient copy
  while loading) were measured: 130 MiB for the idle server, +127 MiB for the first and +66 MiB for
  each further instance of a 64 MiB model. Activations are not counted; run ``analyze`` to measure.
* Limits equal requests (Guaranteed QoS: with the static CPU manager the pod gets whole cores,
  and ONNX Runtime's spinning thread pools are not throttled by CFS quotas). ``gpu`` adds
  ``nvidia.com/gpu: 1`` and a toleration for the usual GPU node taint.

Validation: :func:`validate` checks every object before anything is written (a generator bug must
not produce a manifest that fails in the cluster). Deployment and Service are checked with
``kubernetes-validate`` against the Kubernetes :data:`KUBERNETES_VERSION` schemas shipped in that
package (offline, strict: unknown fields are errors). KServe's CRDs are not in that package, so
:data:`SERVING_RUNTIME_SCHEMA` and :data:`INFERENCE_SERVICE_SCHEMA` are JSON schemas written here
for exactly the fields we emit (unknown fields are errors), taken from KServe's Go types
(``serving.kserve.io`` v1alpha1 ServingRuntimeSpec, v1beta1 PredictorSpec/ModelSpec); the
Kubernetes types they embed (Container, ResourceRequirements, Toleration, ObjectMeta) are checked
against the same strict Kubernetes definitions. Schemas cannot see references between fields, so
:func:`validate` also checks names, label selectors, probe and Service port references, resource
quantities and the InferenceService's runtime.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.resources
import json
import logging
import math
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pydantic
import yaml

from modelport import __version__
from modelport.errors import ConfigError, ModelSaveError, RepositoryError

if TYPE_CHECKING:
    from modelport.serve.repository import ModelConfig, ServedModel

__all__ = [
    "DEFAULT_GPU_IMAGE",
    "DEFAULT_IMAGE",
    "GRPC_PORT",
    "HTTP_PORT",
    "INFERENCE_SERVICE_SCHEMA",
    "KSERVE_MODELS_DIR",
    "KUBERNETES_VERSION",
    "LIVE_PATH",
    "MEMORY_HEADROOM",
    "METRICS_PATH",
    "MODELS_DIR",
    "READY_PATH",
    "RUN_AS_USER",
    "SERVER_SHUTDOWN_TIMEOUT_S",
    "SERVING_RUNTIME_SCHEMA",
    "STORAGE_URI_PLACEHOLDER",
    "Analysis",
    "K8sOptions",
    "Manifests",
    "ModelUsage",
    "Resources",
    "build_manifests",
    "plan_resources",
    "read_analysis",
    "server_args",
    "validate",
    "validation_available",
    "write_manifests",
]

logger = logging.getLogger(__name__)

#: The Kubernetes version whose schemas the Deployment and Service are validated against.
KUBERNETES_VERSION = "1.30"
HTTP_PORT = 8000
GRPC_PORT = 8001
#: Where the repository is mounted (Deployment) and where KServe's storage initializer puts it.
MODELS_DIR = "/models"
KSERVE_MODELS_DIR = "/mnt/models"
READY_PATH = "/v2/health/ready"
LIVE_PATH = "/v2/health/live"
METRICS_PATH = "/metrics"
#: The non-root user of docker/Dockerfile (numeric, so the kubelet can check runAsNonRoot).
RUN_AS_USER = 10001
DEFAULT_IMAGE = f"modelport:{__version__}"
DEFAULT_GPU_IMAGE = f"modelport:{__version__}-gpu"
STORAGE_URI_PLACEHOLDER = "s3://CHANGE-ME/path/to/repository"
#: uvicorn's ``timeout_graceful_shutdown`` in serve/server.py: how long in-flight requests may finish.
SERVER_SHUTDOWN_TIMEOUT_S = 60
GRACE_MARGIN_S = 5
MEMORY_HEADROOM = 1.25
#: Peak resident memory of ``modelport serve`` with a tiny model loaded (measured, MiB).
RUNTIME_BASELINE_MIB = 130
STARTUP_BASE_S = 60.0
STARTUP_S_PER_GIB = 30.0
STARTUP_PERIOD_S = 5
#: KServe/Knative append suffixes such as ``-predictor-00001-deployment-<hash>`` to the name.
MAX_NAME_LENGTH = 40

_ANNOTATION = "modelport/"
_MIB = 1024 * 1024
_GIB = 1024 * _MIB
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS_1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?)(m|k|Ki|M|Mi|G|Gi|T|Ti)?")
_QUANTITY_SCALE = {
    None: 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
}
_STORAGE_SCHEMES = ("gs", "s3", "pvc", "http", "https", "hdfs", "webhdfs", "oci", "hf", "azure")
_STORAGE_URI = re.compile(rf"({'|'.join(_STORAGE_SCHEMES)})://[^\s]+")
_KSERVE_GROUP = "serving.kserve.io"


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class K8sOptions:
    """What to generate. ``name`` None: from the repository folder's name. ``pvc`` and
    ``model_image`` choose the volume of a Deployment (default: claim ``<name>-models``);
    ``storage_uri`` is where KServe fetches the repository from (a placeholder when None)."""

    name: str | None = None
    image: str | None = None
    replicas: int = 1
    kserve: bool = False
    gpu: bool = False
    storage_uri: str | None = None
    pvc: str | None = None
    model_image: str | None = None
    drain_delay: float = 5.0
    startup_timeout: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int) or self.replicas < 1:
            raise ConfigError(
                f"replicas must be an integer >= 1, got {self.replicas!r} — scale to zero with kubectl scale instead"
            )
        if not (math.isfinite(self.drain_delay) and 0 <= self.drain_delay <= 600):
            raise ConfigError(f"drain delay must be 0..600 seconds, got {self.drain_delay}")
        if self.startup_timeout is not None and not (math.isfinite(self.startup_timeout) and self.startup_timeout > 0):
            raise ConfigError(f"startup timeout must be a positive number of seconds, got {self.startup_timeout}")
        if self.name is not None:
            check_name(self.name, what="name")
        for what, image in (("image", self.image), ("model image", self.model_image)):
            if image is not None and (not image or any(c.isspace() for c in image)):
                raise ConfigError(
                    f"{what} {image!r} is not an image reference — give e.g. registry.example/modelport:1"
                )
        self._check_storage()

    def _check_storage(self) -> None:
        if self.pvc is not None and self.model_image is not None:
            raise ConfigError("give either a PVC or a model image for the repository volume, not both")
        if self.kserve and (self.pvc is not None or self.model_image is not None):
            raise ConfigError(
                "with KServe the repository comes from the storage URI (KServe's storage initializer fills "
                f"{KSERVE_MODELS_DIR}) — use --storage-uri (pvc://CLAIM/path for a PVC) instead of --pvc/--model-image"
            )
        if self.storage_uri is not None:
            if not self.kserve:
                raise ConfigError("a storage URI is for KServe manifests — add --kserve, or mount a PVC with --pvc")
            if not _STORAGE_URI.fullmatch(self.storage_uri):
                raise ConfigError(
                    f"storage URI {self.storage_uri!r} is not one KServe's storage initializer reads — "
                    f"give {', '.join(s + '://' for s in _STORAGE_SCHEMES)} followed by the repository folder"
                )
        if self.pvc is not None and (not _DNS_1123_SUBDOMAIN.fullmatch(self.pvc) or len(self.pvc) > 253):
            raise ConfigError(
                f"PVC claim name {self.pvc!r} is not a valid Kubernetes name — use lowercase letters, digits, '-' "
                "and '.', starting and ending with a letter or digit (e.g. 'resnet-models')"
            )


def check_name(name: str, *, what: str, limit: int = MAX_NAME_LENGTH) -> None:
    """Raise :class:`ConfigError` unless ``name`` is a DNS-1035 label (what Services require) of at most ``limit``."""
    if not _DNS_1035.fullmatch(name) or len(name) > limit:
        raise ConfigError(
            f"{what} {name!r} is not a valid Kubernetes name — use lowercase letters, digits and '-', "
            f"starting with a letter and ending with a letter or digit, at most {limit} characters "
            "(e.g. 'resnet-serve')"
        )


def default_name(repo: Path) -> str:
    """A valid name from the repository folder's name (``modelport`` when nothing of it is usable)."""
    name = re.sub(r"[^a-z0-9-]+", "-", repo.resolve().name.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)
    if name and not name[0].isalpha():
        name = f"m-{name}"
    return name[:MAX_NAME_LENGTH].rstrip("-") or "modelport"


# ---------------------------------------------------------------------------------------------
# Analysis results
# ---------------------------------------------------------------------------------------------
class _Settings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore")
    instance_count: int = pydantic.Field(ge=1)
    intra_op_threads: int | None = pydantic.Field(default=None, ge=1)


class _Measured(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore")
    label: str
    settings: dict[str, _Settings] = pydantic.Field(min_length=1)
    memory_mb: float | None = pydantic.Field(default=None, gt=0)


class _AnalysisFile(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore")
    cores: int = pydantic.Field(ge=1)
    best: _Measured | None
    confirmed: bool | None = None


@dataclass(frozen=True)
class Analysis:
    """What ``modelport analyze`` chose: per model (instances, threads or None), the server's
    measured peak memory, and the cores of the machine it ran on."""

    path: Path
    label: str
    settings: dict[str, tuple[int, int | None]]
    memory_mb: float | None
    cores: int


def read_analysis(path: str | os.PathLike[str]) -> Analysis:
    """Read the JSON that ``modelport analyze --json-file`` (or ``--json``) writes.

    Raises :class:`ConfigError` for a missing or malformed file, an analysis in which nothing met
    the constraints, and a best candidate that did not hold up when measured again.
    """
    source = Path(path)
    how = f"run `modelport analyze REPO --json-file {source}`"
    try:
        raw = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"analysis file '{source}' does not exist — {how}") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"analysis file '{source}' is not readable JSON ({e}) — {how}") from e
    try:
        parsed = _AnalysisFile.model_validate(raw)
    except pydantic.ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"analysis file '{source}' is not what `modelport analyze` writes: {problems} — {how}") from e
    if parsed.best is None:
        raise ConfigError(
            f"analysis file '{source}' has no best configuration (no candidate met its constraints) — "
            "analyze again with looser limits, or leave out --analysis to size from config.yaml"
        )
    if parsed.confirmed is False:
        raise ConfigError(
            f"analysis file '{source}': its best configuration did not hold up when measured again next to "
            "the default, so its numbers are not a basis for resource requests — analyze again on a quieter "
            "machine, or leave out --analysis"
        )
    best = parsed.best
    return Analysis(
        path=source,
        label=best.label,
        settings={name: (s.instance_count, s.intra_op_threads) for name, s in best.settings.items()},
        memory_mb=best.memory_mb,
        cores=parsed.cores,
    )


# ---------------------------------------------------------------------------------------------
# Resources
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelUsage:
    """One model as it will be served: served versions, instances and intra-op threads of each,
    bytes on disk (all served versions, and the largest one), and where the settings came from."""

    name: str
    versions: int
    instances: int
    threads: int
    threads_known: bool
    bytes: int
    largest: int
    source: str

    @property
    def cpu(self) -> int:
        return self.versions * self.instances * self.threads

    @property
    def loaded_bytes(self) -> int:
        """Weights held by all sessions: one copy per instance of every served version."""
        return self.bytes * self.instances

    def describe(self) -> str:
        threads = f"{self.threads} thread(s)" if self.threads_known else "threads unset, 1 counted"
        return f"{self.name}: {self.versions} version(s) × {self.instances} instance(s) × {threads} ({self.source})"


@dataclass(frozen=True)
class Resources:
    """The container's requests (limits are the same): whole cores, MiB, GPUs, and their sources."""

    cpu: int
    memory_mib: int
    gpu: int
    cpu_source: str
    memory_source: str
    models: tuple[ModelUsage, ...]

    @property
    def loaded_bytes(self) -> int:
        return sum(m.loaded_bytes for m in self.models)

    @property
    def repository_bytes(self) -> int:
        return sum(m.bytes for m in self.models)

    def requirements(self) -> dict[str, dict[str, str]]:
        amounts = {"cpu": str(self.cpu), "memory": f"{self.memory_mib}Mi"}
        limits = dict(amounts)
        if self.gpu:
            limits["nvidia.com/gpu"] = str(self.gpu)
        return {"requests": amounts, "limits": limits}

    def annotations(self) -> dict[str, str]:
        notes = {
            f"{_ANNOTATION}cpu-request": self.cpu_source,
            f"{_ANNOTATION}memory-request": self.memory_source,
        }
        if self.gpu:
            notes[f"{_ANNOTATION}gpu-request"] = f"{self.gpu} (--gpu)"
        return notes


def _version_bytes(folder: Path) -> int:
    """The bytes of one version folder: model.onnx and any external data next to it."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _config_source(folder: Path) -> str:
    for name in ("config.yaml", "config.pbtxt"):
        if (folder / name).is_file():
            return f"{folder.name}/{name}"
    return "defaults"


def repository_usage(repo: Path, analysis: Analysis | None = None) -> list[ModelUsage]:
    """Every served model of ``repo`` with the settings it will run with (the analysis' when given)."""
    from modelport.serve.repository import ModelRepository  # imports onnxruntime's runner module

    repository = ModelRepository(repo)
    if analysis is not None:
        unknown = sorted(set(analysis.settings) - set(repository.models))
        if unknown:
            raise ConfigError(
                f"analysis file '{analysis.path}' has settings for {', '.join(repr(n) for n in unknown)}, which "
                f"repository '{repo}' does not serve (it serves {', '.join(repository.models)}) — pass the "
                "analysis of this repository"
            )
    grouped: dict[str, list[ServedModel]] = {}
    for served in repository:
        grouped.setdefault(served.name, []).append(served)
    total_instances = sum(
        len(versions) * _settings_of(name, versions[0].config, analysis)[0] for name, versions in grouped.items()
    )
    usages = []
    for name, versions in grouped.items():
        instances, threads = _settings_of(name, versions[0].config, analysis)
        source = f"analysis {analysis.path.name}" if analysis is not None and name in analysis.settings else None
        if threads is None and source is not None and analysis is not None:
            threads = max(1, analysis.cores // max(1, total_instances))
            source += f", threads unset: {analysis.cores} analyzed cores / {total_instances} instances"
        sizes = [_version_bytes(v.path.parent) for v in versions]
        usages.append(
            ModelUsage(
                name=name,
                versions=len(versions),
                instances=instances,
                threads=threads or 1,
                threads_known=threads is not None,
                bytes=sum(sizes),
                largest=max(sizes),
                source=source or _config_source(repo / name),
            )
        )
    return usages


def _settings_of(name: str, config: ModelConfig, analysis: Analysis | None) -> tuple[int, int | None]:
    if analysis is not None and name in analysis.settings:
        return analysis.settings[name]
    return config.instance_count, config.intra_op_threads


def plan_resources(repo: str | os.PathLike[str], analysis: Analysis | None = None, *, gpu: bool = False) -> Resources:
    """The requests of the server container for ``repo`` (see the module docstring for the rules)."""
    models = repository_usage(Path(repo), analysis)
    cpu = sum(m.cpu for m in models)
    cpu_source = f"{cpu} = " + " + ".join(m.describe() for m in models)
    measured = analysis is not None and analysis.memory_mb is not None
    if analysis is not None and analysis.memory_mb is not None and all(m.name in analysis.settings for m in models):
        memory = math.ceil(analysis.memory_mb * MEMORY_HEADROOM)
        memory_source = (
            f"{memory}Mi = measured peak RSS {analysis.memory_mb:.0f} MiB ({analysis.path.name}, "
            f"{analysis.label}) × {MEMORY_HEADROOM} headroom"
        )
    else:
        loaded = sum(m.loaded_bytes for m in models) / _MIB
        largest = max(m.largest for m in models) / _MIB
        memory = math.ceil((RUNTIME_BASELINE_MIB + loaded + largest) * MEMORY_HEADROOM)
        why = "estimated, the analysis does not cover every served model" if measured else "estimated"
        memory_source = (
            f"{memory}Mi = ({RUNTIME_BASELINE_MIB} MiB runtime baseline + {loaded:.1f} MiB of model files × "
            f"instances + {largest:.1f} MiB largest model while loading) × {MEMORY_HEADROOM} headroom ({why}; "
            "activations not counted — run `modelport analyze` to measure)"
        )
    return Resources(
        cpu=max(1, cpu),
        memory_mib=memory,
        gpu=1 if gpu else 0,
        cpu_source=cpu_source,
        memory_source=memory_source,
        models=tuple(models),
    )


# ---------------------------------------------------------------------------------------------
# Objects
# ---------------------------------------------------------------------------------------------
def server_args(models_dir: str, drain_delay: float) -> list[str]:
    """The arguments after ``modelport serve`` that the container runs."""
    return [
        models_dir,
        "--host",
        "0.0.0.0",
        "--port",
        str(HTTP_PORT),
        "--grpc-port",
        str(GRPC_PORT),
        "--drain-delay",
        f"{drain_delay:g}",
    ]


def grace_period(drain_delay: float) -> int:
    """terminationGracePeriodSeconds: the drain, then the server's own limit on in-flight work, plus a margin."""
    return math.ceil(drain_delay + SERVER_SHUTDOWN_TIMEOUT_S + GRACE_MARGIN_S)


def _startup_timeout(options: K8sOptions, resources: Resources) -> float:
    if options.startup_timeout is not None:
        return options.startup_timeout
    return STARTUP_BASE_S + STARTUP_S_PER_GIB * resources.loaded_bytes / _GIB


def _probes(port: int | str, startup_timeout: float) -> dict[str, Any]:
    def get(path: str) -> dict[str, Any]:
        return {"path": path, "port": port, "scheme": "HTTP"}

    return {
        "readinessProbe": {
            "httpGet": get(READY_PATH),
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
            "successThreshold": 1,
        },
        "livenessProbe": {"httpGet": get(LIVE_PATH), "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3},
        "startupProbe": {
            "httpGet": get(LIVE_PATH),
            "periodSeconds": STARTUP_PERIOD_S,
            "timeoutSeconds": 2,
            "failureThreshold": max(1, math.ceil(startup_timeout / STARTUP_PERIOD_S)),
        },
    }


def _security_context(*, read_only_root: bool = True) -> dict[str, Any]:
    """The restricted Pod Security Standard. A read-only root needs a writable /tmp volume, which
    the Deployment has; Knative does not always allow emptyDir volumes, so KServe keeps its root writable."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only_root,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "modelport",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "inference-server",
        "app.kubernetes.io/version": __version__,
        "app.kubernetes.io/managed-by": "modelport",
    }


def _selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "modelport", "app.kubernetes.io/instance": name}


def _metadata(name: str, annotations: Mapping[str, str]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": _labels(name)}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return metadata


_GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def _repository_volume(name: str, options: K8sOptions, resources: Resources) -> tuple[dict[str, Any], list[Any]]:
    """The volume holding the repository, and the init containers that fill it (model-image mode)."""
    if options.model_image is None:
        claim = options.pvc or f"{name}-models"
        return {"name": "models", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}, []
    size_mib = math.ceil(resources.repository_bytes * 1.1 / _MIB) + 16
    init = {
        "name": "fetch-models",
        "image": options.model_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["cp", "-R", f"{MODELS_DIR}/.", "/fill/"],
        "volumeMounts": [{"name": "models", "mountPath": "/fill"}],
        "securityContext": _security_context(),
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
    }
    return {"name": "models", "emptyDir": {"sizeLimit": f"{size_mib}Mi"}}, [init]


def _deployment(name: str, image: str, options: K8sOptions, resources: Resources) -> dict[str, Any]:
    volume, init = _repository_volume(name, options, resources)
    container = {
        "name": "server",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["modelport", "serve"],
        "args": server_args(MODELS_DIR, options.drain_delay),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
        ],
        **_probes("http", _startup_timeout(options, resources)),
        "resources": resources.requirements(),
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": _security_context(),
    }
    pod: dict[str, Any] = {
        "terminationGracePeriodSeconds": grace_period(options.drain_delay),
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [volume, {"name": "tmp", "emptyDir": {}}],
    }
    if init:
        pod["initContainers"] = init
    if resources.gpu:
        pod["tolerations"] = [dict(_GPU_TOLERATION)]
    scrape = {"prometheus.io/scrape": "true", "prometheus.io/port": str(HTTP_PORT), "prometheus.io/path": METRICS_PATH}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name, resources.annotations()),
        "spec": {
            "replicas": options.replicas,
            "selector": {"matchLabels": _selector(name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": _labels(name), "annotations": scrape}, "spec": pod},
        },
    }


def _service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, {}),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector(name),
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"},
                {
                    "name": "grpc",
                    "port": GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "kubernetes.io/h2c",
                },
            ],
        },
    }


def _serving_runtime(name: str, image: str, options: K8sOptions, resources: Resources) -> dict[str, Any]:
    container = {
        "name": "kserve-container",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["modelport", "serve"],
        "args": server_args(KSERVE_MODELS_DIR, options.drain_delay),
        "ports": [{"name": "http1", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        **_probes(HTTP_PORT, _startup_timeout(options, resources)),
        "securityContext": _security_context(read_only_root=False),
    }
    return {
        "apiVersion": f"{_KSERVE_GROUP}/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": _metadata(f"{name}-runtime", {}),
        "spec": {
            "supportedModelFormats": [{"name": "onnx", "version": "1", "autoSelect": False}],
            "protocolVersions": ["v2", "grpc-v2"],
            "multiModel": False,
            "containers": [container],
        },
    }


def _inference_service(name: str, options: K8sOptions, resources: Resources) -> dict[str, Any]:
    predictor: dict[str, Any] = {
        "minReplicas": options.replicas,
        "maxReplicas": options.replicas,
        "model": {
            "modelFormat": {"name": "onnx"},
            "runtime": f"{name}-runtime",
            "protocolVersion": "v2",
            "storageUri": options.storage_uri or STORAGE_URI_PLACEHOLDER,
            "resources": resources.requirements(),
        },
    }
    if resources.gpu:
        predictor["tolerations"] = [dict(_GPU_TOLERATION)]
    return {
        "apiVersion": f"{_KSERVE_GROUP}/v1beta1",
        "kind": "InferenceService",
        "metadata": _metadata(name, resources.annotations()),
        "spec": {"predictor": predictor},
    }


@dataclass(frozen=True)
class Manifests:
    """The generated objects, the resources they request, notes for the user, and whether they
    were validated."""

    objects: list[dict[str, Any]]
    resources: Resources
    notes: list[str] = field(default_factory=list)
    validated: bool = False
    source: str = ""

    def header(self) -> str:
        kserve = any(obj.get("kind") in _KSERVE_SCHEMAS for obj in self.objects)
        check = (
            f"validated against the Kubernetes {KUBERNETES_VERSION} schemas (strict)"
            + (" and modelport's KServe schemas" if kserve else "")
            if self.validated
            else "NOT validated (install kubernetes-validate)"
        )
        lines = [f"# Generated by modelport k8s {__version__} from {self.source}; {check}."]
        lines += [f"# note: {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def to_yaml(self) -> str:
        """Every object in one multi-document YAML text, with the header as comments."""
        docs = [_dump(obj) for obj in self.objects]
        return self.header() + "---\n" + "---\n".join(docs)

    def files(self) -> dict[str, str]:
        """One YAML text per object, by file name (``deployment.yaml``, ``service.yaml`` ...)."""
        return {f"{obj['kind'].lower()}.yaml": self.header() + _dump(obj) for obj in self.objects}


def _dump(obj: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(obj), sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)


def build_manifests(
    repo: str | os.PathLike[str],
    options: K8sOptions | None = None,
    *,
    analysis: str | os.PathLike[str] | Analysis | None = None,
    check: bool = True,
) -> Manifests:
    """The manifests that serve ``repo``: a Deployment and a Service, or (``options.kserve``) a
    ServingRuntime and an InferenceService. ``check`` validates them (see :func:`validate`)."""
    options = options or K8sOptions()
    root = Path(repo)
    if root.is_file():
        raise RepositoryError(
            f"'{root}' is a file; Kubernetes manifests mount a repository folder — lay it out as "
            "REPO/<name>/1/model.onnx and pass REPO"
        )
    if isinstance(analysis, str | os.PathLike):
        analysis = read_analysis(analysis)
    resources = plan_resources(root, analysis, gpu=options.gpu)
    name = options.name or default_name(root)
    image = options.image or (DEFAULT_GPU_IMAGE if options.gpu else DEFAULT_IMAGE)
    if options.kserve:
        objects = [_serving_runtime(name, image, options, resources), _inference_service(name, options, resources)]
    else:
        objects = [_deployment(name, image, options, resources), _service(name)]
    if check:
        validate(objects)
    manifests = Manifests(objects, resources, _notes(name, image, options, resources), check, str(root))
    kinds = ", ".join(o["kind"] for o in objects)
    logger.info("built %s for %s (%d CPU, %d MiB)", kinds, root, resources.cpu, resources.memory_mib)
    return manifests


def _notes(name: str, image: str, options: K8sOptions, resources: Resources) -> list[str]:
    notes = []
    if options.image is None:
        notes.append(
            f"image {image!r} is the local tag from docker/README.md — push it to a registry your cluster "
            "pulls from and pass --image"
        )
    if options.kserve and options.storage_uri is None:
        notes.append(
            f"storageUri is the placeholder {STORAGE_URI_PLACEHOLDER!r} — pass --storage-uri with the repository "
            "folder's location (s3://, gs://, pvc://CLAIM/path ...)"
        )
    if not options.kserve and options.model_image is None:
        claim = options.pvc or f"{name}-models"
        notes.append(
            f"the repository is mounted read-only from PersistentVolumeClaim {claim!r}, which must exist and hold "
            f"the repository at its root ({resources.repository_bytes / _MIB:.1f} MiB); with more than one replica "
            "on different nodes its access mode must be ReadOnlyMany — or use --model-image"
        )
    unpinned = [m.name for m in resources.models if not m.threads_known]
    if unpinned:
        notes.append(
            f"intra_op_threads is unset for {', '.join(unpinned)}: the server will divide the node's cores among the "
            "instances, which the CPU request cannot match — set intra_op_threads in config.yaml (or run "
            "`modelport analyze --apply`)"
        )
    if options.gpu and "providers" not in _model_config_fields():
        notes.append(
            "modelport serve runs every model on ONNX Runtime's CPU execution provider today: the GPU is "
            "reserved but unused until the repository configuration can select CUDA"
        )
    return notes


def _model_config_fields() -> set[str]:
    from modelport.serve.repository import ModelConfig

    return set(ModelConfig.model_fields)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------
_K8S_DEFS = "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s."
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_NAME = {"type": "string", "minLength": 1}
_PROTOCOLS = {"enum": ["v1", "v2", "grpc-v1", "grpc-v2"]}


def _k8s(definition: str) -> dict[str, Any]:
    """A reference to a strict Kubernetes definition, e.g. ``api.core.v1.Container``."""
    return {"$ref": _K8S_DEFS + definition}


def _strict(properties: dict[str, Any], *required: str) -> dict[str, Any]:
    """An object with exactly ``properties`` (unknown fields are errors)."""
    return {"type": "object", "additionalProperties": False, "required": list(required), "properties": properties}


def _array_of(item: dict[str, Any], **constraints: Any) -> dict[str, Any]:
    return {"type": "array", "items": item, **constraints}


def _resource_schema(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    top = _strict(
        {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _k8s("apimachinery.pkg.apis.meta.v1.ObjectMeta"),
            "spec": spec,
        },
        "apiVersion",
        "kind",
        "metadata",
        "spec",
    )
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **top}


#: ServingRuntime (serving.kserve.io/v1alpha1), the fields we emit; from KServe's ServingRuntimeSpec.
SERVING_RUNTIME_SCHEMA = _resource_schema(
    f"{_KSERVE_GROUP}/v1alpha1",
    "ServingRuntime",
    _strict(
        {
            "supportedModelFormats": _array_of(
                _strict(
                    {
                        "name": _NAME,
                        "version": _NAME,
                        "autoSelect": {"type": "boolean"},
                        "priority": {"type": "integer", "minimum": 1},
                    },
                    "name",
                ),
                minItems=1,
            ),
            "protocolVersions": _array_of(_PROTOCOLS, uniqueItems=True),
            "multiModel": {"type": "boolean"},
            "disabled": {"type": "boolean"},
            "containers": _array_of(_k8s("api.core.v1.Container"), minItems=1),
            "tolerations": _array_of(_k8s("api.core.v1.Toleration")),
            "labels": _STRING_MAP,
            "annotations": _STRING_MAP,
        },
        "supportedModelFormats",
        "containers",
    ),
)

#: InferenceService (serving.kserve.io/v1beta1), the fields we emit; from KServe's PredictorSpec and ModelSpec.
INFERENCE_SERVICE_SCHEMA = _resource_schema(
    f"{_KSERVE_GROUP}/v1beta1",
    "InferenceService",
    _strict(
        {
            "predictor": _strict(
                {
                    "minReplicas": {"type": "integer", "minimum": 0},
                    "maxReplicas": {"type": "integer", "minimum": 0},
                    "tolerations": _array_of(_k8s("api.core.v1.Toleration")),
                    "model": _strict(
                        {
                            "modelFormat": _strict({"name": _NAME, "version": {"type": "string"}}, "name"),
                            "runtime": _NAME,
                            "protocolVersion": _PROTOCOLS,
                            "storageUri": {"type": "string", "pattern": f"^{_STORAGE_URI.pattern}$"},
                            "resources": _k8s("api.core.v1.ResourceRequirements"),
                        },
                        "modelFormat",
                        "storageUri",
                    ),
                },
                "model",
            )
        },
        "predictor",
    ),
)

_KSERVE_SCHEMAS = {"ServingRuntime": SERVING_RUNTIME_SCHEMA, "InferenceService": INFERENCE_SERVICE_SCHEMA}
_NOT_INSTALLED = (
    "validating Kubernetes manifests needs the kubernetes-validate package (offline schemas) — install it: "
    "pip install kubernetes-validate"
)

_NO_SCHEMAS = (
    "the installed kubernetes-validate has no strict schemas for Kubernetes {version} — install a version "
    "that has them (pip install 'kubernetes-validate>=1.30,<2')"
)


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ConfigError(_NOT_INSTALLED) from e


def validation_available() -> bool:
    """Whether :func:`validate` can run (kubernetes-validate and jsonschema are installed)."""
    try:
        _import("kubernetes_validate")
        _import("jsonschema")
    except ConfigError:
        return False
    return True


def validate(objects: Sequence[Mapping[str, Any]], *, kubernetes_version: str = KUBERNETES_VERSION) -> None:
    """Raise :class:`ConfigError` naming every problem of ``objects``: schema errors (strict, offline)
    and broken references (names, selectors, ports, quantities, runtime). References are resolved
    within ``objects``: a Service must select a Deployment's pods, an InferenceService must name a
    ServingRuntime among them."""
    _kubernetes_definitions(kubernetes_version)  # refuses a version whose schemas are not installed
    problems: list[str] = []
    for obj in objects:
        kind = str(obj.get("kind"))
        where = f"{kind} '{obj.get('metadata', {}).get('name')}'"
        schema_problems = _schema_problems(obj, kind, kubernetes_version)
        problems += [f"{where}: {p}" for p in schema_problems]
        if not schema_problems:
            problems += [f"{where}: {p}" for p in _object_problems(obj)]
    problems += _reference_problems(objects)
    if problems:
        raise ConfigError(
            f"the generated manifests are invalid ({len(problems)} problem(s)): "
            + "; ".join(problems)
            + " — check the options that went into them (--name, --image, --storage-uri); otherwise this is a bug "
            "in modelport k8s"
        )


def _schema_problems(obj: Mapping[str, Any], kind: str, kubernetes_version: str) -> list[str]:
    if kind in _KSERVE_SCHEMAS:
        return _kserve_problems(obj, _KSERVE_SCHEMAS[kind], kubernetes_version)
    kv = _import("kubernetes_validate.utils")
    try:
        kv.validate(dict(obj), kubernetes_version, strict=True)
    except kv.ValidationError as e:
        return [f"{_path(e.absolute_path)}: {e.message} (Kubernetes {kubernetes_version} schema)"]
    except kv.SchemaNotFoundError as e:
        return [f"no Kubernetes {kubernetes_version} schema for {kind} {obj.get('apiVersion')!r}: {e.message}"]
    except kv.VersionNotSupportedError as e:
        raise ConfigError(_NO_SCHEMAS.format(version=kubernetes_version)) from e
    return []


def _path(parts: Sequence[Any]) -> str:
    return ".".join(str(p) for p in parts) or "(object)"


@lru_cache(maxsize=4)
def _kubernetes_definitions(kubernetes_version: str) -> dict[str, Any]:
    """The strict Kubernetes type definitions shipped in kubernetes-validate, for ``X.Y``."""
    package = _import("kubernetes_validate")
    root = importlib.resources.files(package.__name__).joinpath("kubernetes-json-schema")
    folder = root.joinpath(f"v{kubernetes_version}.0-local-strict")
    try:
        definitions: dict[str, Any] = json.loads(folder.joinpath("_definitions.json").read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(_NO_SCHEMAS.format(version=kubernetes_version)) from e
    return definitions


def _kserve_problems(obj: Mapping[str, Any], schema: Mapping[str, Any], kubernetes_version: str) -> list[str]:
    jsonschema = _import("jsonschema")
    referencing = _import("referencing")
    definitions = _kubernetes_definitions(kubernetes_version)
    resource = referencing.Resource.from_contents(definitions)
    registry = referencing.Registry().with_resource("https://kubernetes.io/api/_definitions.json", resource)
    validator = jsonschema.Draft202012Validator(dict(schema), registry=registry)
    errors = sorted(validator.iter_errors(dict(obj)), key=lambda e: _path(e.absolute_path))
    return [f"{_path(e.absolute_path)}: {e.message} (KServe schema)" for e in errors]


def _pod_specs(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    spec = obj.get("spec", {})
    if obj.get("kind") == "Deployment":
        return [spec["template"]["spec"]]
    if obj.get("kind") == "ServingRuntime":
        return [spec]
    return []


def _object_problems(obj: Mapping[str, Any]) -> list[str]:
    """Checks the schemas cannot express, on one object (its schema already passed)."""
    metadata = obj["metadata"]
    problems = []
    if not _DNS_1035.fullmatch(metadata.get("name", "")) or len(metadata["name"]) > 63:
        problems.append(f"name {metadata.get('name')!r} is not a DNS-1035 label")
    for key, value in metadata.get("labels", {}).items():
        if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            problems.append(f"label {key}={value!r} is not a valid label value")
    if obj["kind"] == "Deployment":
        template = obj["spec"]["template"]["metadata"].get("labels", {})
        selector = obj["spec"]["selector"].get("matchLabels", {})
        if not selector or any(template.get(k) != v for k, v in selector.items()):
            problems.append(f"selector {selector} does not match the pod template's labels {template}")
    for pod in _pod_specs(obj):
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            problems += [f"container '{container['name']}': {p}" for p in _container_problems(container)]
    if obj["kind"] == "InferenceService":
        resources = obj["spec"]["predictor"]["model"].get("resources", {})
        problems += _resource_problems(resources)
    return problems


def _container_problems(container: Mapping[str, Any]) -> list[str]:
    ports = container.get("ports", [])
    known = {p["containerPort"] for p in ports} | {p["name"] for p in ports if "name" in p}
    problems = []
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        port = container.get(probe, {}).get("httpGet", {}).get("port")
        if port is not None and port not in known:
            problems.append(
                f"{probe} uses port {port!r}, which the container does not declare ({sorted(map(str, known))})"
            )
    return problems + _resource_problems(container.get("resources", {}))


def _quantity(text: Any) -> float | None:
    match = _QUANTITY.fullmatch(str(text))
    return None if match is None else float(match.group(1)) * _QUANTITY_SCALE[match.group(2)]


def _resource_problems(resources: Mapping[str, Any]) -> list[str]:
    problems = []
    for kind in ("requests", "limits"):
        for key, value in resources.get(kind, {}).items():
            if _quantity(value) is None:
                problems.append(f"resources.{kind}.{key} {value!r} is not a Kubernetes quantity")
    requests, limits = resources.get("requests", {}), resources.get("limits", {})
    for key in set(requests) & set(limits):
        low, high = _quantity(requests[key]), _quantity(limits[key])
        if low is not None and high is not None and low > high:
            problems.append(f"resources.requests.{key} {requests[key]} is over the limit {limits[key]}")
    return problems


def _reference_problems(objects: Sequence[Mapping[str, Any]]) -> list[str]:
    """Checks between objects: Services reach a pod's ports, InferenceServices name a runtime."""
    problems = []
    deployments = [o for o in objects if o.get("kind") == "Deployment"]
    runtimes = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "ServingRuntime"}
    for obj in objects:
        name = obj.get("metadata", {}).get("name")
        with contextlib.suppress(KeyError, TypeError, AttributeError):  # a schema problem, reported already
            if obj.get("kind") == "Service":
                problems += [f"Service '{name}': {p}" for p in _service_problems(obj, deployments)]
            if obj.get("kind") == "InferenceService":
                problems += [f"InferenceService '{name}': {p}" for p in _runtime_problems(obj, runtimes)]
    return problems


def _service_problems(service: Mapping[str, Any], deployments: Sequence[Mapping[str, Any]]) -> list[str]:
    selector = service["spec"]["selector"]
    for deployment in deployments:
        template = deployment["spec"]["template"]
        if all(template["metadata"].get("labels", {}).get(k) == v for k, v in selector.items()):
            ports = {p.get("name") for c in template["spec"]["containers"] for p in c.get("ports", [])}
            ports |= {p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
            return [
                f"port '{p['name']}' targets {p['targetPort']!r}, which the pods do not declare"
                for p in service["spec"]["ports"]
                if p["targetPort"] not in ports
            ]
    return [f"selector {selector} matches no Deployment's pods"]


def _runtime_problems(service: Mapping[str, Any], runtimes: Mapping[str, Mapping[str, Any]]) -> list[str]:
    model = service["spec"]["predictor"]["model"]
    runtime = runtimes.get(model.get("runtime", ""))
    if runtime is None:
        return [f"runtime {model.get('runtime')!r} is not among the ServingRuntimes ({', '.join(runtimes) or 'none'})"]
    problems = []
    formats = [f["name"] for f in runtime["spec"]["supportedModelFormats"]]
    if model["modelFormat"]["name"] not in formats:
        problems.append(f"model format {model['modelFormat']['name']!r} is not one its runtime supports ({formats})")
    if model.get("protocolVersion") not in runtime["spec"].get("protocolVersions", [model.get("protocolVersion")]):
        problems.append(f"protocol {model.get('protocolVersion')!r} is not one its runtime speaks")
    return problems


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def write_manifests(manifests: Manifests, output: str | os.PathLike[str], *, force: bool = False) -> list[Path]:
    """Write ``manifests``: one multi-document file when ``output`` ends in .yaml/.yml, else one file
    per object in the folder ``output`` (created). Each file is written through a temporary file
    and a rename. Existing files are refused unless ``force`` — checked for all files before any
    is written."""
    target = Path(output)
    if target.suffix in (".yaml", ".yml"):
        texts = {target: manifests.to_yaml()}
    else:
        if target.exists() and not target.is_dir():
            raise ModelSaveError(
                f"cannot write manifests into '{target}': it is a file — give a folder or a .yaml file"
            )
        texts = {target / name: text for name, text in manifests.files().items()}
    existing = [str(p) for p in texts if p.exists()]
    if existing and not force:
        raise ModelSaveError(
            f"not overwriting {', '.join(existing)} — pass --force to replace them (force=True in Python), "
            "or choose another output"
        )
    for path, text in texts.items():
        _write_atomic(path, text)
    return list(texts)


def _write_atomic(path: Path, text: str) -> None:
    if path.is_dir():
        raise ModelSaveError(f"cannot write '{path}': it is a folder — give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelSaveError(f"cannot create folder '{path.parent}' for the manifests: {e}") from e
    temp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with open(temp, "x", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp, path)
    except OSError as e:
        temp.unlink(missing_ok=True)
        raise ModelSaveError(f"cannot write '{path}': {e}") from e
    logger.info("wrote %s", path)
