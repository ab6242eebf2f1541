"""Sweeps (batch x threads x callers), the recommendation, pipelines from config.yaml, and the CLI end to end."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
import pytest
from PIL import Image

from modelport.bench import sweep as sweep_module
from modelport.bench.harness import NOT_ON_CPU, BenchResult, BenchSettings, latency_histogram
from modelport.bench.sweep import (
    Configuration,
    SweepSpec,
    default_values,
    load_pipeline_config,
    parse_dimensions,
    pipeline_feeds,
    recommend,
    run_sweep,
    synthetic_images,
)
from modelport.cli.main import main
from modelport.errors import ConfigError, InputDtypeError, ModelLoadError, RepositoryError
from modelport.ir.serde import save
from modelport.ir.specs import TensorSpec
from modelport.serve.pipeline import Pipeline, PipelineConfig
from modelport.verify.inputs import InputPlan

QUICK = BenchSettings(warmup=1, iterations=3, max_windows=1)


def write_model(path: Path, text: str) -> Path:
    return save(ir.from_onnx_text(text), path)


@pytest.fixture
def mlp_path(tmp_path: Path) -> Path:
    return write_model(
        tmp_path / "mlp.onnx",
        """
        <ir_version: 8, opset_import: ["" : 17]>
        mlp (float[N, 8] x) => (float[N, 8] y)
        {
            t = Relu(x)
            y = Add(t, x)
        }
        """,
    )


@pytest.fixture
def classifier_path(tmp_path: Path) -> Path:
    """[N, 3, 16, 16] image -> [N, 3] logits (mean per channel): small enough for an image pipeline test."""
    folder = tmp_path / "classifier"
    folder.mkdir()
    return write_model(
        folder / "model.onnx",
        """
        <ir_version: 8, opset_import: ["" : 18]>
        classifier (float[N, 3, 16, 16] pixels) => (float[N, 3] logits)
        {
            axes = Constant<value = int64[2] {2, 3}>()
            logits = ReduceMean<keepdims = 0>(pixels, axes)
        }
        """,
    )


def result(
    label_batch: int,
    throughput: float,
    p99: float,
    *,
    median: float = 1.0,
    callers: int = 1,
    threads: int | None = None,
    stabilised: bool | None = True,
    cv: float = 0.01,
) -> BenchResult:
    """A synthetic result for the recommendation logic."""
    return BenchResult(
        name="m",
        batch=label_batch,
        iterations=100,
        warmup=5,
        total_seconds=1.0,
        min_ms=median / 2,
        mean_ms=median,
        median_ms=median,
        p90_ms=p99,
        p95_ms=p99,
        p99_ms=p99,
        max_ms=p99,
        std_ms=0.0,
        cv=cv,
        throughput=throughput,
        stabilised=stabilised,
        configuration={"batch": label_batch, "intra_op_threads": threads, "callers": callers},
        histogram=latency_histogram(np.array([median, p99])),
    )


# the spec ---------------------------------------------------------------------------------------


def test_shared_callers_reuse_one_session_group() -> None:
    spec = SweepSpec(batches=(1, 8), intra_op_threads=(1, 2), callers=(1, 2))
    groups = spec.session_groups()
    assert [key for key, _ in groups] == [(1, None, 1), (2, None, 1)]
    assert [(c.batch, c.callers) for c in groups[0][1]] == [(1, 1), (1, 2), (8, 1), (8, 2)]
    assert len(spec.configurations()) == 8
    assert all(c.sessions == 1 for c in spec.configurations())


def test_session_callers_get_a_group_each() -> None:
    spec = SweepSpec(batches=(1,), callers=(1, 3), caller_mode="sessions")
    groups = spec.session_groups()
    assert [key for key, _ in groups] == [(None, None, 1), (None, None, 3)]
    assert groups[1][1] == [Configuration(batch=1, callers=3, caller_mode="sessions")]
    assert groups[1][1][0].sessions == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batches": ()}, r"the sweep lists no batch sizes — give at least one"),
        ({"batches": (0, 2)}, r"batch sizes must be >= 1 \(got 0\)"),
        ({"batches": (1, 1)}, r"batch sizes lists 1 more than once"),
        ({"intra_op_threads": (0,)}, r"intra-op thread counts must be >= 1 \(got 0\)"),
        ({"inter_op_threads": ()}, r"the sweep lists no inter-op thread counts"),
        ({"callers": (None,)}, r"caller counts must be >= 1 \(got None\)"),
        ({"caller_mode": "pooled"}, r"caller mode 'pooled' is unknown — use one of: shared, sessions"),
    ],
)
def test_spec_refuses_nonsense(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SweepSpec(**kwargs)


def test_default_ranges() -> None:
    assert default_values("batch") == (1, 2, 4, 8, 16, 32)
    assert default_values("threads", cpus=6) == (1, 2, 4, 6)
    assert default_values("callers", cpus=8) == (1, 2, 4, 8)
    assert default_values("threads", cpus=1) == (1,)
    assert default_values("inter-threads") == (1, 2)
    with pytest.raises(ConfigError, match=r"cannot sweep 'precision' — sweepable: batch, threads, inter-threads"):
        default_values("precision")


def test_parse_dimensions() -> None:
    assert parse_dimensions("batch, callers") == ["batch", "callers"]
    with pytest.raises(ConfigError, match=r"--sweep 'batch,cores' names 'cores' — sweepable: batch, threads"):
        parse_dimensions("batch,cores")
    with pytest.raises(ConfigError, match=r"--sweep ',' names nothing"):
        parse_dimensions(",")


# the recommendation -----------------------------------------------------------------------------


def test_recommends_best_throughput_and_best_p99_at_batch_one() -> None:
    results = [
        result(1, 100.0, 2.0, median=1.5),
        result(1, 150.0, 3.0, callers=2),
        result(8, 400.0, 20.0),
        result(8, 380.0, 25.0, threads=2),
    ]
    rec = recommend(results)
    assert rec.throughput.label == "batch 8"
    assert rec.throughput.throughput == 400.0
    assert rec.throughput.reason == "highest throughput: 400 items/s"
    assert rec.latency.label == "batch 1"
    assert rec.latency.reason == "lowest p99 at batch 1: 2 ms (median 1.5 ms)"
    assert rec.latency.configuration == {"batch": 1, "intra_op_threads": None, "callers": 1}
    assert rec.notes == ["within 5% of the best throughput: batch 8, threads 2"]


def test_equal_p99_goes_to_the_lower_median() -> None:
    rec = recommend([result(1, 100.0, 2.0, median=1.8), result(1, 90.0, 2.0, median=1.2, threads=1)])
    assert rec.latency.label == "batch 1, threads 1"
    assert "within 5% of the best p99: batch 1" in rec.notes


def test_unstable_results_do_not_compete() -> None:
    results = [result(1, 1000.0, 0.5, stabilised=False), result(1, 100.0, 2.0), result(4, 50.0, 9.0, cv=0.5)]
    rec = recommend(results)
    assert rec.throughput.throughput == 100.0
    assert rec.latency.p99_ms == 2.0
    assert rec.notes == ["2 unstable configuration(s) did not compete"]


def test_when_nothing_is_stable_the_picks_are_tentative() -> None:
    rec = recommend([result(2, 100.0, 2.0, stabilised=False), result(4, 300.0, 5.0, stabilised=False)])
    assert rec.throughput.throughput == 300.0
    assert rec.latency.label == "batch 2"
    assert rec.notes[0].startswith("no configuration measured stable (see the warnings): the picks are tentative")
    assert "batch 1 was not measured: the latency pick is at batch 2" in rec.notes


def test_nothing_to_recommend() -> None:
    with pytest.raises(ConfigError, match=r"nothing to recommend: no configuration was measured"):
        recommend([])


# sweeping a real model --------------------------------------------------------------------------


def test_sweep_measures_every_configuration(mlp_path: Path) -> None:
    spec = SweepSpec(batches=(1, 4), intra_op_threads=(1, 2), callers=(1, 2))
    seen: list[tuple[int, int, str]] = []
    report = run_sweep(mlp_path, spec, QUICK, progress=lambda done, total, label: seen.append((done, total, label)))
    assert len(report.results) == 8
    assert [(d, t) for d, t, _ in seen] == [(i, 8) for i in range(1, 9)]
    assert [r.label for r in report.results] == [label for _, _, label in seen]
    configs = [(r.configuration["intra_op_threads"], r.batch, r.configuration["callers"]) for r in report.results]
    assert configs == [(1, 1, 1), (1, 1, 2), (1, 4, 1), (1, 4, 2), (2, 1, 1), (2, 1, 2), (2, 4, 1), (2, 4, 2)]
    for r in report.results:
        assert r.iterations == 3 * r.configuration["callers"]
        assert r.engine["intra_op_threads"] in (1, 2)
        assert r.unmeasured == {"h2d": NOT_ON_CPU, "d2h": NOT_ON_CPU}
        assert r.memory is not None and r.memory.delta_mb is not None and r.memory.delta_mb >= 0
        assert r.memory.device_source == NOT_ON_CPU
    assert report.model == "mlp"
    assert report.inputs == {"x": {"shape": [1, 8], "dtype": "float32", "values": "standard normal"}}
    assert report.settings["iterations"] == 3
    assert report.host["cpus"] == os.cpu_count()
    labels = {r.label for r in report.results}
    assert report.recommendation.throughput.label in labels
    assert report.recommendation.latency.configuration["batch"] == 1
    data = json.loads(json.dumps(report.to_dict()))
    assert [r["label"] for r in data["results"]] == [r.label for r in report.results]
    assert set(data["recommendation"]) == {"throughput", "latency", "notes"}


def test_sweep_with_a_session_per_caller(mlp_path: Path) -> None:
    report = run_sweep(mlp_path, SweepSpec(callers=(2,), caller_mode="sessions", intra_op_threads=(1,)), QUICK)
    (only,) = report.results
    assert only.label == "batch 1, threads 1, 2 callers (sessions)"
    assert only.iterations == 6


def test_oversubscription_is_flagged(mlp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    report = run_sweep(mlp_path, SweepSpec(intra_op_threads=(2,), callers=(1, 2)), QUICK)
    assert not any("exceed" in w for r in report.results for w in r.warnings)  # 2 x 2 threads fit 4 cores
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    report = run_sweep(mlp_path, SweepSpec(intra_op_threads=(2,), callers=(1, 2)), QUICK)
    assert not any("exceed" in w for w in report.results[0].warnings)
    assert (
        "2 callers x 2 intra-op threads exceed the 3 cores: the threads compete for them" in report.results[1].warnings
    )


def test_sweep_of_an_in_memory_model_with_a_static_batch(tmp_path: Path) -> None:
    model = ir.from_onnx_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        fixed (float[2, 4] x) => (float[2, 4] y)
        {
            y = Relu(x)
        }
        """
    )
    report = run_sweep(model, SweepSpec(batches=(1, 2)), QUICK, name="static")
    assert [r.batch for r in report.results] == [2, 2]
    assert "batch 1 requested, but the model fixes axis 0 to 2" in report.results[0].warnings
    assert report.model == "static"
    assert "batch 1 was not measured: the latency pick is at batch 2" in report.recommendation.notes


