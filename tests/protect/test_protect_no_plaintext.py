"""Reading an encrypted model never writes its plaintext anywhere.

The commands that read a model (inspect, compare, verify, bench), a serving repository and static
INT8 quantization run on an encrypted model with TMPDIR pointed at an empty folder and the working
directory moved to another. Two checks, because each misses what the other sees:

* an audit hook records every file Python opens for writing while they run — none may be opened,
  so a plaintext file written and deleted again (a temporary folder) is caught too;
* afterwards no file in those folders or in the model's folder holds the plaintext model or any
  of its weights — which also covers files written by native code (ONNX Runtime, onnx), which the
  audit hook does not see.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from protect_models import WEIGHT_ARRAYS, feeds

from modelport.cli.main import main
from modelport.ir import serde
from modelport.protect import ENV_KEY_FILE, encrypt_model, use_key
from modelport.runners.onnxruntime import OrtRunner

_RECORDERS: list[list[str]] = []


def _record_writes(event: str, args: tuple[Any, ...]) -> None:
    """Audit hook: note every file opened for writing while a recorder is active."""
    if not _RECORDERS or event != "open":
        return
    path, mode, flags = args
    if not isinstance(path, str | bytes | os.PathLike):
        return  # os.fdopen of a descriptor: its open was recorded already
    writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & (os.O_WRONLY | os.O_RDWR))
    if writing:
        _RECORDERS[-1].append(os.fsdecode(path))


sys.addaudithook(_record_writes)  # hooks cannot be removed; this one is idle outside _recording()


@contextmanager
def _recording() -> Iterator[list[str]]:
    opened: list[str] = []
    _RECORDERS.append(opened)
    try:
        yield opened
    finally:
        _RECORDERS.remove(opened)


def _files_with_plaintext(folders: Iterable[Path], needles: list[bytes]) -> list[Path]:
    hits = []
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                data = path.read_bytes()
                if any(needle in data for needle in needles):
                    hits.append(path)
    return hits


@pytest.mark.parametrize("weights_only", [False, True], ids=["whole", "weights-only"])
def test_no_command_writes_the_plaintext(
    plain: Path,
    key: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    weights_only: bool,
) -> None:
    needles = [plain.read_bytes(), *(w.tobytes() for w in WEIGHT_ARRAYS)]
    assert _files_with_plaintext([plain.parent], needles) == [plain]  # the scan finds plaintext where it is
    key_file = tmp_path / "keys" / "k.key"
    key_file.parent.mkdir()
    key_file.write_bytes(key)
    repo = tmp_path / "repo"
    enc = encrypt_model(plain, repo / "mlp" / "1" / "model.onnx", key, weights_only=weights_only)
    scratch, cwd = tmp_path / "tmp", tmp_path / "cwd"
    scratch.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", None)  # forget the cached temporary folder
    monkeypatch.chdir(cwd)
    assert tempfile.gettempdir() == str(scratch)

    k = ["--key-file", str(key_file)]
    with _recording() as opened:
        assert main(["inspect", str(enc), *k]) == 0
        assert main(["compare", str(enc), str(enc), "--batch", "1,2", *k]) == 0
        assert main(["verify", str(enc), "--batch", "1", *k]) == 0
        assert main(["bench", str(enc), "--iterations", "3", "--warmup", "1", "--max-windows", "3", "--json", *k]) == 0
        _serve_and_quantize(repo, plain, key_file, key, monkeypatch)
    capsys.readouterr()

    # Nothing was even opened for writing (a file written and deleted again would not be seen by the scan).
    assert [path for path in opened if not path.startswith(("/dev/", "/proc/"))] == []

    assert _files_with_plaintext([repo, scratch, cwd], needles) == []
    assert sorted(p.relative_to(repo) for p in repo.rglob("*") if p.is_file()) == [Path("mlp/1/model.onnx")]


def _serve_and_quantize(repo: Path, plain: Path, key_file: Path, key: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelport.quantize.int8 import quantize_static
    from modelport.serve.repository import ModelRepository

    with OrtRunner(plain) as runner:
        expected = runner.infer(feeds())["y"]
    monkeypatch.setenv(ENV_KEY_FILE, str(key_file))  # a server started with the key in its environment
    with ModelRepository(repo) as served:
        np.testing.assert_array_equal(served.get("mlp").runner.infer(feeds())["y"], expected)
    monkeypatch.delenv(ENV_KEY_FILE)
    with use_key(key):
        model = serde.load(repo / "mlp" / "1" / "model.onnx")
    quantized = quantize_static(model, [feeds()], op_types=["MatMul"])
    assert any(node.op_type == "QuantizeLinear" for node in quantized.graph)
