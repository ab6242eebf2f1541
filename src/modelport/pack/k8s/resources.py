"""CPU and memory requests: reading ``modelport analyze`` results and planning from them or from
the repository's configs.

The rules (and the measurements behind the memory estimate) are in the package docstring; every
number carries a sentence saying where it came from, which the objects put in annotations.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pydantic

from modelport.errors import ConfigError
from modelport.pack.k8s.constants import _MIB

if TYPE_CHECKING:
    from modelport.serve.repository import ModelConfig, ServedModel

MEMORY_HEADROOM = 1.25
#: Peak resident memory of ``modelport serve`` with a tiny model loaded (measured, MiB).
RUNTIME_BASELINE_MIB = 130

_ANNOTATION = "modelport/"


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
    """The requests of the server container for ``repo`` (the rules: see the package docstring)."""
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