def test_sweep_refuses_a_bad_image_size_and_a_missing_model(mlp_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"image size 0x640 is invalid — height and width must be >= 1"):
        run_sweep(mlp_path, image_size=(0, 640))
    with pytest.raises(ModelLoadError, match=r"does not exist"):
        run_sweep(tmp_path / "nope.onnx")


# pipelines --------------------------------------------------------------------------------------

PIPELINE_YAML = """
intra_op_threads: 1
pipeline:
  preprocess:
    - kind: image
      mean: [0.5, 0.5, 0.5]
      std: [0.25, 0.25, 0.25]
  postprocess:
    - kind: classification
      top_k: 2
      labels: [red, green, blue]
"""


def test_sweep_with_an_image_pipeline_times_each_stage(classifier_path: Path) -> None:
    config = classifier_path.parent / "config.yaml"
    config.write_text(PIPELINE_YAML, encoding="utf-8")
    settings = BenchSettings(warmup=1, iterations=3, max_windows=1)
    report = run_sweep(classifier_path, SweepSpec(batches=(1, 2)), settings, pipeline=config, image_size=(24, 32))
    assert report.pipeline == ["preprocess.image", "postprocess.classification"]
    assert report.inputs["image"]["values"] == "synthetic photo-like JPEG, 24x32 (height x width)"
    assert report.engine["intra_op_threads"] == 1  # taken from the config, as the server would
    for r in report.results:
        assert list(r.stages) == [
            "preprocess",
            "compute",
            "postprocess",
            "preprocess.image",
            "postprocess.classification",
            "end_to_end",
        ]
        assert r.unmeasured == {"h2d": NOT_ON_CPU, "d2h": NOT_ON_CPU}
        shares = sum(r.stages[name].share for name in ("preprocess", "compute", "postprocess"))
        assert 0.0 < shares <= 1.0 + 1e-9  # the stages lie inside the end to end time
        assert r.stages["end_to_end"].median_ms == pytest.approx(r.median_ms, rel=1e-12)
        assert r.configuration["intra_op_threads"] == 1


