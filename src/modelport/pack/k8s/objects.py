"""The Kubernetes and KServe objects, as plain dicts: Deployment, Service, ServingRuntime and
InferenceService, with their probes, security contexts, labels and the repository volume.

Builders only: they take checked options and planned resources and do not validate (see
:mod:`modelport.pack.k8s.validation`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from modelport import __version__
from modelport.pack.k8s.constants import (
    _GIB,
    _KSERVE_GROUP,
    _MIB,
    GRPC_PORT,
    HTTP_PORT,
    KSERVE_MODELS_DIR,
    LIVE_PATH,
    METRICS_PATH,
    MODELS_DIR,
    READY_PATH,
    RUN_AS_USER,
    SERVER_SHUTDOWN_TIMEOUT_S,
    STORAGE_URI_PLACEHOLDER,
)
from modelport.pack.k8s.options import K8sOptions
from modelport.pack.k8s.resources import Resources

GRACE_MARGIN_S = 5
STARTUP_BASE_S = 60.0
STARTUP_S_PER_GIB = 30.0
STARTUP_PERIOD_S = 5


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
