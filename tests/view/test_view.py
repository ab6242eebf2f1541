from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from modelport.cli.main import main
from modelport.errors import ConfigError, ModelLoadError
from modelport.view import Viewer, start_viewer

pytest.importorskip("netron")


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    import onnx

    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    tiny (float[N, 4] x) => (float[N, 4] y) { y = Relu(x) }
    """
    path = tmp_path / "tiny.onnx"
    onnx.save(onnx.parser.parse_model(text), path)
    return path


def test_viewer_serves_netron_and_the_model_on_localhost(model_file: Path) -> None:
    viewer = start_viewer(model_file, browse=False)
    try:
        assert viewer.host == "127.0.0.1" and viewer.port > 0
        page = httpx.get(viewer.url + "/", timeout=10)
        assert page.status_code == 200 and "netron" in page.text.lower()
        data = httpx.get(f"{viewer.url}/data/{model_file.name}", timeout=10)
        assert data.content == model_file.read_bytes()
    finally:
        viewer.stop()


def test_viewer_refuses_bad_input(tmp_path: Path, model_file: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        start_viewer(tmp_path / "missing.onnx", browse=False)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ModelLoadError, match=r"junk\.onnx"):
        start_viewer(junk, browse=False)
    with pytest.raises(ConfigError, match="port must be between 0 and 65535"):
        start_viewer(model_file, port=70000, browse=False)


def test_cli_no_browser_prints_the_url(
    model_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[Viewer] = []

    def interrupted(self: Viewer) -> None:
        seen.append(self)
        assert httpx.get(self.url + "/", timeout=10).status_code == 200
        self.stop()
        raise KeyboardInterrupt

    monkeypatch.setattr(Viewer, "wait", interrupted)
    assert main(["view", str(model_file), "--no-browser"]) == 0
    assert seen and f"Netron: {seen[0].url}" in capsys.readouterr().out