def test_pipeline_feeds_are_decodable_jpegs_of_the_given_size(classifier_path: Path) -> None:
    config = PipelineConfig.model_validate({"preprocess": [{"kind": "image"}]})
    specs = [TensorSpec("pixels", np.dtype(np.float32), ("N", 3, 16, 16))]
    outs = [TensorSpec("logits", np.dtype(np.float32), ("N", 3))]
    pipeline = Pipeline.build(config, specs, outs, base_dir=classifier_path.parent)
    feeds = pipeline_feeds(pipeline, config, InputPlan(batch=3), image_size=(20, 30))
    assert list(feeds) == ["image"] and feeds["image"].shape == (3,)
    for encoded in feeds["image"]:
        with Image.open(io.BytesIO(encoded)) as image:
            assert (image.format, image.size, image.mode) == ("JPEG", (30, 20), "RGB")
    assert pipeline.preprocess(feeds).feeds["pixels"].shape == (3, 3, 16, 16)


def test_synthetic_images_refuse_an_empty_size() -> None:
    assert synthetic_images(2, (4, 5)).shape == (2,)
    with pytest.raises(ConfigError, match=r"image size 0x5 is invalid — give height and width >= 1, e.g. 480x640"):
        synthetic_images(1, (0, 5))


def test_pipeline_inputs_that_cannot_be_generated_are_refused(tmp_path: Path) -> None:
    (tmp_path / "text_stage.py").write_text("def f(t):\n    return t\n", encoding="utf-8")
    config = PipelineConfig.model_validate(
        {
            "preprocess": [
                {
                    "kind": "python",
                    "entry_point": "text_stage:f",
                    "inputs": [{"name": "prompt", "datatype": "BYTES", "shape": [-1]}],
                }
            ]
        }
    )
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        specs = [TensorSpec("x", np.dtype(np.float32), ("N", 3))]
        pipeline = Pipeline.build(config, specs, specs, base_dir=tmp_path)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("text_stage", None)
    with pytest.raises(InputDtypeError, match=r"cannot generate values for input 'prompt' of dtype object"):
        pipeline_feeds(pipeline, config, InputPlan())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, r"pipeline config '.*config.yaml' is not a file — give the model's config.yaml"),
        ("pipeline: [unclosed", r"pipeline config '.*' cannot be read as YAML"),
        ("- a\n- b\n", r"must be a mapping of settings \(key: value\), got list"),
        ("max_batch_size: 4\n", r"has no 'pipeline:' key \(its keys: max_batch_size\) — put the preprocess"),
        ("pipeline:\n  preprocess: []\n", r"is invalid: pipeline: Value error, the pipeline has no stages"),
        ("pipeline:\n  postprocess:\n    - kind: classification\n      topk: 2\n", r"is invalid: .*topk: Extra"),
    ],
)
def test_pipeline_config_errors(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "config.yaml"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_pipeline_config(path)


def test_a_pipeline_that_does_not_fit_the_model_is_refused(mlp_path: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("pipeline:\n  preprocess:\n    - kind: image\n", encoding="utf-8")
    with pytest.raises(RepositoryError, match=r"pipeline stage 'preprocess.image' of model 'mlp'"):
        run_sweep(mlp_path, pipeline=config, settings=QUICK)


# the CLI, end to end ----------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json(capsys: pytest.CaptureFixture[str], mlp_path: Path) -> None:
    code, out, _ = cli(
        capsys, "bench", str(mlp_path), "--batch", "1,2", "--threads", "1", "--iterations", "4", "--max-windows", "1",
        "--warmup", "1", "--json",
    )  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert [r["batch"] for r in data["results"]] == [1, 2]
    assert all(r["iterations"] == 4 and r["min_ms"] <= r["median_ms"] <= r["max_ms"] for r in data["results"])
    assert data["recommendation"]["latency"]["configuration"]["batch"] == 1
    assert data["settings"]["max_windows"] == 1


def test_cli_table_csv_and_html(capsys: pytest.CaptureFixture[str], mlp_path: Path, tmp_path: Path) -> None:
    csv_path, html_path = tmp_path / "r.csv", tmp_path / "r.html"
    code, out, _ = cli(
        capsys, "bench", str(mlp_path), "--callers", "1,2", "--threads", "1", "--duration", "0.02",
        "--max-windows", "3", "--stable", "0.5", "--warmup", "2", "--warmup-seconds", "0.01",
        "--csv", str(csv_path), "--html", str(html_path),
    )  # fmt: skip
    assert code == 0
    assert "batch 1, threads 1, 2 callers (shared session)" in out
    assert "best throughput:" in out and "best latency:" in out
    assert "H2D: n/a (CPU); D2H: n/a (CPU)" in out
    assert f"wrote {csv_path}" in out and f"wrote {html_path}" in out
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text(encoding="utf-8"))))
    assert [row["callers"] for row in rows] == ["1", "2"]
    html = html_path.read_text(encoding="utf-8")
    assert html.count("<svg") == 2 + 2  # two line charts, one histogram per configuration


