"""Bundles: pack a repository, open it again safely, serve it; every refusal on the way."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelport.errors import ModelSaveError, RepositoryError
from modelport.pack.bundle import (
    CARD_NAME,
    REQUIREMENTS_NAME,
    extract_bundle,
    is_bundle,
    open_bundle,
    pack,
    rewrite_manifest,
)
from modelport.pack.card import CardInfo
from modelport.pack.checksum import MANIFEST_NAME, read_manifest, sha256_file, verify_manifest, write_manifest
from modelport.runners.onnxruntime import OrtRunner
from modelport.serve import HEADER_LENGTH, ModelRepository, create_app, decode_response, encode_request
from serve.serve_models import mixed_model, write_version

Arrays = dict[str, np.ndarray[Any, Any]]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository as deploy leaves it: two versions, a config, a manifest."""
    root = tmp_path / "repository"
    write_version(root, "mixed", 1, mixed_model(offset=1))
    write_version(root, "mixed", 2, mixed_model(offset=2))
    (root / "mixed" / "config.yaml").write_text("version_policy: all\nmax_batch_size: 8\n", encoding="utf-8")
    write_manifest(root)
    return root


def members(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle, "r:gz") as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else b"") for m in tar.getmembers()}  # type: ignore[union-attr]


def feeds() -> Arrays:
    rng = np.random.default_rng(11)
    return {"x": rng.standard_normal((3, 3)).astype(np.float32), "k": np.array([-2, 0, 5], dtype=np.int64)}


# pack -------------------------------------------------------------------------------------------


def test_pack_writes_repository_manifest_card_and_requirements(tmp_path: Path, repo: Path) -> None:
    result = pack(repo, tmp_path / "out" / "mixed-bundle.tar.gz", card=CardInfo(license="MIT"))
    assert result.path == tmp_path / "out" / "mixed-bundle.tar.gz"
    assert (result.top, result.models, result.manifest_rewritten) == ("mixed-bundle", ["mixed"], False)
    content = members(result.path)
    assert sorted(content) == [
        "mixed-bundle",
        *(
            f"mixed-bundle/{name}"
            for name in sorted(
                [
                    CARD_NAME,
                    MANIFEST_NAME,
                    REQUIREMENTS_NAME,
                    "mixed/1/model.onnx",
                    "mixed/2/model.onnx",
                    "mixed/config.yaml",
                ]
            )
        ),
    ]
    for name in ("mixed/1/model.onnx", "mixed/2/model.onnx", "mixed/config.yaml"):
        assert content[f"mixed-bundle/{name}"] == (repo / name).read_bytes()
    manifest = json.loads(content[f"mixed-bundle/{MANIFEST_NAME}"])
    assert sorted(manifest["files"]) == sorted(result.files)
    assert manifest["files"]["mixed/1/model.onnx"]["sha256"] == sha256_file(repo / "mixed" / "1" / "model.onnx")
    assert "| License | MIT |" in content[f"mixed-bundle/{CARD_NAME}"].decode()
    assert content[f"mixed-bundle/{REQUIREMENTS_NAME}"].decode().splitlines()[1] == "modelport==0.1.0"
    with tarfile.open(result.path, "r:gz") as tar:
        assert {(m.uid, m.gid, m.uname, m.gname) for m in tar.getmembers()} == {(0, 0, "", "")}
    assert [p.name for p in result.path.parent.iterdir()] == ["mixed-bundle.tar.gz"]  # no temporary left
    assert verify_manifest(repo) == []  # the repository is not touched


def test_pack_then_serve_the_bundle(tmp_path: Path, repo: Path) -> None:
    bundle = pack(repo, tmp_path / "bundle.tgz").path
    inputs = feeds()
    with open_bundle(bundle) as root:
        assert root.name == "bundle" and (root / MANIFEST_NAME).exists()
        served = _serve_and_infer(root, inputs)
        scratch = root.parent
    assert not scratch.exists()  # the private folder is removed on exit
    with OrtRunner(repo / "mixed" / "2" / "model.onnx", graph_optimization="disable") as runner:
        expected = runner.infer(inputs)
    assert served.keys() == expected.keys()
    for name, value in expected.items():
        assert served[name].dtype == value.dtype
        np.testing.assert_allclose(served[name], value, rtol=0, atol=1e-6)


