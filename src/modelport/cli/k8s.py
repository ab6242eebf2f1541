"""modelport k8s REPO: Kubernetes (Deployment + Service) or KServe manifests that serve a repository.

A thin layer over :func:`modelport.pack.k8s.build_manifests`: parses the options, validates the
objects when kubernetes-validate is installed (and says loudly when it is not), writes them
(refusing to overwrite without ``--force``) and prints where each resource request came from.
"""

from __future__ import annotations

import argparse
import sys

from modelport.cli._common import add_json, console, emit_json
from modelport.errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "k8s",
        help="Kubernetes manifests for a repository: Deployment + Service, or a KServe InferenceService",
    )
    p.add_argument("repo", help="a model repository folder REPO/<name>/<version>/model.onnx")
    p.add_argument(
        "-o",
        "--output",
        default="k8s",
        help="a folder (one file per object), a .yaml file (all objects in one), or - for stdout (default %(default)s)",
    )
    p.add_argument("--force", action="store_true", help="overwrite existing manifest files")
    p.add_argument("--name", help="name of the objects (default: from the repository folder)")
    p.add_argument("--image", help="server image (default: the local tag docker/README.md builds)")
    p.add_argument("--replicas", type=int, default=1, help="pods serving the repository (default %(default)s)")
    p.add_argument("--gpu", action="store_true", help="request one NVIDIA GPU per pod (and use the -gpu image)")
    p.add_argument(
        "--analysis",
        metavar="FILE",
        help="`modelport analyze --json-file` output: size requests from its best configuration",
    )
    server = p.add_argument_group("server")
    server.add_argument(
        "--drain-delay",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="after SIGTERM, answer not-ready this long before closing (default %(default)s)",
    )
    server.add_argument(
        "--startup-timeout",
        type=float,
        metavar="SECONDS",
        help="how long the startup probe waits for models to load (default: 60 s + 30 s per GiB loaded)",
    )
    volume = p.add_argument_group("repository volume (Deployment)").add_mutually_exclusive_group()
    volume.add_argument("--pvc", metavar="CLAIM", help="mount this PersistentVolumeClaim (default: <name>-models)")
    volume.add_argument(
        "--model-image",
        metavar="IMAGE",
        help="copy /models of this image into an emptyDir with an init container instead of a PVC",
    )
    kserve = p.add_argument_group("KServe")
    kserve.add_argument("--kserve", action="store_true", help="a ServingRuntime + InferenceService instead")
    kserve.add_argument(
        "--storage-uri",
        metavar="URI",
        help="where KServe fetches the repository folder (s3://, gs://, pvc://CLAIM/path ...)",
    )
    add_json(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from modelport.pack.k8s import K8sOptions, build_manifests, validation_available, write_manifests

    to_stdout = args.output == "-"
    if to_stdout and args.json:
        raise ConfigError("--json and -o - would both write to stdout — write the manifests to a folder or a file")
    options = K8sOptions(
        name=args.name,
        image=args.image,
        replicas=args.replicas,
        kserve=args.kserve,
        gpu=args.gpu,
        storage_uri=args.storage_uri,
        pvc=args.pvc,
        model_image=args.model_image,
        drain_delay=args.drain_delay,
        startup_timeout=args.startup_timeout,
    )
    check = validation_available()
    manifests = build_manifests(args.repo, options, analysis=args.analysis, check=check)
    err = console(stderr=True)
    if not check:
        err.print(
            "[yellow]warning:[/] the manifests were NOT validated: kubernetes-validate is not installed "
            "(pip install kubernetes-validate)"
        )
    if to_stdout:
        sys.stdout.write(manifests.to_yaml())
        paths = []
    else:
        paths = write_manifests(manifests, args.output, force=args.force)
    resources = manifests.resources
    if args.json:
        emit_json(
            {
                "files": [str(p) for p in paths],
                "kinds": [o["kind"] for o in manifests.objects],
                "validated": manifests.validated,
                "resources": {
                    "cpu": resources.cpu,
                    "memory_mib": resources.memory_mib,
                    "gpu": resources.gpu,
                    "cpu_source": resources.cpu_source,
                    "memory_source": resources.memory_source,
                },
                "notes": manifests.notes,
            }
        )
        return 0
    out = err if to_stdout else console()
    for path in paths:
        out.print(f"wrote {path}")
    out.print(f"cpu: {resources.cpu_source}")
    out.print(f"memory: {resources.memory_source}")
    for note in manifests.notes:
        out.print(f"[yellow]note:[/] {note}")
    return 0
