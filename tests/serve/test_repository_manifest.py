"""A repository with a manifest: each version's files are checked before its sessions are created.

A changed, missing or unlisted file refuses that version (naming the file and both digests), the
other versions still load; a running server keeps serving the old version when a file changes, and
takes the new one once the manifest is rewritten.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

from modelport.errors import RepositoryError
from modelport.pack.checksum import MANIFEST_NAME, write_manifest
from modelport.runners.onnxruntime import OrtRunner
from modelport.serve import InferenceRequest, ModelRepository
from modelport.serve.core import InferenceCore

from .serve_models import mixed_model, write_version

Arrays = dict[str, np.ndarray[Any, Any]]
DIGEST = r"[0-9a-f]{12}…"


def make_repo(root: Path, versions: tuple[int, ...] = (1,), config: str = "") -> Path:
    for version in versions:
        write_version(root, "mixed", version, mixed_model(offset=version))
    (root / "mixed" / "config.yaml").write_text(config, encoding="utf-8")
    write_manifest(root)
    return root


def replace_model(path: Path, offset: int) -> None:
    """Write another model over ``path``, with an mtime hot reload cannot miss."""
    before = path.stat().st_mtime_ns
    write_version(path.parent.parent.parent, path.parent.parent.name, path.parent.name, mixed_model(offset=offset))
    os.utime(path, ns=(before + 10**9, before + 10**9))


def flip_byte(path: Path, at: int = 40) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def sample() -> Arrays:
    rng = np.random.default_rng(3)
    return {"x": rng.standard_normal((2, 3)).astype(np.float32), "k": np.array([4, -1], dtype=np.int64)}


def reference(path: Path, feeds: Arrays) -> Arrays:
    with OrtRunner(path, graph_optimization="disable") as runner:
        return runner.infer(feeds)


# load-time checks -------------------------------------------------------------------------------


def test_an_intact_repository_loads_and_infers(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    feeds = sample()
    with ModelRepository(root) as repository:
        model = repository.get("mixed")
        assert model.integrity is not None
        assert [path for path, _ in model.integrity.expected] == ["mixed/1/model.onnx", "mixed/config.yaml"]
        outputs = model.runner.infer(feeds)
    expected = reference(root / "mixed" / "1" / "model.onnx", feeds)
    for name, value in expected.items():
        np.testing.assert_allclose(outputs[name], value, rtol=0, atol=1e-6)


def test_a_changed_byte_refuses_the_version_before_any_session(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    flip_byte(root / "mixed" / "1" / "model.onnx")
    repository = ModelRepository(root)  # scanning does not hash; loading does
    model = repository.get("mixed")
    pattern = (
        rf"model 'mixed' version 1 does not match the repository manifest '.*{MANIFEST_NAME}': "
        rf"mixed/1/model.onnx: sha256 on disk is {DIGEST}, the manifest lists {DIGEST} \(modified or corrupt\) "
        r"— restore the verified files; if the change is intended, rewrite the manifest "
        r"\(`modelport pack .* --rewrite-manifest`, or re-run "
        r"`modelport deploy`\); to serve without integrity checks, delete .*manifest.json"
    )
    with pytest.raises(RepositoryError, match=pattern):
        repository.load()
    assert not any(runner.is_active for runner in model.runners)


def test_a_missing_listed_file_refuses_the_version(tmp_path: Path) -> None:
    root = tmp_path
    write_version(root, "mixed", 1, mixed_model())
    (root / "mixed" / "1" / "labels.txt").write_text("cat\ndog\n", encoding="utf-8")
    write_manifest(root)
    (root / "mixed" / "1" / "labels.txt").unlink()
    with pytest.raises(RepositoryError, match=rf"mixed/1/labels.txt: missing \(the manifest lists sha256 {DIGEST}\)"):
        ModelRepository(root).load()


def test_an_unlisted_file_refuses_the_version(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    (root / "mixed" / "1" / "model.onnx.data").write_bytes(b"\0" * 64)
    with pytest.raises(
        RepositoryError, match=rf"mixed/1/model.onnx.data: not in the manifest \(sha256 on disk {DIGEST}\)"
    ):
        ModelRepository(root).load()


def test_a_changed_config_refuses_every_version_of_its_model(tmp_path: Path) -> None:
    root = make_repo(tmp_path, versions=(1, 2), config="version_policy: all\n")
    (root / "mixed" / "config.yaml").write_text("version_policy: all\nmax_queue_size: 3\n", encoding="utf-8")
    repository = ModelRepository(root)
    for version in (1, 2):
        with pytest.raises(RepositoryError, match=rf"version {version} does not match .* mixed/config.yaml: sha256"):
            repository.get("mixed", version).load()


def test_a_tampered_version_does_not_refuse_its_siblings(tmp_path: Path) -> None:
    root = make_repo(tmp_path, versions=(1, 2), config="version_policy: all\n")
    write_version(root, "other", 1, mixed_model(offset=7))
    write_manifest(root)
    flip_byte(root / "mixed" / "2" / "model.onnx")
    repository = ModelRepository(root)
    with pytest.raises(RepositoryError, match=r"model 'mixed' version 2 does not match"):
        repository.get("mixed", 2).load()
    for model in (repository.get("mixed", 1), repository.get("other")):
        model.load()
        assert model.ready
        model.unload()


def test_no_manifest_means_no_check(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    (root / MANIFEST_NAME).unlink()
    (root / "mixed" / "1" / "notes.txt").write_text("anything", encoding="utf-8")
    with ModelRepository(root) as repository:
        assert repository.get("mixed").integrity is None
        assert repository.ready


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{not json", "it is not JSON"),
        (json.dumps({"files": {"../../etc/passwd": {"sha256": "0" * 64}}}), "not a plain relative path"),
        (json.dumps({"files": {"mixed/config.yaml": {"sha256": "short"}}}), "64 lowercase hex digits"),
    ],
)
def test_a_malformed_manifest_fails_the_scan(tmp_path: Path, text: str, why: str) -> None:
    root = make_repo(tmp_path)
    (root / MANIFEST_NAME).write_text(text, encoding="utf-8")
    with pytest.raises(RepositoryError, match=rf"manifest.json' is not a modelport manifest: .*{why}"):
        ModelRepository(root)


# a running server -------------------------------------------------------------------------------


async def offset_served(core: InferenceCore) -> int:
    """The offset of the model serving 'mixed' (k_next = k + offset)."""
    result = await core.infer("mixed", None, InferenceRequest(inputs=sample()))
    return int(result.outputs["k_next"][0] - 4)


@pytest.mark.anyio
async def test_reload_refuses_a_changed_file_until_the_manifest_is_rewritten(
    tmp_path: Path, started: Callable[..., Any]
) -> None:
    root = make_repo(tmp_path)
    core = await started(root)
    assert await offset_served(core) == 1
    replace_model(root / "mixed" / "1" / "model.onnx", offset=5)
    with pytest.raises(RepositoryError, match=r"mixed/1/model.onnx: sha256 on disk is .* \(modified or corrupt\)"):
        await core.load_model("mixed")
    [entry] = core.repository_index()
    assert "does not match the repository manifest" in entry["reason"]
    assert "mixed/1/model.onnx" in entry["reason"]
    assert await offset_served(core) == 1  # the verified model keeps serving
    write_manifest(root)
    await core.load_model("mixed")
    assert await offset_served(core) == 5
    assert core.model_ready("mixed")


@pytest.mark.anyio
async def test_hot_reload_under_a_manifest(tmp_path: Path, started: Callable[..., Any]) -> None:
    root = make_repo(tmp_path)
    core = await started(root, poll_interval=0.02)
    replace_model(root / "mixed" / "1" / "model.onnx", offset=6)
    with anyio.fail_after(20):
        while "does not match" not in core.repository_index()[0]["reason"]:
            await asyncio.sleep(0.02)
    assert await offset_served(core) == 1
    write_manifest(root)
    with anyio.fail_after(20):
        while await offset_served(core) != 6:
            await asyncio.sleep(0.02)
    assert core.repository.get("mixed").integrity is not None


def test_verify_false_ignores_the_manifest(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    (root / "mixed" / "config.yaml").write_text("max_queue_size: 5\n", encoding="utf-8")
    (root / "mixed" / "1" / "notes.txt").write_text("unlisted", encoding="utf-8")
    (root / MANIFEST_NAME).write_text("{not even json", encoding="utf-8")
    with ModelRepository(root, verify=False) as repository:
        assert repository.get("mixed").integrity is None
        assert repository.ready
