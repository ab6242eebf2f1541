"""Model cards: what a bundle serves, what it is for, and what was measured — ``MODEL_CARD.md``.

The layout follows the MediaPipe model cards (model details, specifications, intended uses,
limitations, performance). Everything a card states comes from somewhere checkable: inputs and
outputs are read from the model files, the serving settings from their configs, accuracy and
latency are copied from the ``report.json`` that ``modelport deploy`` wrote. What nobody told
modelport (intended use, limitations, license) is written as "Not stated", with the option that
states it — a card never invents a claim.

Accuracy here is what ``deploy`` measures: how closely the shipped model reproduces the model it
was given (on the calibration inputs), not a task metric such as top-1; the card says so.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from modelport import __version__
from modelport.errors import ConfigError

if TYPE_CHECKING:
    from modelport.ir.specs import TensorSpec
    from modelport.serve.repository import ModelRepository

__all__ = ["NOT_STATED", "CardInfo", "CardModel", "DeployReport", "describe_models", "read_report", "render_card"]

logger = logging.getLogger(__name__)

NOT_STATED = "Not stated"


@dataclass(frozen=True)
class CardInfo:
    """What only the model's owner can say; ``None`` is written as "Not stated"."""

    intended_use: str | None = None
    out_of_scope: str | None = None
    limitations: str | None = None
    license: str | None = None


@dataclass(frozen=True)
class CardModel:
    """One served model version as the card describes it."""

    name: str
    version: int
    file: str
    bytes: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    producer: str
    opsets: dict[str, int]
    description: str
    max_batch_size: int
    instance_count: int


# the deploy report (the fields the card copies) -------------------------------------------------


class _Read(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ReportDiff(_Read):
    name: str
    passed: bool
    reason: str = ""
    max_abs: float | None = None
    cosine: float | None = None
    sqnr_db: float | None = None


class ReportRun(_Read):
    batch: int
    fill: str
    passed: bool
    outputs: list[ReportDiff]


class ReportCompare(_Read):
    passed: bool
    runs: list[ReportRun]


class ReportBench(_Read):
    name: str
    batch: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    throughput: float
    cv: float
    engine: dict[str, Any] = Field(default_factory=dict)


class ReportQuantize(_Read):
    worst_sqnr_db: float | None = None
    worst_cosine: float | None = None
    speedup: float | None = None


class DeployReport(_Read):
    """The parts of ``deploy``'s ``report.json`` a model card shows."""

    name: str
    source: str
    chosen: str
    choice_reason: str
    calibration: str = ""
    compare_floor: str
    compare_passed: bool
    compare: ReportCompare
    bench: list[ReportBench]
    quantize: ReportQuantize | None = None
    warnings: list[str] = Field(default_factory=list)


def read_report(path: str | os.PathLike[str]) -> DeployReport:
    """Parse a deploy ``report.json``; :class:`ConfigError` naming the bad field if it is not one."""
    source = Path(path)
    fix = "pass the report.json that `modelport deploy` wrote (deploy-out/report.json)"
    try:
        raw = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"deploy report '{source}' does not exist — {fix}") from e
    except (OSError, ValueError) as e:
        raise ConfigError(f"deploy report '{source}' is not readable JSON ({e}) — {fix}") from e
    try:
        return DeployReport.model_validate(raw)
    except pydantic.ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'top level'}: {err['msg']}" for err in e.errors()
        )
        raise ConfigError(f"'{source}' is not a modelport deploy report: {problems} — {fix}") from e


# the models ------------------------------------------------------------------------------------


def describe_models(repository: ModelRepository) -> list[CardModel]:
    """Every served version of a repository, read from its model file (weights stay on disk)."""
    from modelport.ir.serde import load
    from modelport.ir.specs import specs_of

    described = []
    for served in repository:
        model = load(served.path)
        described.append(
            CardModel(
                name=served.name,
                version=served.version,
                file=served.path.relative_to(repository.root).as_posix(),
                bytes=served.path.stat().st_size,
                inputs=specs_of(model.graph.inputs),
                outputs=specs_of(model.graph.outputs),
                producer=" ".join(p for p in (model.producer_name, model.producer_version) if p) or "unknown",
                opsets={domain or "ai.onnx": version for domain, version in sorted(model.opset_imports.items())},
                description=(model.doc_string or model.graph.doc_string or "").strip(),
                max_batch_size=served.config.max_batch_size,
                instance_count=served.config.instance_count,
            )
        )
    return described


# rendering -------------------------------------------------------------------------------------


def render_card(
    models: Sequence[CardModel],
    *,
    info: CardInfo | None = None,
    report: DeployReport | None = None,
    packed_at: datetime,
) -> str:
    """The Markdown text of ``MODEL_CARD.md``."""
    info = info or CardInfo()
    if report is not None and report.name not in {m.name for m in models}:
        served = ", ".join(sorted({f"'{m.name}'" for m in models}))
        raise ConfigError(
            f"the deploy report is about model '{report.name}', but the repository serves {served} — "
            "pass the report.json written by the deploy that produced this repository"
        )
    names = ", ".join(sorted({m.name for m in models}))
    parts = [
        f"# Model card: {names}",
        "",
        f"Packed by modelport {__version__} on {packed_at:%Y-%m-%d %H:%M} UTC. Every file of this bundle is listed "
        "with its sha256 in `manifest.json`; `modelport serve` refuses a model whose files do not match.",
        "",
        *_details(models, info, report),
        *_specifications(models),
        *_uses(info),
        *_performance(report),
    ]
    return "\n".join(parts).rstrip() + "\n"


