"""A model repository: the models a server serves, their versions, and their configuration.

Layout (as in Triton)::

    REPO/
      <name>/
        config.yaml          optional, parsed into ModelConfig (or Triton's config.pbtxt, see pbtxt.py)
        1/model.onnx         one folder per version; versions are integers
        2/model.onnx

A single ``.onnx`` file is a repository too: one model named after the file's stem, version 1.
Scanning (in the constructor) is cheap and reports a malformed repository at once. Each served
version has one ONNX Runtime session per instance (``instance_count``), so instances never contend
for one session's thread pool; :meth:`ModelRepository.load` activates them (with the intra-op
thread budget), :meth:`ModelRepository.unload` frees them. :meth:`ModelRepository.rescan` and
:meth:`ModelRepository.apply` let a running server (serve/core.py) reload versions.

Integrity: when the repository folder holds a ``manifest.json`` (``deploy`` and ``pack`` write
one), each version's files — its version folder and the model folder's own files (config,
pipeline assets), not other versions — are hashed and compared with it before any session is
created; a changed, missing or unlisted file refuses that version. The manifest entries are part
of what hot reload compares, so a refused version is tried again once the manifest is rewritten.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from modelport.errors import InputShapeError, ModelNotFoundError, RepositoryError
from modelport.ir.specs import TensorSpec
from modelport.pack.checksum import MANIFEST_NAME, Manifest, describe_mismatches, read_manifest
from modelport.runners.base import Feeds
from modelport.runners.onnxruntime import GraphOptimization, OrtCudaRunner, OrtRunner, OrtTensorrtRunner
from modelport.serve.pbtxt import TritonConfig, check_declared, read_triton_config
from modelport.serve.pipeline import Pipeline, PipelineConfig, allowed_keys
from modelport.system import cpu_count

__all__ = [
    "AllVersions",
    "DynamicBatching",
    "LatestVersions",
    "ModelConfig",
    "ModelRepository",
    "RepositoryChanges",
    "ServedModel",
    "SpecificVersions",
    "VersionIntegrity",
    "VersionPolicy",
    "read_config",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
TRITON_CONFIG_FILE = "config.pbtxt"
MODEL_FILE = "model.onnx"
# Config files modelport does not read; finding one means the user expects it to take effect.
_FOREIGN_CONFIGS = {
    "config.yml": f"rename it to {CONFIG_FILE}",
    "config.json": f"write the settings as {CONFIG_FILE}",
}
_VERSION_DIR = re.compile(r"[0-9]+")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LatestVersions(_Strict):
    """Serve the ``num_versions`` highest versions (the default: the latest one)."""

    kind: Literal["latest"] = "latest"
    num_versions: Annotated[int, Field(ge=1)] = 1


class AllVersions(_Strict):
    """Serve every version in the model's folder."""

    kind: Literal["all"] = "all"


class SpecificVersions(_Strict):
    """Serve exactly the listed versions."""

    kind: Literal["specific"] = "specific"
    versions: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


VersionPolicy = Annotated[LatestVersions | AllVersions | SpecificVersions, Field(discriminator="kind")]


class DynamicBatching(_Strict):
    """Server-side batching of concurrent requests (``dynamic_batching:`` in config.yaml).

    A free instance takes the first waiting request, then collects more for at most
    ``max_queue_delay_ms`` until the rows reach ``max_batch_size`` or one of
    ``preferred_batch_sizes`` with nothing else waiting.
    """

    max_queue_delay_ms: Annotated[float, Field(ge=0, le=60_000)] = 1.0
    preferred_batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)


