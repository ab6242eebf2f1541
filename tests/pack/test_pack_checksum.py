"""Integrity manifests: write, verify, and every kind of tampering."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from modelport.errors import RepositoryError
from modelport.pack.checksum import MANIFEST_NAME, sha256_file, verify_manifest, write_manifest


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    (root / "1").mkdir(parents=True)
    (root / "1" / "model.onnx").write_bytes(bytes(range(256)) * 4)
    (root / "config.yaml").write_text("max_batch_size: 8\n", encoding="utf-8")
    (root / "empty.txt").write_bytes(b"")
    return root


def test_write_then_verify_is_clean(bundle: Path) -> None:
    target = write_manifest(bundle)
    assert target == bundle / MANIFEST_NAME
    assert verify_manifest(bundle) == []


def test_manifest_contents(bundle: Path) -> None:
    data = json.loads(write_manifest(bundle).read_text(encoding="utf-8"))
    assert data["algorithm"] == "sha256"
    assert sorted(data["files"]) == ["1/model.onnx", "config.yaml", "empty.txt"]
    model = data["files"]["1/model.onnx"]
    assert model["bytes"] == 1024
    assert model["sha256"] == hashlib.sha256(bytes(range(256)) * 4).hexdigest()
    assert data["files"]["empty.txt"] == {"sha256": hashlib.sha256(b"").hexdigest(), "bytes": 0}


def test_no_temp_files_left(bundle: Path) -> None:
    write_manifest(bundle)
    write_manifest(bundle)  # rewriting replaces the manifest, it does not list it
    names = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    assert names == ["1/model.onnx", "config.yaml", "empty.txt", MANIFEST_NAME]
    assert verify_manifest(bundle) == []


def test_modified_byte_is_reported(bundle: Path) -> None:
    write_manifest(bundle)
    model = bundle / "1" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[500] ^= 0x01
    model.write_bytes(bytes(data))
    assert verify_manifest(bundle) == ["1/model.onnx: sha256 differs from the manifest (modified or corrupt)"]


def test_extra_file_is_reported(bundle: Path) -> None:
    write_manifest(bundle)
    (bundle / "1" / "model.onnx.data").write_bytes(b"\x00" * 16)
    assert verify_manifest(bundle) == ["1/model.onnx.data: not in the manifest"]


def test_missing_file_is_reported(bundle: Path) -> None:
    write_manifest(bundle)
    (bundle / "config.yaml").unlink()
    assert verify_manifest(bundle) == ["config.yaml: missing"]


def test_all_problems_reported_together(bundle: Path) -> None:
    write_manifest(bundle)
    (bundle / "config.yaml").write_text("max_batch_size: 9\n", encoding="utf-8")
    (bundle / "empty.txt").unlink()
    (bundle / "new.bin").write_bytes(b"x")
    assert verify_manifest(bundle) == [
        "config.yaml: sha256 differs from the manifest (modified or corrupt)",
        "empty.txt: missing",
        "new.bin: not in the manifest",
    ]


def test_missing_manifest(bundle: Path) -> None:
    with pytest.raises(RepositoryError, match=r"'.*bundle' has no manifest\.json — write one with write_manifest\(\)"):
        verify_manifest(bundle)


@pytest.mark.parametrize("text", ["not json", '{"algorithm": "sha256"}'])
def test_malformed_manifest(bundle: Path, text: str) -> None:
    (bundle / MANIFEST_NAME).write_text(text, encoding="utf-8")
    with pytest.raises(RepositoryError, match=r"manifest\.json' is not a modelport manifest"):
        verify_manifest(bundle)


def test_sha256_file_streams_large_files(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    data = b"0123456789abcdef" * (1 << 17)  # 2 MiB: more than one read chunk
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("text", ["[]", '{"files": []}', '{"files": {"config.yaml": {}}}'])
def test_wrongly_shaped_manifest(bundle: Path, text: str) -> None:
    (bundle / MANIFEST_NAME).write_text(text, encoding="utf-8")
    with pytest.raises(RepositoryError, match="is not a modelport manifest"):
        verify_manifest(bundle)
