"""`modelport pack` and `modelport serve BUNDLE` from the command line: output, refusals, cleanup."""

from __future__ import annotations

import json
import signal
import tarfile
from pathlib import Path
from typing import Any

import pytest

from modelport.cli.main import main
from modelport.pack.checksum import MANIFEST_NAME, read_manifest, verify_manifest, write_manifest
from serve.serve_models import mixed_model, write_version


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repository"
    write_version(root, "mixed", 1, mixed_model())
    write_manifest(root)
    return root


def write_report(path: Path) -> Path:
    report = {
        "name": "mixed",
        "source": "mixed.onnx",
        "chosen": "fp32",
        "choice_reason": "no INT8 candidate",
        "compare_floor": "atol=0.0001, rtol=0.0001",
        "compare_passed": True,
        "compare": {"passed": True, "runs": []},
        "bench": [
            {"name": "final (fp32)", "batch": 1, "median_ms": 1.25, "p90_ms": 1.5, "p99_ms": 2.0, "throughput": 800.0}
            | {"cv": 0.02}
        ],
    }
    path.write_text(json.dumps(report), encoding="utf-8")
    return path


def test_pack_writes_a_bundle(capsys: pytest.CaptureFixture[str], tmp_path: Path, repo: Path) -> None:
    target = tmp_path / "mixed.tar.gz"
    report = write_report(tmp_path / "report.json")
    code, out, err = run(
        capsys, "pack", str(repo), "-o", str(target), "--report", str(report), "--intended-use", "a demo"
    )
    assert code == 0, err
    assert f"of mixed into {target}" in out
    assert f"serve it with: modelport serve {target}" in out
    with tarfile.open(target, "r:gz") as tar:
        card = tar.extractfile("mixed/MODEL_CARD.md").read().decode()  # type: ignore[union-attr]
    assert "**Intended use.** a demo" in card
    assert "| 1 | final (fp32) | 1.25 | 1.50 | 2.00 | 800.0 | 2.0% |" in card


def test_pack_json(capsys: pytest.CaptureFixture[str], tmp_path: Path, repo: Path) -> None:
    code, out, _ = run(capsys, "pack", str(repo), "-o", str(tmp_path / "b.tgz"), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["bundle"] == str(tmp_path / "b.tgz")
    assert data["models"] == ["mixed"]
    assert sorted(data["files"]) == ["MODEL_CARD.md", "mixed/1/model.onnx", "requirements.txt"]
    assert data["files"]["mixed/1/model.onnx"]["sha256"] == read_manifest(repo).files["mixed/1/model.onnx"]
    assert data["manifest_rewritten"] is False


def test_pack_refuses_an_existing_output(capsys: pytest.CaptureFixture[str], tmp_path: Path, repo: Path) -> None:
    target = tmp_path / "b.tar.gz"
    target.write_bytes(b"old")
    code, _, err = run(capsys, "pack", str(repo), "-o", str(target))
    assert code == 2
    assert f"error: '{target}' already exists — pass --force (force=True) to replace it" in err
    assert target.read_bytes() == b"old"
    code, _, err = run(capsys, "pack", str(repo), "-o", str(target), "--force")
    assert code == 0, err
    assert tarfile.is_tarfile(target)


def test_pack_refuses_a_tampered_repository(capsys: pytest.CaptureFixture[str], tmp_path: Path, repo: Path) -> None:
    (repo / "mixed" / "1" / "stray.bin").write_bytes(b"?")
    code, _, err = run(capsys, "pack", str(repo), "-o", str(tmp_path / "b.tar.gz"))
    assert code == 2
    assert "does not match its manifest: mixed/1/stray.bin: not in the manifest" in err
    assert "pass --rewrite-manifest" in err
    assert not (tmp_path / "b.tar.gz").exists()


def test_rewrite_manifest_without_output(capsys: pytest.CaptureFixture[str], repo: Path) -> None:
    (repo / "mixed" / "1" / "stray.bin").write_bytes(b"?")
    code, out, _ = run(capsys, "pack", str(repo), "--rewrite-manifest")
    assert code == 0
    assert f"rewrote {repo / MANIFEST_NAME}" in out
    assert verify_manifest(repo) == []


def test_pack_without_output_has_nothing_to_do(capsys: pytest.CaptureFixture[str], repo: Path) -> None:
    code, _, err = run(capsys, "pack", str(repo))
    assert code == 2
    assert "error: nothing to do — pass -o bundle.tar.gz to pack the repository, or --rewrite-manifest" in err


def test_pack_with_a_bad_report(capsys: pytest.CaptureFixture[str], tmp_path: Path, repo: Path) -> None:
    (tmp_path / "report.json").write_text('{"name": "mixed"}', encoding="utf-8")
    code, _, err = run(
        capsys, "pack", str(repo), "-o", str(tmp_path / "b.tar.gz"), "--report", str(tmp_path / "report.json")
    )
    assert code == 2
    assert "is not a modelport deploy report: source: Field required" in err


# serve BUNDLE -----------------------------------------------------------------------------------


def test_serve_extracts_verifies_and_removes_a_bundle(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "b.tar.gz"
    assert run(capsys, "pack", str(repo), "-o", str(bundle))[0] == 0
    served: list[Path] = []

    def fake_run_server(source: Any, **kwargs: Any) -> None:
        root = Path(source)
        assert verify_manifest(root) == []
        assert (root / "mixed" / "1" / "model.onnx").read_bytes() == (repo / "mixed" / "1" / "model.onnx").read_bytes()
        assert kwargs["port"] == 9123
        served.append(root)

    monkeypatch.setattr("modelport.serve.server.run_server", fake_run_server)
    code, _, err = run(capsys, "serve", str(bundle), "--port", "9123")
    assert code == 0, err
    assert len(served) == 1 and not served[0].exists()


def test_serve_refuses_a_tampered_bundle_before_serving(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (repo / MANIFEST_NAME).write_text(
        json.dumps({"files": {"mixed/1/model.onnx": {"sha256": "0" * 64}}}), encoding="utf-8"
    )
    bundle = tmp_path / "b.tar.gz"
    with tarfile.open(bundle, "w:gz") as tar:  # a bundle whose manifest lies about its model
        tar.add(repo, arcname="b")
    monkeypatch.setattr("modelport.serve.server.run_server", lambda *a, **k: pytest.fail("must not serve"))
    code, _, err = run(capsys, "serve", str(bundle))
    assert code == 2
    assert "error: bundle" in err and "does not match its manifest: mixed/1/model.onnx: sha256 on disk is" in err


def test_sigterm_while_serving_a_bundle_still_removes_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn re-raises the SIGTERM it handled once it has stopped; the bundle folder must still go."""
    bundle = tmp_path / "b.tar.gz"
    assert run(capsys, "pack", str(repo), "-o", str(bundle))[0] == 0
    served: list[Path] = []

    def stopped_by_sigterm(source: Any, **kwargs: Any) -> None:
        served.append(Path(source))
        signal.raise_signal(signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr("modelport.serve.server.run_server", stopped_by_sigterm)
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", str(bundle)])
    assert exit_info.value.code == 128 + signal.SIGTERM
    assert len(served) == 1 and not served[0].exists()
    assert signal.getsignal(signal.SIGTERM) == before
