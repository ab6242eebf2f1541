"""`modelport k8s`: writes validated manifests, refuses to overwrite, reports bad input with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from modelport.bench.analyze import AnalysisResult, Candidate, Constraints, Measurement, ModelLoad, ModelSettings
from modelport.cli.main import main
from modelport.pack import k8s
from serve.serve_models import mixed_model, text_model, write_version


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("k8s-cli") / "repo"
    write_version(root, "mixed", 1, mixed_model())
    (root / "mixed" / "config.yaml").write_text("instance_count: 2\nintra_op_threads: 1\n", encoding="utf-8")
    write_version(root, "text", 1, text_model())
    (root / "text" / "config.yaml").write_text("intra_op_threads: 1\n", encoding="utf-8")
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_writes_a_deployment_and_a_service(capsys: pytest.CaptureFixture[str], repo: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "k8s"
    code, out, _ = run(capsys, "k8s", str(repo), "-o", str(out_dir), "--replicas", "3", "--name", "demo")
    assert code == 0
    assert f"wrote {out_dir / 'deployment.yaml'}" in out
    assert "cpu: 3 = mixed: 1 version(s) × 2 instance(s) × 1 thread(s)" in out
    deployment = yaml.safe_load((out_dir / "deployment.yaml").read_text(encoding="utf-8"))
    assert (deployment["metadata"]["name"], deployment["spec"]["replicas"]) == ("demo", 3)
    assert "validated against the Kubernetes 1.30 schemas (strict)" in (out_dir / "service.yaml").read_text(
        encoding="utf-8"
    )

    code, _, err = run(capsys, "k8s", str(repo), "-o", str(out_dir), "--replicas", "5")
    assert code == 2
    assert "error: not overwriting" in err and "pass --force" in err
    code, _, _ = run(capsys, "k8s", str(repo), "-o", str(out_dir), "--replicas", "5", "--force", "--name", "demo")
    assert code == 0
    assert yaml.safe_load((out_dir / "deployment.yaml").read_text(encoding="utf-8"))["spec"]["replicas"] == 5


def test_kserve_to_stdout(capsys: pytest.CaptureFixture[str], repo: Path) -> None:
    argv = ["k8s", str(repo), "-o", "-", "--kserve", "--storage-uri", "s3://bucket/repo", "--gpu"]
    code, out, err = run(capsys, *argv)
    assert code == 0
    documents = [doc for doc in yaml.safe_load_all(out) if doc]
    assert [d["kind"] for d in documents] == ["ServingRuntime", "InferenceService"]
    model = documents[1]["spec"]["predictor"]["model"]
    assert model["storageUri"] == "s3://bucket/repo"
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "memory:" in err  # the summary goes to stderr when stdout holds the YAML


def test_json_summary_with_analysis(capsys: pytest.CaptureFixture[str], repo: Path, tmp_path: Path) -> None:
    settings = {"mixed": ModelSettings(instance_count=2, intra_op_threads=2), "text": ModelSettings(intra_op_threads=1)}
    load = ModelLoad(throughput=50.0, p50_ms=1.0, p99_ms=3.0, requests=100)
    best = Measurement(Candidate.of(settings), loads={n: load for n in settings}, memory_mb=300.0)
    AnalysisResult(
        repo=str(repo),
        mode="quick",
        cores=4,
        concurrency=dict.fromkeys(settings, 4),
        constraints=Constraints(),
        default=best,
        measurements=[best],
        best=best,
        pareto=[best],
    ).write_json(tmp_path / "analysis.json")
    argv = ["k8s", str(repo), "-o", str(tmp_path / "all.yaml"), "--analysis", str(tmp_path / "analysis.json")]
    code, out, _ = run(capsys, *argv, "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["files"] == [str(tmp_path / "all.yaml")]
    assert summary["kinds"] == ["Deployment", "Service"]
    assert summary["validated"] is True
    assert (summary["resources"]["cpu"], summary["resources"]["memory_mib"]) == (5, 375)
    assert "measured peak RSS 300 MiB" in summary["resources"]["memory_source"]


def test_says_when_it_cannot_validate(
    capsys: pytest.CaptureFixture[str], repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(k8s, "validation_available", lambda: False)
    code, _, err = run(capsys, "k8s", str(repo), "-o", str(tmp_path / "out.yaml"))
    assert code == 0
    assert "NOT validated" in err and "pip install kubernetes-validate" in err
    assert "NOT validated" in (tmp_path / "out.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--replicas", "0"], r"error: replicas must be an integer >= 1, got 0"),
        (["--name", "Bad_Name"], r"error: name 'Bad_Name' is not a valid Kubernetes name"),
        (["--storage-uri", "s3://b/r"], r"error: a storage URI is for KServe manifests — add --kserve"),
        (["--kserve", "--pvc", "claim"], r"error: with KServe the repository comes from the storage URI"),
        (["--analysis", "missing.json"], r"error: analysis file 'missing.json' does not exist"),
        (["-o", "-", "--json"], r"error: --json and -o - would both write to stdout"),
    ],
)
def test_bad_options(capsys: pytest.CaptureFixture[str], repo: Path, argv: list[str], message: str) -> None:
    code, out, err = run(capsys, "k8s", str(repo), *argv)
    assert code == 2
    assert message in err
    assert out == ""


def test_missing_repository(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "k8s", str(tmp_path / "nowhere"), "-o", str(tmp_path / "k8s"))
    assert code == 2
    assert "does not exist" in err
    assert not (tmp_path / "k8s").exists()


def test_argparse_refuses_non_numbers(capsys: pytest.CaptureFixture[str], repo: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["k8s", str(repo), "--replicas", "two"])
    assert exit_info.value.code == 2
    assert "argument --replicas: invalid int value: 'two'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="2"):
        main(["k8s", str(repo), "--pvc", "a", "--model-image", "b"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_help_lists_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="0"):
        main(["--help"])
    assert "k8s" in capsys.readouterr().out
