"""Ray Data batch inference against the local engine, on one local Ray instance (127.0.0.1, 2 CPUs):
the same input gives the same rows, with the image pipeline and with parquet, and an error raised
on a Ray worker comes back as the modelport error it was."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelport.batch import batch_infer, read_results
from modelport.batch.arrow import parquet, pyarrow
from modelport.errors import InputShapeError
from serve.ray_local import local_ray
from serve.serve_models import expected_top

from .batch_models import mixed_rows, write_images, write_mixed_parquet, write_repository

pytestmark = [
    pytest.mark.slow,
    # Ray's own deprecations, raised by Ray's modules while it imports and sets up its data context.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),
]

# Ray Data cuts batches at its block boundaries, so a row may share its model run with other rows
# than on the local engine; a GEMM over a different number of rows may round differently.
FLOAT_ATOL = 1e-6


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    from modelport.serve.ray_serve import import_ray

    with local_ray():
        import_ray("ray.data").DataContext.get_current().enable_progress_bars = False
        yield


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repository(tmp_path_factory.mktemp("repo"))


def assert_same_results(local: dict[str, np.ndarray[Any, Any]], ray: dict[str, np.ndarray[Any, Any]]) -> None:
    assert set(local) == set(ray)
    for name, want in local.items():
        got = ray[name]
        assert got.dtype == want.dtype, name
        if want.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=0, atol=FLOAT_ATOL, err_msg=name)
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_image_pipeline_gives_the_same_rows_on_both_engines(ray_local: None, repo: Path, tmp_path: Path) -> None:
    pictures = write_images(tmp_path / "in", 7)
    local = batch_infer(repo, tmp_path / "in", tmp_path / "local", model="classify", batch_size=3)
    on_ray = batch_infer(repo, tmp_path / "in", tmp_path / "ray", model="classify", batch_size=3, use_ray=True)
    assert (local.engine, on_ray.engine, local.rows, on_ray.rows) == ("local", "ray", 7, 7)
    results = read_results(on_ray.output)
    assert_same_results(read_results(local.output), results)
    assert list(results["id"]) == sorted(pictures)
    for row, name in enumerate(results["id"]):
        scores, labels = expected_top(pictures[name], 2)
        np.testing.assert_allclose(results["scores"][row], scores, rtol=0, atol=2e-6)
        assert [label.decode() for label in results["labels"][row]] == labels


def test_parquet_folder_gives_the_same_rows_on_both_engines(ray_local: None, repo: Path, tmp_path: Path) -> None:
    x, k = mixed_rows(11)
    (tmp_path / "in").mkdir()
    write_mixed_parquet(tmp_path / "in" / "a.parquet", list(range(6)), x[:6], k[:6])
    write_mixed_parquet(tmp_path / "in" / "b.parquet", list(range(6, 11)), x[6:], k[6:])
    local = batch_infer(repo, tmp_path / "in", tmp_path / "local", model="mixed", batch_size=4)
    on_ray = batch_infer(repo, tmp_path / "in", tmp_path / "ray", model="mixed", batch_size=4, use_ray=True)
    results = read_results(on_ray.output)
    assert_same_results(read_results(local.output), results)
    assert list(results["id"]) == list(range(11))
    np.testing.assert_array_equal(results["y"], x + k[:, None, None].astype(np.float32))
    np.testing.assert_array_equal(results["positive"], k > 0)


def test_a_worker_error_comes_back_as_the_modelport_error(ray_local: None, repo: Path, tmp_path: Path) -> None:
    _, k = mixed_rows(3)
    pa, pq = pyarrow(), parquet()

    cells = pa.array([[1.0] * 6, [1.0] * 6, [1.0] * 4], pa.list_(pa.float32()))
    pq.write_table(pa.table({"id": [0, 1, 2], "x": cells, "k": pa.array(k)}), tmp_path / "in.parquet")
    with pytest.raises(InputShapeError, match=r"row 2 of column 'x' has 4 values, but one sample .* = 6"):
        batch_infer(repo, tmp_path / "in.parquet", tmp_path / "out", model="mixed", use_ray=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]
