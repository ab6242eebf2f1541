"""The names, ports and paths the manifests share with ``modelport serve``, docker/Dockerfile and
the cluster, and the Kubernetes syntax more than one module checks.

Kept in one place so that the options, the objects and the validation agree on them, and so that a
change to the server (a port, a route, the shutdown timeout) is one edit here.
"""

from __future__ import annotations

import re

from modelport import __version__

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

_MIB = 1024 * 1024
_GIB = 1024 * _MIB
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_STORAGE_SCHEMES = ("gs", "s3", "pvc", "http", "https", "hdfs", "webhdfs", "oci", "hf", "azure")
_STORAGE_URI = re.compile(rf"({'|'.join(_STORAGE_SCHEMES)})://[^\s]+")
_KSERVE_GROUP = "serving.kserve.io"