def test_cli_sweep_uses_default_ranges(
    capsys: pytest.CaptureFixture[str], mlp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    code, out, _ = cli(
        capsys, "bench", str(mlp_path), "--sweep", "callers,threads", "--batch", "2", "--iterations", "2",
        "--max-windows", "1", "--warmup", "1", "--json",
    )  # fmt: skip
    assert code == 0
    configs = [
        (r["configuration"]["intra_op_threads"], r["configuration"]["callers"]) for r in json.loads(out)["results"]
    ]
    assert configs == [(1, 1), (1, 2), (2, 1), (2, 2)]


def test_cli_pipeline(capsys: pytest.CaptureFixture[str], classifier_path: Path) -> None:
    config = classifier_path.parent / "config.yaml"
    config.write_text(PIPELINE_YAML, encoding="utf-8")
    code, out, _ = cli(
        capsys, "bench", str(classifier_path), "--pipeline", str(config), "--image-size", "20x24",
        "--iterations", "2", "--max-windows", "1", "--warmup", "1",
    )  # fmt: skip
    assert code == 0
    assert "stages: median / p99 ms (share of the mean end to end)" in out
    assert "n/a (CPU)" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sweep", "batch,cores"], r"--sweep 'batch,cores' names 'cores'"),
        (["--image-size", "640"], r"--image-size '640' must be HEIGHTxWIDTH with sizes >= 1, e.g. 480x640"),
        (["--image-size", "0x5"], r"--image-size '0x5' must be HEIGHTxWIDTH"),
        (["--stable", "2"], r"stability tolerance must be between 0 and 1 \(got 2.0\)"),
        (["--max-windows", "0"], r"max_windows must be >= 1 \(got 0\)"),
        (["--iterations", "0"], r"iterations must be >= 1 \(got 0\)"),
        (["--threads", "0"], r"--threads '0' must list sizes >= 1"),
        (["--callers", "x"], r"--callers 'x' must be integers separated by commas"),
        (["--caller-mode", "pool"], r"caller mode 'pool' is unknown — use one of: shared, sessions"),
        (["--providers", ","], r"--providers ',' names no provider"),
        (["--providers", "NoSuchExecutionProvider"], r"ONNX Runtime has no NoSuchExecutionProvider here"),
        (["--csv", "/nonexistent-folder/r.csv"], r"--csv '/nonexistent-folder/r.csv': folder '/nonexistent-folder'"),
        (["--pipeline", "/nonexistent/config.yaml"], r"pipeline config '/nonexistent/config.yaml' is not a file"),
    ],
)
def test_cli_errors(capsys: pytest.CaptureFixture[str], mlp_path: Path, extra: list[str], message: str) -> None:
    code, out, err = cli(capsys, "bench", str(mlp_path), "--iterations", "2", "--max-windows", "1", *extra)
    assert code == 2
    assert out == ""
    import re

    assert re.search(message, err), err


def test_cli_html_into_a_folder_is_refused_before_measuring(
    capsys: pytest.CaptureFixture[str], mlp_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("measured although the report could not be written")

    monkeypatch.setattr(sweep_module, "measure", never)
    code, _, err = cli(capsys, "bench", str(mlp_path), "--html", str(tmp_path))
    assert code == 2
    assert f"--html '{tmp_path}' is a folder — give a file name" in err
