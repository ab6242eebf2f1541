"""JSON schemas for the KServe objects we emit (ServingRuntime, InferenceService).

KServe's CRDs are not in kubernetes-validate, so these are written here for exactly the fields we
emit (unknown fields are errors), from KServe's Go types; the Kubernetes types they embed are
references into kubernetes-validate's strict definitions, resolved by
:mod:`modelport.pack.k8s.validation`.
"""

from __future__ import annotations

from typing import Any

from modelport.pack.k8s.constants import _KSERVE_GROUP, _STORAGE_URI

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