def _stated(value: str | None, option: str) -> str:
    return value.strip() if value and value.strip() else f"_{NOT_STATED}_ — state it with `modelport pack {option}`."


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows)
    return [*lines, ""]


def _details(models: Sequence[CardModel], info: CardInfo, report: DeployReport | None) -> list[str]:
    versions: dict[str, list[str]] = {}
    for model in models:
        versions.setdefault(model.name, []).append(str(model.version))
    rows = [
        ["Models", "; ".join(f"{name} ({_versions(v)})" for name, v in sorted(versions.items()))],
        ["Format", "ONNX, served by ONNX Runtime (`modelport serve`, KServe v2 over HTTP and gRPC)"],
        ["License", _stated(info.license, "--license TEXT")],
    ]
    if report is not None:
        rows.append(["Source", f"{report.source} (model '{report.name}', optimized by `modelport deploy`)"])
        rows.append(["Shipped variant", f"{report.chosen} — {report.choice_reason}"])
    return ["## Model details", "", *_table(["", ""], rows)]


def _versions(numbers: list[str]) -> str:
    return f"version {numbers[0]}" if len(numbers) == 1 else f"versions {', '.join(numbers)}"


def _specifications(models: Sequence[CardModel]) -> list[str]:
    parts = ["## Model specifications", ""]
    for model in models:
        batch = f"max_batch_size {model.max_batch_size}" if model.max_batch_size else "no server-side batch limit"
        opsets = ", ".join(f"{domain} {version}" for domain, version in model.opsets.items())
        parts += [
            f"### {model.name}, version {model.version}",
            "",
            f"File `{model.file}` ({model.bytes:,} bytes); producer: {model.producer}; opsets: {opsets}. "
            f"Serving: {batch}, {model.instance_count} instance(s).",
            "",
        ]
        if model.description:
            parts += [model.description, ""]
        parts += _table(
            ["", "name", "dtype", "shape"],
            [["input", s.name, str(s.dtype), s.shape_str()] for s in model.inputs]
            + [["output", s.name, str(s.dtype), s.shape_str()] for s in model.outputs],
        )
    return parts


def _uses(info: CardInfo) -> list[str]:
    return [
        "## Intended uses",
        "",
        f"**Intended use.** {_stated(info.intended_use, '--intended-use TEXT')}",
        "",
        f"**Out-of-scope uses.** {_stated(info.out_of_scope, '--out-of-scope TEXT')}",
        "",
        "## Limitations",
        "",
        _stated(info.limitations, "--limitations TEXT"),
        "",
    ]


def _number(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _performance(report: DeployReport | None) -> list[str]:
    if report is None:
        return [
            "## Performance",
            "",
            f"_{NOT_STATED}_ — not measured for this bundle. Pass `--report deploy-out/report.json` to "
            "`modelport pack` to copy the accuracy and latency that `modelport deploy` measured.",
            "",
        ]
    verdict = "passed" if report.compare_passed else "**FAILED**"
    parts = [
        "## Performance (measured by `modelport deploy`)",
        "",
        "### Accuracy: agreement with the source model",
        "",
        f"The shipped model ({report.chosen}) against the model given to deploy ({report.source}), "
        f"on {report.calibration or 'the calibration inputs'}: criterion {report.compare_floor} — {verdict}. "
        "This is fidelity to the source model, not a task accuracy (top-1, mAP): measure that on your own "
        "labelled data.",
        "",
        *_table(
            ["inputs", "batch", "output", "max abs error", "cosine", "SQNR dB", "result"],
            [
                [
                    run.fill,
                    str(run.batch),
                    d.name,
                    _number(d.max_abs, ".3g"),
                    _number(d.cosine, ".6f"),
                    _number(d.sqnr_db, ".1f"),
                    "pass" if d.passed else f"FAIL: {d.reason}",
                ]
                for run in report.compare.runs
                for d in run.outputs
            ],
        ),
    ]
    quantized = report.quantize
    if quantized is not None and quantized.worst_sqnr_db is not None:
        parts += [
            f"INT8 candidate: worst output SQNR {_number(quantized.worst_sqnr_db, '.1f')} dB, worst cosine "
            f"{_number(quantized.worst_cosine, '.5f')}, speed vs FP32 {_number(quantized.speedup, '.2f')}x.",
            "",
        ]
    return parts + _latency(report)


def _latency(report: DeployReport) -> list[str]:
    engine = report.bench[0].engine if report.bench else {}
    providers = engine.get("providers")
    where = ", ".join(providers) if isinstance(providers, list) else "ONNX Runtime"
    threads = engine.get("intra_op_threads")
    parts = [
        "### Latency",
        "",
        f"{where}{f', intra-op threads: {threads}' if threads else ''}, on the machine that ran deploy: "
        "repeat with `modelport bench` on the serving hardware before relying on these numbers.",
        "",
        *_table(
            ["batch", "model", "median ms", "p90 ms", "p99 ms", "items/s", "CV"],
            [
                [
                    str(b.batch),
                    b.name,
                    f"{b.median_ms:.2f}",
                    f"{b.p90_ms:.2f}",
                    f"{b.p99_ms:.2f}",
                    f"{b.throughput:.1f}",
                    f"{b.cv:.1%}",
                ]
                for b in report.bench
            ],
        ),
    ]
    if report.warnings:
        parts += ["### Warnings from deploy", "", *[f"- {w}" for w in report.warnings], ""]
    return parts
