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

Layout, one concept per module: :mod:`~modelport.pack.k8s.constants` (ports, paths and names shared
with the server and the cluster), :mod:`~modelport.pack.k8s.options` (:class:`K8sOptions`),
:mod:`~modelport.pack.k8s.resources` (analysis results and resource planning),
:mod:`~modelport.pack.k8s.objects` (the object builders), :mod:`~modelport.pack.k8s.kserve_schema`
and :mod:`~modelport.pack.k8s.validation` (checking them), :mod:`~modelport.pack.k8s.write`
(:class:`Manifests` as YAML, written atomically) and :mod:`~modelport.pack.k8s.build`
(:func:`build_manifests`, which ties them together).
"""

# The names imported "as" themselves are not in __all__; they stay importable from here, as before the split.
from modelport.pack.k8s.build import build_manifests
from modelport.pack.k8s.constants import (
    DEFAULT_GPU_IMAGE,
    DEFAULT_IMAGE,
    GRPC_PORT,
    HTTP_PORT,
    KSERVE_MODELS_DIR,
    KUBERNETES_VERSION,
    LIVE_PATH,
    METRICS_PATH,
    MODELS_DIR,
    READY_PATH,
    RUN_AS_USER,
    SERVER_SHUTDOWN_TIMEOUT_S,
    STORAGE_URI_PLACEHOLDER,
)
from modelport.pack.k8s.kserve_schema import INFERENCE_SERVICE_SCHEMA, SERVING_RUNTIME_SCHEMA
from modelport.pack.k8s.objects import GRACE_MARGIN_S as GRACE_MARGIN_S
from modelport.pack.k8s.objects import STARTUP_BASE_S as STARTUP_BASE_S
from modelport.pack.k8s.objects import STARTUP_PERIOD_S as STARTUP_PERIOD_S
from modelport.pack.k8s.objects import STARTUP_S_PER_GIB as STARTUP_S_PER_GIB
from modelport.pack.k8s.objects import grace_period as grace_period
from modelport.pack.k8s.objects import server_args
from modelport.pack.k8s.options import MAX_NAME_LENGTH as MAX_NAME_LENGTH
from modelport.pack.k8s.options import K8sOptions
from modelport.pack.k8s.options import check_name as check_name
from modelport.pack.k8s.options import default_name as default_name
from modelport.pack.k8s.resources import (
    MEMORY_HEADROOM,
    Analysis,
    ModelUsage,
    Resources,
    plan_resources,
    read_analysis,
)
from modelport.pack.k8s.resources import RUNTIME_BASELINE_MIB as RUNTIME_BASELINE_MIB
from modelport.pack.k8s.resources import repository_usage as repository_usage
from modelport.pack.k8s.validation import validate, validation_available
from modelport.pack.k8s.write import Manifests, write_manifests

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
