"""Integrity manifests: write, verify, and every kind of tampering."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from modelport.errors import RepositoryError
from modelport.pack.checksum import (
    MANIFEST_NAME,
    FileDigest,
    Mismatch,
    compare_digests,
    read_manifest,
    sha256_file,
    verify_manifest,
    write_manifest,
)


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
    was, now = hashlib.sha256(bytes(range(256)) * 4).hexdigest(), hashlib.sha256(data).hexdigest()
    assert verify_manifest(bundle) == [
        f"1/model.onnx: sha256 on disk is {now[:12]}…, the manifest lists {was[:12]}… (modified or corrupt)"
    ]


def test_extra_file_is_reported(bundle: Path) -> None:
    write_manifest(bundle)
    (bundle / "1" / "model.onnx.data").write_bytes(b"\x00" * 16)
    digest = hashlib.sha256(b"\x00" * 16).hexdigest()
    assert verify_manifest(bundle) == [f"1/model.onnx.data: not in the manifest (sha256 on disk {digest[:12]}…)"]


def test_missing_file_is_reported(bundle: Path) -> None:
    write_manifest(bundle)
    (bundle / "config.yaml").unlink()
    digest = hashlib.sha256(b"max_batch_size: 8\n").hexdigest()
    assert verify_manifest(bundle) == [f"config.yaml: missing (the manifest lists sha256 {digest[:12]}…)"]


def test_all_problems_reported_together(bundle: Path) -> None:
    write_manifest(bundle)
    (bundle / "config.yaml").write_text("max_batch_size: 9\n", encoding="utf-8")
    (bundle / "empty.txt").unlink()
    (bundle / "new.bin").write_bytes(b"x")

    def short(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()[:12] + "…"

    now, was = short(b"max_batch_size: 9\n"), short(b"max_batch_size: 8\n")
    assert verify_manifest(bundle) == [
        f"config.yaml: sha256 on disk is {now}, the manifest lists {was} (modified or corrupt)",
        f"empty.txt: missing (the manifest lists sha256 {short(b'')})",
        f"new.bin: not in the manifest (sha256 on disk {short(b'x')})",
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


# reading and validating ----------------------------------------------------------------------


def test_read_manifest_and_check_a_subset(bundle: Path) -> None:
    write_manifest(bundle)
    manifest = read_manifest(bundle)
    assert manifest.path == bundle / MANIFEST_NAME
    assert manifest.root == bundle
    assert sorted(manifest.files) == ["1/model.onnx", "config.yaml", "empty.txt"]
    (bundle / "config.yaml").write_text("changed\n", encoding="utf-8")
    (bundle / "1" / "extra.bin").write_bytes(b"x")
    only_version = manifest.check(lambda name: name.startswith("1/"))
    assert [(m.path, m.problem) for m in only_version] == [("1/extra.bin", "unlisted")]
    assert [(m.path, m.problem) for m in manifest.check()] == [
        ("1/extra.bin", "unlisted"),
        ("config.yaml", "modified"),
    ]
    assert manifest.covering(lambda name: name.endswith(".txt")) == {"empty.txt": hashlib.sha256(b"").hexdigest()}


def test_compare_digests_names_both_digests() -> None:
    a, b = "a" * 64, "b" * 64
    problems = compare_digests({"same": a, "changed": a, "gone": a}, {"same": a, "changed": b, "new": b})
    assert problems == [
        Mismatch("changed", "modified", expected=a, actual=b),
        Mismatch("gone", "missing", expected=a),
        Mismatch("new", "unlisted", actual=b),
    ]
    assert (
        str(problems[0])
        == "changed: sha256 on disk is bbbbbbbbbbbb…, the manifest lists aaaaaaaaaaaa… (modified or corrupt)"
    )


def test_write_manifest_from_given_digests(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"abc")
    digest = FileDigest(hashlib.sha256(b"abc").hexdigest(), 3)
    write_manifest(tmp_path, {"a.bin": digest})
    assert read_manifest(tmp_path).files == {"a.bin": digest.sha256}
    assert json.loads((tmp_path / MANIFEST_NAME).read_text(encoding="utf-8"))["files"]["a.bin"]["bytes"] == 3
    assert verify_manifest(tmp_path) == []


def test_a_nested_file_named_manifest_json_is_listed(bundle: Path) -> None:
    (bundle / "1" / MANIFEST_NAME).write_text("{}", encoding="utf-8")
    write_manifest(bundle)
    assert "1/manifest.json" in read_manifest(bundle).files


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../outside.txt", "not a plain relative path"),
        ("/etc/passwd", "not a plain relative path"),
        ("a\\b", "not a plain relative path"),
        ("./config.yaml", "not a plain relative path"),
        ("", "not a plain relative path"),
    ],
)
def test_manifest_paths_must_stay_inside(bundle: Path, name: str, why: str) -> None:
    text = json.dumps({"files": {name: {"sha256": "0" * 64}}})
    (bundle / MANIFEST_NAME).write_text(text, encoding="utf-8")
    with pytest.raises(RepositoryError, match=why):
        read_manifest(bundle)


@pytest.mark.parametrize("digest", ["abc", "G" * 64, "A" * 64, 5])
def test_manifest_digests_must_be_sha256_hex(bundle: Path, digest: object) -> None:
    (bundle / MANIFEST_NAME).write_text(json.dumps({"files": {"config.yaml": {"sha256": digest}}}), encoding="utf-8")
    with pytest.raises(RepositoryError, match=r"the entry of 'config.yaml' must be \{\"sha256\": <64 lowercase hex"):
        read_manifest(bundle)


def test_manifest_with_another_algorithm_is_refused(bundle: Path) -> None:
    (bundle / MANIFEST_NAME).write_text(json.dumps({"algorithm": "md5", "files": {}}), encoding="utf-8")
    with pytest.raises(RepositoryError, match=r"uses checksum algorithm 'md5'; modelport reads 'sha256' — rewrite it"):
        read_manifest(bundle)