def _serve_and_infer(root: Path, inputs: Arrays) -> Arrays:
    import anyio

    async def run() -> Arrays:
        app = create_app(ModelRepository(root))
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://modelport") as client,
        ):
            ready = await client.get("/v2/models/mixed/versions/2/ready")
            assert ready.status_code == 200
            encoded = encode_request(inputs, binary=True)
            response = await client.post(
                "/v2/models/mixed/versions/2/infer", content=encoded.body, headers=encoded.headers
            )
            assert response.status_code == 200, response.text
            return decode_response(response.content, response.headers.get(HEADER_LENGTH)).outputs

    return anyio.run(run)


def test_open_bundle_cleans_up_when_the_body_fails(tmp_path: Path, repo: Path) -> None:
    bundle = pack(repo, tmp_path / "b.tar.gz").path
    seen: list[Path] = []
    with pytest.raises(KeyError), open_bundle(bundle) as root:
        seen.append(root)
        raise KeyError("boom")
    assert not seen[0].exists() and not seen[0].parent.exists()


def test_an_existing_output_needs_force(tmp_path: Path, repo: Path) -> None:
    target = tmp_path / "b.tar.gz"
    target.write_bytes(b"keep me")
    with pytest.raises(
        ModelSaveError, match=r"'.*b.tar.gz' already exists — pass --force \(force=True\) to replace it"
    ):
        pack(repo, target)
    assert target.read_bytes() == b"keep me"
    pack(repo, target, force=True)
    assert is_bundle(target) and tarfile.is_tarfile(target)


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("bundle.zip", r"must end with .tar.gz or .tgz"),
        ("repository/inside.tar.gz", r"lies inside the repository .* it packs — write it elsewhere"),
        ("folder.tar.gz", r"is a folder — name a file"),
    ],
)
def test_bad_outputs_are_refused(tmp_path: Path, repo: Path, name: str, match: str) -> None:
    (tmp_path / "folder.tar.gz").mkdir()
    with pytest.raises(ModelSaveError, match=match):
        pack(repo, tmp_path / name)