class ModelConfig(_Strict):
    """The settings of one model, read from ``<name>/config.yaml``.

    ``version_policy`` is ``latest`` (or ``{kind: latest, num_versions: N}``), ``all``, or
    ``{kind: specific, versions: [1, 3]}``. ``max_batch_size`` > 0 declares axis 0 of every
    input the batch axis and caps it; ``instance_count`` is how many ONNX Runtime sessions serve
    the model, each running one batch at a time. Thread counts left unset are budgeted so that
    instances × intra-op threads of all served models do not exceed the cores. ``max_queue_size``
    bounds the requests waiting for an instance (a full queue answers 429), ``timeout_ms`` is the
    default per-request timeout (504), ``dynamic_batching`` turns batching on (needs
    ``max_batch_size`` > 1), ``pipeline`` chains pre- and post-processing stages. ``execution``
    picks ONNX Runtime's execution providers: ``cpu``, ``cuda`` (CUDA, CPU for the rest) or
    ``tensorrt`` (TensorRT, then CUDA, then CPU; engines cached under the modelport cache folder),
    on GPU ``device_id``; a GPU provider that cannot start refuses the model instead of falling
    back to the CPU.
    """

    name: str | None = None
    platform: Literal["onnxruntime_onnx"] = "onnxruntime_onnx"
    max_batch_size: Annotated[int, Field(ge=0)] = 0
    instance_count: Annotated[int, Field(ge=1)] = 1
    intra_op_threads: Annotated[int, Field(ge=1)] | None = None
    inter_op_threads: Annotated[int, Field(ge=1)] | None = None
    graph_optimization: GraphOptimization = "all"
    allow_spinning: bool | None = None
    version_policy: VersionPolicy = Field(default_factory=LatestVersions)
    dynamic_batching: DynamicBatching | None = None
    max_queue_size: Annotated[int, Field(ge=1)] = 64
    timeout_ms: Annotated[float, Field(gt=0)] | None = None
    pipeline: PipelineConfig | None = None
    execution: Literal["cpu", "cuda", "tensorrt"] = "cpu"
    device_id: Annotated[int, Field(ge=0)] = 0
    fp16: bool = False

    @pydantic.model_validator(mode="after")
    def _gpu_options_need_a_gpu(self) -> ModelConfig:
        if self.execution == "cpu" and (self.device_id or self.fp16):
            raise ValueError("device_id and fp16 apply to execution: cuda or tensorrt — set execution, or drop them")
        if self.fp16 and self.execution != "tensorrt":
            raise ValueError(
                "fp16 lets TensorRT pick FP16 kernels: it needs execution: tensorrt (for CUDA, deploy an FP16 model)"
            )
        return self

    @pydantic.field_validator("version_policy", mode="before")
    @classmethod
    def _policy_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"kind": value}
        return value

    @pydantic.model_validator(mode="after")
    def _batching_needs_a_batch(self) -> ModelConfig:
        if self.dynamic_batching is not None and self.max_batch_size < 2:
            raise ValueError(
                f"dynamic_batching needs max_batch_size of 2 or more (got {self.max_batch_size}) — "
                "set max_batch_size, or drop dynamic_batching"
            )
        for size in self.dynamic_batching.preferred_batch_sizes if self.dynamic_batching else []:
            if size > self.max_batch_size:
                raise ValueError(f"preferred batch size {size} is larger than max_batch_size {self.max_batch_size}")
        return self


_POLICY_CLASSES: dict[str, type[BaseModel]] = {
    "latest": LatestVersions,
    "all": AllVersions,
    "specific": SpecificVersions,
}


