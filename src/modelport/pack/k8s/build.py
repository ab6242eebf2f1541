"""The entry point: from a repository and options to validated :class:`Manifests`, with notes
for the user about what they still have to do (push the image, create the claim, pin threads)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from modelport.errors import RepositoryError
from modelport.pack.k8s.constants import _MIB, DEFAULT_GPU_IMAGE, DEFAULT_IMAGE, STORAGE_URI_PLACEHOLDER
from modelport.pack.k8s.objects import _deployment, _inference_service, _service, _serving_runtime
from modelport.pack.k8s.options import K8sOptions, default_name
from modelport.pack.k8s.resources import Analysis, Resources, plan_resources, read_analysis
from modelport.pack.k8s.validation import validate
from modelport.pack.k8s.write import Manifests

logger = logging.getLogger(__name__)


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
    notes = _notes(name, image, options, resources) + (_cpu_models(root) if options.gpu else [])
    manifests = Manifests(objects, resources, notes, check, str(root))
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
    return notes


def _cpu_models(root: Path) -> list[str]:
    """A note naming the models that would leave the reserved GPU unused (``execution: cpu``)."""
    from modelport.serve.repository import ModelRepository

    repository = ModelRepository(root, verify=False)
    on_cpu = [name for name in repository.models if repository.get(name).config.execution == "cpu"]
    if not on_cpu:
        return []
    return [
        f"{', '.join(on_cpu)} run(s) on the CPU (execution: cpu): the reserved GPU is unused by them — set "
        "execution: cuda (or tensorrt) in their config.yaml, or deploy with target: gpu"
    ]
