"""Offline batch inference on the local engine: each input kind against ONNX Runtime run directly,
the image pipeline against an independent computation, atomic output, and every error path."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelport.batch import batch_infer, find_inputs, read_results
from modelport.batch.arrow import parquet, pyarrow
from modelport.errors import (
    BackendError,
    ConfigError,
    InputDtypeError,
    InputError,
    InputShapeError,
    ModelNotFoundError,
    UnknownInputError,
)
from modelport.ir.serde import save
from modelport.runners.onnxruntime import OrtRunner
from serve.serve_models import expected_top

from .batch_models import (
    affine_model,
    fixed_batch_model,
    mixed_rows,
    write_images,
    write_mixed_parquet,
    write_npy,
    write_repository,
)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repository(tmp_path_factory.mktemp("repo"))


def reference(path: Path, feeds: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
    """The model run directly by ONNX Runtime, on all rows at once."""
    with OrtRunner(path) as runner:
        return runner.infer(feeds)


def test_npy_folder_matches_onnxruntime(repo: Path, tmp_path: Path) -> None:
    samples = write_npy(tmp_path / "in", 10)
    result = batch_infer(repo, tmp_path / "in", tmp_path / "out", model="affine", batch_size=4)
    assert (result.rows, result.engine, result.model) == (10, "local", "model 'affine' version 1")
    assert [p.parent for p in result.files] == [tmp_path / "out"]
    got = read_results(tmp_path / "out")
    assert list(got["id"]) == sorted(samples)
    want = reference(repo / "affine" / "1" / "model.onnx", {"x": np.stack([samples[n] for n in sorted(samples)])})
    # Elementwise arithmetic: batches of 4, 4 and 2 give the very bits of one batch of 10.
    np.testing.assert_array_equal(got["y"], want["y"])
    assert got["y"].dtype == np.float32


def test_npz_folder_feeds_several_inputs(repo: Path, tmp_path: Path) -> None:
    x, k = mixed_rows(6)
    (tmp_path / "in").mkdir()
    for i in range(6):
        np.savez(tmp_path / "in" / f"r{i}.npz", x=x[i], k=k[i])
    batch_infer(repo, tmp_path / "in", tmp_path / "out", model="mixed", batch_size=5)
    got = read_results(tmp_path / "out")
    want = reference(repo / "mixed" / "1" / "model.onnx", {"x": x, "k": k})
    assert list(got["id"]) == [f"r{i}.npz" for i in range(6)]
    for name in ("y", "k_next", "positive"):
        np.testing.assert_array_equal(got[name], want[name])
        assert got[name].dtype == want[name].dtype


@pytest.mark.parametrize("nested", [True, False], ids=["nested-lists", "flattened"])
def test_parquet_columns_per_input(repo: Path, tmp_path: Path, nested: bool) -> None:
    x, k = mixed_rows(9)
    ids = [f"row-{i}" for i in range(9)]
    write_mixed_parquet(tmp_path / "in.parquet", ids, x, k, nested=nested)
    result = batch_infer(repo, tmp_path / "in.parquet", tmp_path / "out", model="mixed", batch_size=4)
    assert result.rows == 9
    got = read_results(tmp_path / "out")
    want = reference(repo / "mixed" / "1" / "model.onnx", {"x": x, "k": k})
    assert list(got["id"]) == ids
    np.testing.assert_array_equal(got["y"], want["y"])
    np.testing.assert_array_equal(got["k_next"], want["k_next"])


def test_image_folder_runs_the_servers_pipeline(repo: Path, tmp_path: Path) -> None:
    pictures = write_images(tmp_path / "in", 7)
    seen: list[int] = []
    result = batch_infer(repo, tmp_path / "in", tmp_path / "out", model="classify", batch_size=3, on_rows=seen.append)
    assert seen == [3, 3, 1]
    assert result.rows == 7
    got = read_results(tmp_path / "out")
    assert set(got) == {"id", "scores", "indices", "labels"}
    for row, name in enumerate(got["id"]):
        scores, labels = expected_top(pictures[name], 2)
        np.testing.assert_allclose(got["scores"][row], scores, rtol=0, atol=2e-6)
        assert [label.decode() for label in got["labels"][row]] == labels


def test_single_onnx_file_is_a_repository(tmp_path: Path) -> None:
    model = save(affine_model(), tmp_path / "affine.onnx")
    samples = write_npy(tmp_path / "in", 3)
    batch_infer(model, tmp_path / "in", tmp_path / "out")
    got = read_results(tmp_path / "out")
    np.testing.assert_array_equal(got["y"], np.stack([samples[n] for n in sorted(samples)]) * 2 + 1)


def test_output_is_refused_when_not_empty_and_replaced_with_force(repo: Path, tmp_path: Path) -> None:
    write_npy(tmp_path / "in", 2)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"output folder .* is not empty — pass another folder, or --force"):
        batch_infer(repo, tmp_path / "in", tmp_path / "out", model="affine")
    batch_infer(repo, tmp_path / "in", tmp_path / "out", model="affine", force=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["part-00000.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # no staging folders left
    with pytest.raises(ConfigError, match=r"is the input .* or contains it"):
        batch_infer(repo, tmp_path / "in", tmp_path, model="affine", force=True)


def test_a_failing_job_leaves_no_output(repo: Path, tmp_path: Path) -> None:
    write_npy(tmp_path / "in", 5)
    np.save(tmp_path / "in" / "s999.npy", np.zeros((1, 3), np.float32))  # the last batch is bad
    with pytest.raises(InputShapeError, match=r"file 's999.npy': input 'x' has shape \[1, 3\], but one sample"):
        batch_infer(repo, tmp_path / "in", tmp_path / "out", model="affine", batch_size=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


# errors ----------------------------------------------------------------------------------------


def test_missing_empty_and_mixed_inputs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"input '.*nowhere' does not exist — pass a folder of images"):
        find_inputs(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"input folder '.*empty' has no files"):
        find_inputs(tmp_path / "empty")
    write_npy(tmp_path / "mixed", 1)
    (tmp_path / "mixed" / "a.png").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"mixes images and npy files"):
        find_inputs(tmp_path / "mixed")
    (tmp_path / "mixed" / "notes.txt").write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"holds notes.txt, which batch-infer cannot read"):
        find_inputs(tmp_path / "mixed")
    (tmp_path / "data.csv").write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"'.*data.csv' is a .csv file"):
        find_inputs(tmp_path / "data.csv")


def test_model_selection(repo: Path, tmp_path: Path) -> None:
    write_npy(tmp_path / "in", 1)
    with pytest.raises(ModelNotFoundError, match=r"model 'afine' is not in repository .* did you mean 'affine'"):
        batch_infer(repo, tmp_path / "in", tmp_path / "out", model="afine")
    with pytest.raises(ConfigError, match=r"serves several models \('affine', 'classify', 'mixed'\) — pick one"):
        batch_infer(repo, tmp_path / "in", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_npy_samples_that_do_not_fit(repo: Path, tmp_path: Path) -> None:
    (tmp_path / "dtype").mkdir()
    np.save(tmp_path / "dtype" / "a.npy", np.zeros(3, np.float64))
    with pytest.raises(InputDtypeError, match=r"file 'a.npy': input 'x' has dtype float64, but .* expects float32"):
        batch_infer(repo, tmp_path / "dtype", tmp_path / "out", model="affine")
    (tmp_path / "size").mkdir()
    np.save(tmp_path / "size" / "a.npy", np.zeros(4, np.float32))
    with pytest.raises(InputShapeError, match=r"has shape \[4\], but one sample of .* \[N, 3\] has shape \[3\]"):
        batch_infer(repo, tmp_path / "size", tmp_path / "out", model="affine")
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "a.npy").write_bytes(b"not numpy")
    with pytest.raises(InputError, match=r"file 'a.npy' is not a readable npy file"):
        batch_infer(repo, tmp_path / "garbage", tmp_path / "out", model="affine")
    with pytest.raises(UnknownInputError, match=r"a folder of npy feeds a model with one input, but .* takes 'x'"):
        batch_infer(repo, tmp_path / "size", tmp_path / "out", model="mixed")


def test_npz_names_must_match(repo: Path, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    np.savez(tmp_path / "in" / "a.npz", x=np.zeros((2, 3), np.float32), kk=np.int64(1))
    with pytest.raises(UnknownInputError, match=r"file 'a.npz' holds 'x', 'kk', but .* takes 'x', 'k'"):
        batch_infer(repo, tmp_path / "in", tmp_path / "out", model="mixed")


def test_images_need_an_image_stage(repo: Path, tmp_path: Path) -> None:
    write_images(tmp_path / "in", 1)
    with pytest.raises(InputDtypeError, match=r"a folder of images feeds encoded image bytes, .* add an image stage"):
        batch_infer(repo, tmp_path / "in", tmp_path / "out", model="affine")


def test_a_broken_image_names_the_stage(repo: Path, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"stage 'preprocess.image': element 0 .* is not a decodable"):
        batch_infer(repo, tmp_path / "in", tmp_path / "out", model="classify")


def test_parquet_that_does_not_fit(repo: Path, tmp_path: Path) -> None:
    pa, pq = pyarrow(), parquet()
    x, k = mixed_rows(2)
    no_id = tmp_path / "no_id.parquet"
    pq.write_table(pa.table({"x": pa.array(x.tolist()), "k": pa.array(k)}), no_id)
    with pytest.raises(ConfigError, match=r"has no 'id' column \(it has x, k\) — add a key per row"):
        batch_infer(repo, no_id, tmp_path / "out", model="mixed")
    missing = tmp_path / "missing.parquet"
    pq.write_table(pa.table({"id": [0, 1], "x": pa.array(x.tolist())}), missing)
    with pytest.raises(UnknownInputError, match=r"has no column 'k', which model 'mixed' version 1 takes"):
        batch_infer(repo, missing, tmp_path / "out", model="mixed")
    doubles = tmp_path / "doubles.parquet"
    pq.write_table(pa.table({"id": [0, 1], "x": pa.array(x.astype(np.float64).tolist()), "k": k}), doubles)
    with pytest.raises(InputDtypeError, match=r"column 'x' .* holds double values \(float64\), but .* float32"):
        batch_infer(repo, doubles, tmp_path / "out", model="mixed")
    short = tmp_path / "short.parquet"
    pq.write_table(
        pa.table({"id": [0, 1], "x": pa.array([[1.0] * 6, [1.0] * 5], pa.list_(pa.float32())), "k": k}), short
    )
    with pytest.raises(InputShapeError, match=r"row 1 of column 'x' has 5 values, but one sample .* = 6"):
        batch_infer(repo, short, tmp_path / "out", model="mixed")
    holes = tmp_path / "holes.parquet"
    pq.write_table(pa.table({"id": [0, 1], "x": pa.array([x[0].tolist(), None]), "k": k}), holes)
    with pytest.raises(InputError, match=r"column 'x' of the parquet input has 1 empty \(null\) values"):
        batch_infer(repo, holes, tmp_path / "out", model="mixed")


def test_parquet_files_of_a_folder_share_one_schema(repo: Path, tmp_path: Path) -> None:
    x, k = mixed_rows(4)
    (tmp_path / "in").mkdir()
    write_mixed_parquet(tmp_path / "in" / "a.parquet", [0, 1], x[:2], k[:2], nested=True)
    write_mixed_parquet(tmp_path / "in" / "b.parquet", [2, 3], x[2:], k[2:], nested=False)
    with pytest.raises(ConfigError, match=r"parquet files 'a.parquet' and 'b.parquet' .* have different schemas"):
        batch_infer(repo, tmp_path / "in", tmp_path / "out", model="mixed")


def test_models_without_a_usable_batch_axis_are_refused(tmp_path: Path) -> None:
    model = save(fixed_batch_model(), tmp_path / "fixed.onnx")
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "a.npy", np.zeros(3, np.float32))
    with pytest.raises(InputShapeError, match=r"fixes axis 0 of input 'x' \[4, 3\] to 4, .* dynamic batch axis"):
        batch_infer(model, tmp_path / "in", tmp_path / "out")


def test_bad_options(repo: Path, tmp_path: Path) -> None:
    write_npy(tmp_path / "in", 1)
    with pytest.raises(ConfigError, match=r"batch size must be at least 1, got 0"):
        batch_infer(repo, tmp_path / "in", tmp_path / "out", model="affine", batch_size=0)
    with pytest.raises(ConfigError, match=r"actors must be at least 1, got 0"):
        batch_infer(repo, tmp_path / "in", tmp_path / "out", model="affine", use_ray=True, actors=0)
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"output '.*file' is a file — pass a folder"):
        batch_infer(repo, tmp_path / "in", tmp_path / "file", model="affine")


def test_ray_missing_names_the_extra(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_npy(tmp_path / "in", 1)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(BackendError, match=r"Ray is not installed, and --ray needs it — install the 'ray' extra"):
        batch_infer(repo, tmp_path / "in", tmp_path / "out", model="affine", use_ray=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