def test_pack_needs_a_repository_folder(tmp_path: Path, repo: Path) -> None:
    with pytest.raises(RepositoryError, match=r"is not a repository folder — pack needs REPO/<name>/<version>"):
        pack(repo / "mixed" / "1" / "model.onnx", tmp_path / "b.tar.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RepositoryError, match=r"has no model folders"):
        pack(tmp_path / "empty", tmp_path / "b.tar.gz")
    assert not (tmp_path / "b.tar.gz").exists()


def test_a_tampered_repository_is_not_packed(tmp_path: Path, repo: Path) -> None:
    model = repo / "mixed" / "1" / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(
        RepositoryError,
        match=r"repository '.*' does not match its manifest: mixed/1/model.onnx: sha256 on disk is [0-9a-f]{12}…, "
        r"the manifest lists [0-9a-f]{12}… \(modified or corrupt\) — packing it would hide the change; restore the "
        r"files \(re-run `modelport deploy`\), or pass --rewrite-manifest",
    ):
        pack(repo, tmp_path / "b.tar.gz")
    assert list(tmp_path.glob("*.tar.gz")) == [] and list(tmp_path.glob(".b.tar.gz*")) == []


def test_rewrite_manifest_accepts_the_files_as_they_are(tmp_path: Path, repo: Path) -> None:
    (repo / "mixed" / "2" / "extra.txt").write_text("notes", encoding="utf-8")
    result = pack(repo, tmp_path / "b.tar.gz", rewrite_manifest=True)
    assert result.manifest_rewritten
    assert verify_manifest(repo) == []  # the repository's own manifest now lists the file
    assert "mixed/2/extra.txt" in read_manifest(repo).files
    with open_bundle(result.path) as root:
        assert (root / "mixed" / "2" / "extra.txt").read_text(encoding="utf-8") == "notes"


def test_rewrite_manifest_alone(repo: Path, tmp_path: Path) -> None:
    (repo / "mixed" / "config.yaml").write_text("version_policy: all\n", encoding="utf-8")
    assert rewrite_manifest(repo) == repo / MANIFEST_NAME
    assert verify_manifest(repo) == []
    with pytest.raises(RepositoryError, match=r"is not a repository folder"):
        rewrite_manifest(tmp_path / "nope")
    (repo / "mixed" / "config.yaml").write_text("instance_count: 0\n", encoding="utf-8")
    with pytest.raises(RepositoryError, match=r"config.yaml' is invalid: instance_count"):
        rewrite_manifest(repo)  # a malformed repository is not signed


def test_a_file_changed_while_packing_is_caught(tmp_path: Path, repo: Path) -> None:
    later = repo / "mixed" / "config.yaml"  # packed after both model files (sorted order)

    def tamper(done: int, total: int) -> None:
        later.write_text("version_policy: all\nmax_batch_size: 4\n", encoding="utf-8")

    with pytest.raises(
        RepositoryError,
        match=r"repository '.*' changed while it was being packed: mixed/config.yaml: sha256 on disk is .* — "
        r"nothing was written",
    ):
        pack(repo, tmp_path / "b.tar.gz", progress=tamper)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repository"]


def test_a_repository_without_manifest_is_packed_as_it_is(tmp_path: Path, repo: Path) -> None:
    (repo / MANIFEST_NAME).unlink()
    with open_bundle(pack(repo, tmp_path / "b.tar.gz").path) as root:
        assert verify_manifest(root) == []
    assert not (repo / MANIFEST_NAME).exists()


def test_an_opened_bundle_packs_again(tmp_path: Path, repo: Path) -> None:
    first = pack(repo, tmp_path / "first.tar.gz").path
    with open_bundle(first) as root:
        second = pack(root, tmp_path / "second.tar.gz", card=CardInfo(intended_use="demo"))
    content = members(second.path)
    assert sum(name.endswith(CARD_NAME) for name in content) == 1  # the card is replaced, not packed twice
    assert "**Intended use.** demo" in content[f"second/{CARD_NAME}"].decode()


def test_progress_counts_every_byte(tmp_path: Path, repo: Path) -> None:
    calls: list[tuple[int, int]] = []
    pack(repo, tmp_path / "b.tar.gz", progress=lambda done, total: calls.append((done, total)))
    total = sum(p.stat().st_size for p in repo.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    assert calls[-1] == (total, total)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


# opening: refusals ------------------------------------------------------------------------------


def make_tar(path: Path, entries: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> Path:
    data = data or {}
    with tarfile.open(path, "w:gz") as tar:
        for info in entries:
            payload = data.get(info.name, b"")
            if info.isfile():
                info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload) if info.isfile() else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        (member("b/../../evil.txt"), r"holds 'b/../../evil.txt', a path outside the bundle \(absolute or with '..'\)"),
        (member("/etc/evil.txt"), r"holds '/etc/evil.txt', a path outside the bundle \(absolute or with '..'\)"),
        (member("b/link", tarfile.SYMTYPE, "/etc/passwd"), r"holds 'b/link', a symbolic link to '/etc/passwd'"),
        (member("b/hard", tarfile.LNKTYPE, "b/manifest.json"), r"holds 'b/hard', a hard link to 'b/manifest.json'"),
        (member("b/dev", tarfile.CHRTYPE), r"holds 'b/dev', a device or FIFO"),
        (member("b/fifo", tarfile.FIFOTYPE), r"holds 'b/fifo', a device or FIFO"),
    ],
)
def test_unsafe_members_are_refused(tmp_path: Path, entry: tarfile.TarInfo, match: str) -> None:
    bundle = make_tar(tmp_path / "evil.tar.gz", [member("b/ok.txt"), entry], {"b/ok.txt": b"ok"})
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RepositoryError, match=match + r" — refusing to extract it"):
        extract_bundle(bundle, out)
    assert list(out.iterdir()) == []  # nothing was extracted
    assert not (tmp_path / "evil.txt").exists()


