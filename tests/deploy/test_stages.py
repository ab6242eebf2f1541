"""deploy's stages, one at a time (the whole job is tested in test_deploy_job.py)."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from modelport.deploy import stages
from modelport.deploy.example import example_calibration, example_model


def test_bench_stage_times_both_models_with_sessions_that_stop_spinning(
    spin_settings: Callable[[ModuleType], list[str]],
) -> None:
    # The two sessions are timed in alternating windows: an idle session's spinning workers would
    # take a core from the other's window (see INTERLEAVED_ORT_CONFIG).
    seen = spin_settings(stages)
    model = example_model()
    samples = [{"image": x[None]} for x in example_calibration(2)]
    report = stages.bench_stage(model, model, "fp32", samples, [1, 2], 0.1, "cpu", None)
    assert seen == ["1", "1", "1", "1"]  # both runners, at both batch sizes
    results = report["results"]
    assert [(r["name"], r["batch"]) for r in results] == [
        ("fp32 (input)", 1),
        ("final (fp32)", 1),
        ("fp32 (input)", 2),
        ("final (fp32)", 2),
    ]
    assert all(r["median_ms"] > 0 for r in results)


def test_make_runner_keeps_spinning_unless_interleaved() -> None:
    model = example_model()
    with stages.make_runner(model, "cpu", None, "alone") as alone:
        assert alone.session_config == {}  # type: ignore[attr-defined]
    with stages.make_runner(model, "cpu", None, "timed", interleaved=True) as timed:
        assert timed.session_config == {"session.force_spinning_stop": "1"}  # type: ignore[attr-defined]
