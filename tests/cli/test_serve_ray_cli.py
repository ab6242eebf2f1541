"""modelport serve --ray: flags reach run_ray_serve; Ray-only flags without --ray are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelport.cli.main import main
from modelport.serve.ray_serve import Autoscale


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    import onnx

    folder = tmp_path / "repo" / "relu" / "1"
    folder.mkdir(parents=True)
    text = '<ir_version: 8, opset_import: ["" : 17]> g (float[N, 4] x) => (float[N, 4] y) { y = Relu(x) }'
    onnx.save(onnx.parser.parse_model(text), folder / "model.onnx")
    return tmp_path / "repo"


def test_ray_flags_reach_run_ray_serve(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(
        "modelport.serve.ray_serve.run_ray_serve", lambda source, **kw: calls.append({"source": source, **kw})
    )
    assert main(["serve", str(repo), "--ray", "--autoscale", "1:3", "--port", "8123", "--cpus-per-replica", "0.5"]) == 0
    (call,) = calls
    assert call["source"] == str(repo) and call["port"] == 8123 and call["host"] == "127.0.0.1"
    assert call["autoscale"] == Autoscale(1, 3) and call["replicas"] is None and call["num_cpus"] == 0.5
    assert main(["serve", str(repo), "--ray", "--replicas", "2"]) == 0
    assert calls[-1]["replicas"] == 2 and calls[-1]["autoscale"] is None


def test_ray_only_flags_need_ray(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", str(repo), "--replicas", "2"]) == 2
    assert "apply to Ray Serve — add --ray" in capsys.readouterr().err
    assert main(["serve", str(repo), "--ray", "--grpc-port", "9000"]) == 2
    assert "--grpc-port does not apply with --ray" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", str(repo), "--ray", "--replicas", "2", "--autoscale", "1:2"])
    assert "not allowed with argument" in capsys.readouterr().err
