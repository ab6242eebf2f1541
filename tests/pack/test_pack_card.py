"""MODEL_CARD.md: the models' signatures, stated and unstated fields, and numbers copied from a deploy report."""

from __future__ import annotations

import importlib.metadata
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from modelport.errors import ConfigError
from modelport.pack.bundle import pinned_requirements
from modelport.pack.card import NOT_STATED, CardInfo, describe_models, read_report, render_card
from modelport.serve.repository import ModelRepository
from serve.serve_models import mixed_model, text_model, write_version

PACKED_AT = datetime(2025, 3, 4, 5, 6, tzinfo=timezone.utc)


def fake_report(name: str = "mixed") -> dict[str, Any]:
    """The fields of deploy's report.json the card reads (plus some it ignores), as deploy writes them."""
    diff = {"passed": True, "reason": "ok", "max_abs": 2.5e-07, "cosine": 0.9999876, "sqnr_db": 131.25, "shape": [1]}
    bench = {
        "batch": 1,
        "median_ms": 0.4321,
        "p90_ms": 0.5,
        "p99_ms": 0.75,
        "throughput": 2314.2,
        "cv": 0.031,
        "engine": {"backend": "onnxruntime", "providers": ["CPUExecutionProvider"], "intra_op_threads": 2},
        "iterations": 100,
    }
    return {
        "name": name,
        "source": "models/mixed.onnx",
        "outdir": "deploy-out",
        "calibration": "16 samples from calib.npz",
        "chosen": "fp32",
        "choice_reason": "INT8 was slower than FP32 (0.80x); shipping FP32",
        "compare_floor": "atol=0.0001, rtol=0.0001",
        "compare_passed": True,
        "compare": {
            "passed": True,
            "runs": [
                {"batch": 1, "fill": "calibration samples", "passed": True, "outputs": [{"name": "y", **diff}]},
                {
                    "batch": 8,
                    "fill": "calibration samples x8",
                    "passed": False,
                    "outputs": [{"name": "y", **diff, "passed": False, "reason": "max abs 0.3 > 1e-4"}],
                },
            ],
        },
        "bench": [
            {"name": "fp32 (input)", **bench},
            {"name": "final (fp32)", **bench, "median_ms": 0.3001, "batch": 8},
        ],
        "quantize": {"worst_sqnr_db": 31.46, "worst_cosine": 0.99961, "speedup": 0.8, "mode": "int8-static"},
        "warnings": ["INT8 slower than FP32"],
    }


@pytest.fixture
def repository(tmp_path: Path) -> ModelRepository:
    root = tmp_path / "repo"
    write_version(root, "mixed", 1, mixed_model())
    (root / "mixed" / "config.yaml").write_text("max_batch_size: 8\ninstance_count: 2\n", encoding="utf-8")
    write_version(root, "text", 3, text_model())
    return ModelRepository(root)


