"""Validation of the generated objects before anything is written: strict offline schemas
(kubernetes-validate for Kubernetes kinds, :mod:`modelport.pack.k8s.kserve_schema` for KServe's)
plus the checks schemas cannot express (names, selectors, ports, quantities, references).

kubernetes-validate and jsonschema are imported when validation runs, so they stay optional.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.resources
import json
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from types import ModuleType
from typing import Any

from modelport.errors import ConfigError
from modelport.pack.k8s.constants import _DNS_1035, KUBERNETES_VERSION
from modelport.pack.k8s.kserve_schema import _KSERVE_SCHEMAS

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