@dataclass(eq=False)
class ServedModel:
    """One version of one model: its configuration and one runner per instance (activated on load)."""

    name: str
    version: int
    path: Path
    config: ModelConfig
    runners: list[OrtRunner] = field(repr=False)
    #: What identifies the files on disk (for hot reload): (path, size, mtime) of model and config, and the
    #: manifest entries that cover the version.
    stamp: tuple[Any, ...] = field(default=(), repr=False)
    #: The inputs and outputs a Triton config.pbtxt declares (checked against the model on load).
    declared: TritonConfig | None = field(default=None, repr=False)
    #: The pre- and post-processing stages, built on load when the config has a ``pipeline``.
    pipeline: Pipeline | None = field(default=None, repr=False)
    #: The repository manifest's entries for this version's files (checked on load), if it has one.
    integrity: VersionIntegrity | None = field(default=None, repr=False)

    @property
    def runner(self) -> OrtRunner:
        """The first instance's runner (all instances run the same model)."""
        return self.runners[0]

    @property
    def ready(self) -> bool:
        return all(runner.is_active for runner in self.runners)

    @property
    def label(self) -> str:
        """``model 'name' version N``, for messages."""
        return f"model '{self.name}' version {self.version}"

    def load(self, *, intra_op_threads: int | None = None) -> None:
        """Activate every instance; unset intra-op thread counts take ``intra_op_threads``.

        If one instance fails, those already activated are deactivated and the error is raised.
        A version whose files do not match the repository manifest is refused before any session
        is created.
        """
        if self.integrity is not None:
            self.integrity.verify(self.label)
        try:
            for runner in self.runners:
                if self.config.intra_op_threads is None:
                    runner.intra_op_threads = intra_op_threads
                runner.activate()
            _check_batch_axis(self)
            self._check_declared()
            if self.config.pipeline is not None:
                runner = self.runner
                self.pipeline = Pipeline.build(
                    self.config.pipeline,
                    runner.inputs,
                    runner.outputs,
                    base_dir=self.path.parent.parent,
                    label=self.label,
                )
        except BaseException:
            self.unload()
            raise
        logger.info(
            "loaded %s from %s (%d instance(s), %s intra-op thread(s) each)",
            self.label,
            self.path,
            len(self.runners),
            self.runner.intra_op_threads or "default",
        )

    def unload(self) -> None:
        for runner in self.runners:
            runner.deactivate()
        self.pipeline = None

    def _check_declared(self) -> None:
        if self.declared is None:
            return
        limit = self.config.max_batch_size
        check_declared(self.declared.inputs, self.runner.inputs, kind="input", max_batch_size=limit, label=self.label)
        check_declared(
            self.declared.outputs, self.runner.outputs, kind="output", max_batch_size=limit, label=self.label
        )

    @property
    def inputs(self) -> list[TensorSpec]:
        """What clients send: the pipeline's inputs, or the model's (once loaded)."""
        return self.pipeline.inputs if self.pipeline is not None else self.runner.inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        """What clients get back: the pipeline's outputs, or the model's (once loaded)."""
        return self.pipeline.outputs if self.pipeline is not None else self.runner.outputs

    def check_batch(self, feeds: Feeds) -> None:
        """Raise :class:`InputShapeError` if a feed's batch axis exceeds ``max_batch_size``."""
        limit = self.config.max_batch_size
        if limit == 0:
            return
        for name, array in feeds.items():
            if array.ndim > 0 and array.shape[0] > limit:
                raise InputShapeError(
                    f"input '{name}' of {self.label} has batch size {array.shape[0]} "
                    f"(shape {list(array.shape)}), but the model's max_batch_size is {limit} — "
                    "split the request"
                )


@dataclass(frozen=True)
class VersionIntegrity:
    """The manifest entries that cover one model version: its version folder and its model folder's
    own files (config, pipeline assets), but not the model's other versions."""

    manifest: Manifest = field(compare=False)
    model: str
    version_dir: str
    #: (path, sha256) of every listed file of this version: what hot reload compares.
    expected: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, manifest: Manifest, model: str, version_dir: str) -> VersionIntegrity:
        expected = manifest.covering(functools.partial(_in_version, model, version_dir))
        return cls(manifest, model, version_dir, tuple(expected.items()))

    def covers(self, relative: str) -> bool:
        """Whether a repository-relative path belongs to this version."""
        return _in_version(self.model, self.version_dir, relative)

    def verify(self, label: str) -> None:
        """Hash the files and raise :class:`RepositoryError` naming each one that does not match."""
        problems = self.manifest.check(self.covers)
        if problems:
            raise RepositoryError(
                f"{label} does not match the repository manifest '{self.manifest.path}': "
                f"{describe_mismatches(problems)} — restore the verified files; if the change is intended, "
                f"rewrite the manifest (`modelport pack {self.manifest.root} --rewrite-manifest`, or re-run "
                f"`modelport deploy`); to serve without integrity checks, delete {self.manifest.path}"
            )
        logger.debug("%s matches %s (%d files)", label, self.manifest.path, len(self.expected))


