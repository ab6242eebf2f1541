"""What to generate: :class:`K8sOptions`, checked when it is made, and the name rules.

Options are checked on their own (before the repository is read), so a bad flag fails with a
message about that flag and not about a generated object.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from modelport.errors import ConfigError
from modelport.pack.k8s.constants import _DNS_1035, _STORAGE_SCHEMES, _STORAGE_URI, KSERVE_MODELS_DIR

#: KServe/Knative append suffixes such as ``-predictor-00001-deployment-<hash>`` to the name.
MAX_NAME_LENGTH = 40
_DNS_1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


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