def write_report(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_describe_models_reads_signatures_and_settings(repository: ModelRepository) -> None:
    mixed, text = describe_models(repository)
    assert (mixed.name, mixed.version, mixed.file) == ("mixed", 1, "mixed/1/model.onnx")
    assert [(s.name, str(s.dtype), s.shape) for s in mixed.inputs] == [
        ("x", "float32", ("batch", 3)),
        ("k", "int64", ("batch",)),
    ]
    assert [s.name for s in mixed.outputs] == ["y", "k_next", "positive"]
    assert (mixed.max_batch_size, mixed.instance_count, mixed.opsets) == (8, 2, {"ai.onnx": 21})
    assert mixed.bytes == (repository.root / "mixed" / "1" / "model.onnx").stat().st_size
    assert (text.name, text.version, [str(s.dtype) for s in text.inputs]) == ("text", 3, ["object"])


def test_card_without_report_or_statements_says_not_stated(repository: ModelRepository) -> None:
    card = render_card(describe_models(repository), packed_at=PACKED_AT)
    assert card.startswith("# Model card: mixed, text\n")
    assert "Packed by modelport 0.1.0 on 2025-03-04 05:06 UTC" in card
    assert "| Models | mixed (version 1); text (version 3) |" in card
    assert f"| License | _{NOT_STATED}_ — state it with `modelport pack --license TEXT`. |" in card
    assert f"**Intended use.** _{NOT_STATED}_ — state it with `modelport pack --intended-use TEXT`." in card
    assert f"**Out-of-scope uses.** _{NOT_STATED}_" in card
    assert f"## Limitations\n\n_{NOT_STATED}_ — state it with `modelport pack --limitations TEXT`." in card
    assert f"## Performance\n\n_{NOT_STATED}_ — not measured for this bundle. Pass `--report" in card
    assert "### mixed, version 1\n" in card and "### text, version 3\n" in card
    assert "| input | x | float32 | [batch, 3] |" in card
    assert "| output | positive | bool | [batch] |" in card
    assert "| input | s | object | [n] |" in card
    assert "Serving: max_batch_size 8, 2 instance(s)." in card
    assert "Serving: no server-side batch limit, 1 instance(s)." in card


def test_card_states_what_it_is_told(repository: ModelRepository) -> None:
    info = CardInfo(
        intended_use="Sorting parcels by size.",
        out_of_scope="Medical use.",
        limitations="Trained on boxes.",
        license="MIT",
    )
    card = render_card(describe_models(repository), info=info, packed_at=PACKED_AT)
    assert "**Intended use.** Sorting parcels by size." in card
    assert "**Out-of-scope uses.** Medical use." in card
    assert "## Limitations\n\nTrained on boxes.\n" in card
    assert "| License | MIT |" in card
    assert card.count(NOT_STATED) == 1  # only the performance section, with no report


def test_card_copies_accuracy_and_latency_from_the_report(tmp_path: Path, repository: ModelRepository) -> None:
    report = read_report(write_report(tmp_path, fake_report()))
    card = render_card(describe_models(repository), report=report, packed_at=PACKED_AT)
    assert "| Source | models/mixed.onnx (model 'mixed', optimized by `modelport deploy`) |" in card
    assert "| Shipped variant | fp32 — INT8 was slower than FP32 (0.80x); shipping FP32 |" in card
    assert "on 16 samples from calib.npz: criterion atol=0.0001, rtol=0.0001 — passed." in card
    assert "not a task accuracy (top-1, mAP)" in card
    assert "| calibration samples | 1 | y | 2.5e-07 | 0.999988 | 131.2 | pass |" in card
    assert "| calibration samples x8 | 8 | y | 2.5e-07 | 0.999988 | 131.2 | FAIL: max abs 0.3 > 1e-4 |" in card
    assert "INT8 candidate: worst output SQNR 31.5 dB, worst cosine 0.99961, speed vs FP32 0.80x." in card
    assert "CPUExecutionProvider, intra-op threads: 2, on the machine that ran deploy" in card
    assert "| 1 | fp32 (input) | 0.43 | 0.50 | 0.75 | 2314.2 | 3.1% |" in card
    assert "| 8 | final (fp32) | 0.30 | 0.50 | 0.75 | 2314.2 | 3.1% |" in card
    assert "### Warnings from deploy\n\n- INT8 slower than FP32\n" in card
    assert NOT_STATED not in card.split("## Performance")[1]


def test_a_failed_comparison_is_shown_as_failed(tmp_path: Path, repository: ModelRepository) -> None:
    data = fake_report()
    data["compare_passed"] = False
    data["compare"]["runs"][0]["outputs"][0]["max_abs"] = "nan"  # deploy writes non-finite numbers as strings
    card = render_card(
        describe_models(repository), report=read_report(write_report(tmp_path, data)), packed_at=PACKED_AT
    )
    assert "criterion atol=0.0001, rtol=0.0001 — **FAILED**." in card
    assert "| calibration samples | 1 | y | nan |" in card


def test_a_report_about_another_model_is_refused(tmp_path: Path, repository: ModelRepository) -> None:
    report = read_report(write_report(tmp_path, fake_report(name="resnet")))
    with pytest.raises(
        ConfigError, match=r"the deploy report is about model 'resnet', but the repository serves 'mixed', 'text'"
    ):
        render_card(describe_models(repository), report=report, packed_at=PACKED_AT)


def test_report_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"deploy report '.*nope.json' does not exist — pass the report.json"):
        read_report(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"is not readable JSON"):
        read_report(broken)
    data = fake_report()
    del data["bench"]
    data["compare"]["runs"][0]["batch"] = "one"
    with pytest.raises(
        ConfigError,
        match=r"is not a modelport deploy report: compare.runs.0.batch: Input should be a valid integer.*; "
        r"bench: Field required — pass the report.json",
    ):
        read_report(write_report(tmp_path, data))
    with pytest.raises(ConfigError, match=r"not a modelport deploy report: top level: Input should be a valid"):
        read_report(write_report(tmp_path, [1, 2]))


def test_pinned_requirements_match_what_is_installed() -> None:
    text = pinned_requirements(PACKED_AT)
    lines = text.splitlines()
    assert lines[0].startswith("# Pinned by `modelport pack` on 2025-03-04 (Python ")
    assert lines[1] == "modelport==0.1.0"
    pins = dict(line.split(";")[0].split("==") for line in lines[1:] if not line.startswith("#"))
    for name in ("onnx", "onnx-ir", "onnxruntime", "numpy", "pydantic", "starlette", "uvicorn", "grpcio"):
        assert pins[name] == importlib.metadata.version(name)
    assert "pytest" not in pins and "torch" not in pins  # extras are not runtime requirements