@dataclass(frozen=True)
class RepositoryChanges:
    """What a rescan found: the versions to serve now, and which of them are new or gone."""

    models: dict[str, dict[int, ServedModel]]
    added: list[ServedModel]
    removed: list[ServedModel]
    errors: dict[str, str]


class ModelRepository:
    """The models under a repository folder, or the one model in an ``.onnx`` file.

    The constructor scans and fails at once on a malformed repository. :meth:`load` and
    :meth:`unload` activate and free every served version; a server that loads models one by one
    and reloads them while serving uses :meth:`rescan` and :meth:`apply` (see serve/core.py).
    ``verify=False`` ignores the folder's manifest (neither read nor checked).
    """

    def __init__(self, source: str | os.PathLike[str], *, verify: bool = True) -> None:
        self.root = Path(source)
        #: Check each version against the folder's manifest.json (when there is one) before it loads.
        self.verify = verify
        self._models: dict[str, dict[int, ServedModel]] = {}
        self._on_disk: dict[str, list[int]] = {}
        if self.root.is_file():
            self._add_file(self.root)
        elif self.root.is_dir():
            self._models = self._scan(self.root, {})
        else:
            raise RepositoryError(
                f"model repository '{self.root}' does not exist — pass a folder laid out as "
                f"<name>/<version>/{MODEL_FILE}, or one .onnx file"
            )

    # scanning ---------------------------------------------------------------------------------
    def _add_file(self, path: Path) -> None:
        if path.suffix != ".onnx":
            raise RepositoryError(
                f"'{path}' is neither a model repository folder nor an .onnx file — pass a folder "
                f"laid out as <name>/<version>/{MODEL_FILE}, or one .onnx file"
            )
        config = ModelConfig()
        self._on_disk[path.stem] = [1]
        self._models[path.stem] = {1: _served(path.stem, 1, path, config, _stamp(path))}

    def _scan(self, root: Path, known: dict[str, dict[int, ServedModel]]) -> dict[str, dict[int, ServedModel]]:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            stray = sorted(p.name for p in root.glob("*.onnx"))
            hint = (
                f"; it holds {', '.join(stray)} — serve one file by passing its path, or move it "
                f"to {root}/<name>/1/{MODEL_FILE}"
                if stray
                else ""
            )
            raise RepositoryError(
                f"model repository '{root}' has no model folders — expected {root}/<name>/<version>/{MODEL_FILE}{hint}"
            )
        return {folder.name: self._scan_model(folder, known.get(folder.name, {})) for folder in folders}

    def _scan_model(self, folder: Path, known: dict[int, ServedModel]) -> dict[int, ServedModel]:
        """The versions of one model folder to serve; unchanged ones keep their ServedModel."""
        name = folder.name
        config, triton = _read_settings(folder)
        if config.name is not None and config.name != name:
            source = TRITON_CONFIG_FILE if triton is not None else CONFIG_FILE
            raise RepositoryError(
                f"{folder / source} names the model '{config.name}', but its folder is "
                f"'{name}' — make them agree or drop 'name'"
            )
        versions = _version_folders(folder)
        self._on_disk[name] = sorted(versions)
        manifest = read_manifest(self.root) if self.verify and (self.root / MANIFEST_NAME).exists() else None
        served = {}
        for version in _apply_policy(config, sorted(versions), folder):
            path = versions[version] / MODEL_FILE
            integrity = VersionIntegrity.of(manifest, name, versions[version].name) if manifest else None
            stamp = (*_stamp(path, folder / CONFIG_FILE, folder / TRITON_CONFIG_FILE), integrity)
            old = known.get(version)
            reuse = old is not None and old.stamp == stamp and old.config == config
            if reuse and old is not None:
                served[version] = old
            else:
                served[version] = _served(name, version, path, config, stamp)
                served[version].declared = triton
                served[version].integrity = integrity
        return served

    def rescan(self, only: str | None = None) -> RepositoryChanges:
        """Read the folder again and say what changed (nothing is loaded or swapped here).

        ``only`` rescans one model (others stay as they are). A model folder that became
        malformed keeps its current versions and is reported in ``errors``.
        """
        if self.root.is_file():
            return RepositoryChanges(models=dict(self._models), added=[], removed=[], errors={})
        models = dict(self._models)
        errors: dict[str, str] = {}
        names = (
            [only]
            if only is not None
            else sorted(
                {p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")} | set(models)
            )
        )
        for name in names:
            folder = self.root / name
            if not folder.is_dir():
                if only is not None:
                    raise ModelNotFoundError(f"model '{name}' has no folder in repository '{self.root}'")
                models.pop(name, None)
                continue
            try:
                models[name] = self._scan_model(folder, self._models.get(name, {}))
            except RepositoryError as e:
                errors[name] = str(e)
        old = {id(m): m for versions in self._models.values() for m in versions.values()}
        new = {id(m): m for versions in models.values() for m in versions.values()}
        added = [m for key, m in new.items() if key not in old]
        removed = [m for key, m in old.items() if key not in new]
        return RepositoryChanges(models=models, added=added, removed=removed, errors=errors)

    def apply(self, models: dict[str, dict[int, ServedModel]]) -> None:
        """Serve ``models`` from now on (lookups see them at once)."""
        self._models = {name: dict(versions) for name, versions in models.items() if versions}

    def remove(self, name: str) -> list[ServedModel]:
        """Stop serving model ``name`` (its folder stays); returns its versions, still loaded."""
        return list(self._models.pop(name, {}).values())

    # lookup -----------------------------------------------------------------------------------
    @property
    def models(self) -> list[str]:
        """Names of the models served, sorted."""
        return sorted(self._models)

    @property
    def on_disk(self) -> dict[str, list[int]]:
        """Every model and version found on disk at the last scan, served or not."""
        return {name: list(versions) for name, versions in sorted(self._on_disk.items())}

    def versions(self, name: str) -> list[int]:
        """The versions of model ``name`` that are served (ascending)."""
        return sorted(self._versions_of(name))

    def get(self, name: str, version: int | str | None = None) -> ServedModel:
        """One served model version; ``None`` picks the highest served version.

        Raises :class:`ModelNotFoundError` (listing what is available) for an unknown model or
        version.
        """
        versions = self._versions_of(name)
        if version is None:
            return versions[max(versions)]
        number = _version_number(version)
        if number is None or number not in versions:
            served = ", ".join(str(v) for v in sorted(versions))
            skipped = [v for v in self._on_disk.get(name, []) if v not in versions]
            note = f" ({', '.join(str(v) for v in skipped)} on disk but excluded by version_policy)" if skipped else ""
            raise ModelNotFoundError(
                f"model '{name}' has no version {str(version)!r} being served — served versions: {served}{note}"
            )
        return versions[number]

    def _versions_of(self, name: str) -> dict[int, ServedModel]:
        versions = self._models.get(name)
        if versions is None:
            known = ", ".join(repr(n) for n in self.models) or "no models"
            close = difflib.get_close_matches(name, self.models, n=1)
            hint = f" — did you mean '{close[0]}'?" if close else ""
            if name in self._on_disk:
                raise ModelNotFoundError(
                    f"model '{name}' is in repository '{self.root}' but not loaded — load it with "
                    f"POST /v2/repository/models/{name}/load; the server serves {known}"
                )
            raise ModelNotFoundError(f"model '{name}' is not in repository '{self.root}'; it serves {known}{hint}")
        return versions

    def __iter__(self) -> Iterator[ServedModel]:
        for name in self.models:
            versions = self._models[name]
            for version in sorted(versions):
                yield versions[version]

    # lifecycle --------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """True when every served model version is loaded."""
        return all(model.ready for model in self)

    def thread_budget(self, extra_instances: int = 0) -> int:
        """Intra-op threads per instance so that all instances together use the cores once."""
        instances = sum(len(model.runners) for model in self) + extra_instances
        return max(1, cpu_count() // max(1, instances))

    def load(self) -> None:
        """Activate every served model version (all instances).

        If one fails, those already activated are freed and the error is raised.
        """
        threads = self.thread_budget()
        try:
            for model in self:
                model.load(intra_op_threads=threads)
        except BaseException:
            self.unload()
            raise

    def unload(self) -> None:
        """Free every session (a later :meth:`load` creates them again)."""
        for model in self:
            model.unload()

    def __enter__(self) -> ModelRepository:
        self.load()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unload()

    def __repr__(self) -> str:
        return f"ModelRepository('{self.root}', models={self.models})"


def read_config(folder: Path) -> ModelConfig:
    """Parse ``folder/config.yaml`` or Triton's ``folder/config.pbtxt`` (defaults when neither is there).

    Raises :class:`RepositoryError` for a malformed file, unknown or unsupported settings, or both
    files at once.
    """
    return _read_settings(folder)[0]


def _read_settings(folder: Path) -> tuple[ModelConfig, TritonConfig | None]:
    for foreign, fix in _FOREIGN_CONFIGS.items():
        if (folder / foreign).exists():
            raise RepositoryError(f"'{folder / foreign}' is not read by modelport — {fix}")
    path, triton_path = folder / CONFIG_FILE, folder / TRITON_CONFIG_FILE
    if triton_path.exists():
        if path.exists():
            raise RepositoryError(
                f"model folder '{folder}' has both {CONFIG_FILE} and {TRITON_CONFIG_FILE} — keep one of them"
            )
        triton = read_triton_config(triton_path)
        return _validated(triton.settings, triton_path), triton
    if not path.exists():
        return ModelConfig(), None
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise RepositoryError(f"'{path}' is not valid YAML: {e}") from e
    if raw is None:
        return ModelConfig(), None
    if not isinstance(raw, dict):
        raise RepositoryError(f"'{path}' must be a mapping of settings (key: value), got {type(raw).__name__}")
    return _validated(raw, path), None


def _validated(raw: dict[str, Any], path: Path) -> ModelConfig:
    try:
        return ModelConfig.model_validate(raw)
    except pydantic.ValidationError as e:
        problems = "; ".join(_describe(error) for error in e.errors())
        raise RepositoryError(f"'{path}' is invalid: {problems}") from e


def _describe(error: Any) -> str:
    """One pydantic error as ``key: problem``, naming the allowed keys for an unknown one."""
    loc = [str(part) for part in error["loc"]]
    if error["type"] != "extra_forbidden":
        return f"{'.'.join(loc)}: {error['msg']} (got {error['input']!r})"
    fields = _fields_at(loc[:-1])
    close = difflib.get_close_matches(loc[-1], fields, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown key '{'.'.join(loc)}' — {hint}allowed: {', '.join(fields)}"


def _fields_at(parents: list[str]) -> list[str]:
    if parents and parents[0] == "pipeline":
        return allowed_keys(parents[1:])
    model: type[BaseModel] = ModelConfig
    if parents and parents[0] == "version_policy":
        # pydantic puts the discriminator value after the field: version_policy.<kind>.<key>
        model = _POLICY_CLASSES.get(parents[1] if len(parents) > 1 else "", LatestVersions)
    return list(model.model_fields)


def _version_folders(folder: Path) -> dict[int, Path]:
    versions: dict[int, Path] = {}
    for entry in sorted(folder.iterdir()):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        if not _VERSION_DIR.fullmatch(entry.name):
            raise RepositoryError(
                f"'{entry}' is not a version folder — versions of model '{folder.name}' are "
                f"integer folder names ({folder}/1/{MODEL_FILE}); move other folders elsewhere"
            )
        number = int(entry.name)
        if number in versions:
            raise RepositoryError(f"'{versions[number]}' and '{entry}' are both version {number} — keep one")
        if not (entry / MODEL_FILE).is_file():
            held = sorted(p.name for p in entry.iterdir())
            raise RepositoryError(
                f"version folder '{entry}' has no {MODEL_FILE} (it holds "
                f"{', '.join(held) or 'nothing'}) — put the model there as {MODEL_FILE}"
            )
        versions[number] = entry
    if not versions:
        raise RepositoryError(
            f"model folder '{folder}' has no version folders — put the model in {folder}/1/{MODEL_FILE}"
        )
    return versions


def _apply_policy(config: ModelConfig, versions: list[int], folder: Path) -> list[int]:
    policy = config.version_policy
    if isinstance(policy, AllVersions):
        return versions
    if isinstance(policy, LatestVersions):
        return versions[-policy.num_versions :]
    missing = [v for v in policy.versions if v not in versions]
    if missing:
        raise RepositoryError(
            f"{folder / CONFIG_FILE} asks for version {', '.join(str(v) for v in missing)} of "
            f"model '{folder.name}', but its folder holds {', '.join(str(v) for v in versions)}"
        )
    return sorted(set(policy.versions))


def _version_number(version: int | str) -> int | None:
    if isinstance(version, int):
        return version
    return int(version) if _VERSION_DIR.fullmatch(version) else None


def _check_batch_axis(model: ServedModel) -> None:
    """With max_batch_size > 0, axis 0 of every input must be dynamic (the batch axis)."""
    if model.config.max_batch_size == 0:
        return
    for spec in model.runner.inputs:
        if spec.shape is not None and (not spec.shape or isinstance(spec.shape[0], int)):
            raise RepositoryError(
                f"{model.label} sets max_batch_size {model.config.max_batch_size}, but input "
                f"'{spec.name}' has shape {spec.shape_str()}, whose first axis is not a dynamic "
                "batch axis — export the model with a dynamic axis 0, or set max_batch_size: 0"
            )


def _runner(config: ModelConfig, path: Path, **options: Any) -> OrtRunner:
    """The runner of one instance, on the execution providers the config asks for."""
    if config.execution == "cuda":
        return OrtCudaRunner(path, device_id=config.device_id, **options)
    if config.execution == "tensorrt":
        from modelport.deploy.cache import default_cache_dir

        cache = default_cache_dir() / "tensorrt"
        return OrtTensorrtRunner(path, device_id=config.device_id, fp16=config.fp16, engine_cache=cache, **options)
    return OrtRunner(path, **options)


def _served(name: str, version: int, path: Path, config: ModelConfig, stamp: tuple[Any, ...]) -> ServedModel:
    session_config = {}
    if config.allow_spinning is not None:
        session_config["session.intra_op.allow_spinning"] = "1" if config.allow_spinning else "0"
    runners = [
        _runner(
            config,
            path,
            intra_op_threads=config.intra_op_threads,
            inter_op_threads=config.inter_op_threads,
            graph_optimization=config.graph_optimization,
            session_config=session_config,
            name=name,
        )
        for _ in range(config.instance_count)
    ]
    return ServedModel(name=name, version=version, path=path, config=config, runners=runners, stamp=stamp)


def _in_version(model: str, version_dir: str, relative: str) -> bool:
    parts = relative.split("/")
    if len(parts) < 2 or parts[0] != model:
        return False
    return len(parts) == 2 or not _VERSION_DIR.fullmatch(parts[1]) or parts[1] == version_dir


def _stamp(*paths: Path) -> tuple[Any, ...]:
    """Size and modification time of each path (None when absent): what hot reload compares."""
    stamp: list[Any] = []
    for path in paths:
        try:
            info = path.stat()
        except FileNotFoundError:
            stamp.append((str(path), None))
        else:
            stamp.append((str(path), info.st_size, info.st_mtime_ns))
    return tuple(stamp)