def test_a_bundle_larger_than_the_free_disk_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A gzip bomb declares its size in the tar headers: it is refused before anything is written."""
    import shutil
    from collections import namedtuple

    bundle = make_tar(tmp_path / "big.tar.gz", [member("b/zeros.bin")], {"b/zeros.bin": bytes(4 << 20)})
    assert bundle.stat().st_size < 64 << 10  # 4 MiB of zeros compress to a few KiB
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 40, 0, 100 << 20))  # 100 MiB free
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RepositoryError, match=r"unpacks to 0\.00 GiB, but only 0\.10 GiB are free .* point TMPDIR"):
        extract_bundle(bundle, out)
    assert list(out.iterdir()) == []


def test_a_modified_bundle_is_refused(tmp_path: Path, repo: Path) -> None:
    content = members(pack(repo, tmp_path / "b.tar.gz").path)
    content["b/mixed/config.yaml"] = b"version_policy: all\nmax_batch_size: 2\n"
    files = [name for name in content if name != "b"]
    forged = make_tar(tmp_path / "forged.tar.gz", [member(name) for name in files], content)
    with (
        pytest.raises(
            RepositoryError,
            match=r"bundle '.*forged.tar.gz' does not match its manifest: mixed/config.yaml: sha256 on disk is .* "
            r"— it was modified or corrupted after packing",
        ),
        open_bundle(forged),
    ):
        pass


def test_a_bundle_without_manifest_is_refused(tmp_path: Path) -> None:
    bundle = make_tar(tmp_path / "b.tar.gz", [member("b/m/1/model.onnx")], {"b/m/1/model.onnx": b"x"})
    with (
        pytest.raises(RepositoryError, match=r"has no manifest.json — its files cannot be verified"),
        open_bundle(bundle),
    ):
        pass


@pytest.mark.parametrize("payload", [b"not a tar at all", b"\x1f\x8b\x08\x00truncated gzip"])
def test_unreadable_bundles_are_refused(tmp_path: Path, payload: bytes) -> None:
    bundle = tmp_path / "b.tar.gz"
    bundle.write_bytes(payload)
    with pytest.raises(RepositoryError, match=r"cannot be read as a .tar.gz .* pack it again"), open_bundle(bundle):
        pass


def test_a_truncated_bundle_is_refused(tmp_path: Path, repo: Path) -> None:
    bundle = pack(repo, tmp_path / "b.tar.gz").path
    bundle.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    with pytest.raises(RepositoryError, match=r"cannot be read as a .tar.gz"), open_bundle(bundle):
        pass


def test_a_missing_bundle_is_refused(tmp_path: Path) -> None:
    with (
        pytest.raises(RepositoryError, match=r"bundle '.*nope.tar.gz' does not exist"),
        open_bundle(tmp_path / "nope.tar.gz"),
    ):
        pass


def test_a_bundle_without_a_top_folder_opens_at_its_root(tmp_path: Path, repo: Path) -> None:
    content = members(pack(repo, tmp_path / "b.tar.gz").path)
    flat = {name.removeprefix("b/"): data for name, data in content.items() if name != "b"}
    bundle = make_tar(tmp_path / "flat.tar.gz", [member(name) for name in flat], flat)
    with open_bundle(bundle) as root:
        assert (root / MANIFEST_NAME).exists() and (root / "mixed" / "1" / "model.onnx").exists()


def test_a_malformed_manifest_is_refused_unless_rewritten(tmp_path: Path, repo: Path) -> None:
    (repo / MANIFEST_NAME).write_text("{broken", encoding="utf-8")
    with pytest.raises(RepositoryError, match=r"manifest.json' is not a modelport manifest: it is not JSON"):
        pack(repo, tmp_path / "b.tar.gz")
    assert rewrite_manifest(repo) == repo / MANIFEST_NAME
    assert verify_manifest(repo) == []
    (repo / MANIFEST_NAME).write_text("{broken", encoding="utf-8")
    assert pack(repo, tmp_path / "b.tar.gz", rewrite_manifest=True).manifest_rewritten
    assert verify_manifest(repo) == []
