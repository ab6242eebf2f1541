"""Loading and saving models: paths, bytes, corrupt files, atomic writes, external data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from modelport.errors import InvalidModelError, ModelLoadError, ModelSaveError
from modelport.ir.serde import (
    check_model,
    clone,
    from_bytes,
    load,
    save,
    source_path,
    to_bytes,
)

Arrays = dict[str, np.ndarray[Any, Any]]


def small_model() -> ir.Model:
    """y = relu(x + b) with a dynamic batch."""
    return ir.from_onnx_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3] x) => (float[N, 3] y)
        <float[3] b = {1.0, -2.0, 3.0}>
        {
            t = Add(x, b)
            y = Relu(t)
        }
        """
    )


def weighted_model() -> ir.Model:
    """y = x @ w with a [3, 100] weight (1200 bytes: above onnx_ir's 256-byte inline threshold)."""
    weights = ", ".join(f"{0.01 * i:.2f}" for i in range(300))
    return ir.from_onnx_text(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3] x) => (float[N, 100] y)
        <float[3, 100] w = {{{weights}}}>
        {{
            y = MatMul(x, w)
        }}
        """
    )


def run_ort(model: str | Path | bytes, feeds: Arrays) -> Arrays:
    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def x_feed(batch: int = 2) -> Arrays:
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((batch, 3)).astype(np.float32)}


def weights(model: ir.Model, name: str) -> np.ndarray[Any, Any]:
    tensor = model.graph.initializers[name].const_value
    assert tensor is not None
    return tensor.numpy()


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# loading --------------------------------------------------------------------------------------


def test_load_from_path_records_source(tmp_path: Path) -> None:
    path = save(small_model(), tmp_path / "m.onnx")
    model = load(path)
    assert [v.name for v in model.graph.inputs] == ["x"]
    assert [v.name for v in model.graph.outputs] == ["y"]
    assert [n.op_type for n in model.graph] == ["Add", "Relu"]
    assert source_path(model) == path.resolve()


def test_load_accepts_str_path(tmp_path: Path) -> None:
    path = save(small_model(), tmp_path / "m.onnx")
    model = load(str(path))
    assert source_path(model) == path.resolve()


def test_load_from_bytes_matches_file(tmp_path: Path) -> None:
    path = save(small_model(), tmp_path / "m.onnx")
    data = path.read_bytes()
    from_data = load(data)
    assert source_path(from_data) is None
    assert [n.op_type for n in from_data.graph] == ["Add", "Relu"]
    np.testing.assert_array_equal(weights(from_data, "b"), np.array([1.0, -2.0, 3.0], dtype=np.float32))


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"'.*nope\.onnx' does not exist — check the path"):
        load(tmp_path / "nope.onnx")


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="is a directory, not an ONNX file"):
        load(tmp_path)


def test_load_empty_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty"):
        load(path)


def test_load_empty_file_says_it_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="is empty — re-export or re-download it"):
        load(path)


def test_load_plain_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("hello world, this is not a model\n", encoding="utf-8")
    with pytest.raises(ModelLoadError, match=r"does not parse as an ONNX model.*corrupt, truncated"):
        load(path)


@pytest.mark.parametrize("head", ["# a markdown title\n", "<html></html>\n"])
def test_load_text_like_file(tmp_path: Path, head: str) -> None:
    path = tmp_path / "page.onnx"
    path.write_text(head, encoding="utf-8")
    with pytest.raises(ModelLoadError, match="is not an ONNX model"):
        load(path)


@pytest.mark.parametrize("name", ["config.json", "config.onnx"])
def test_load_json_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(json.dumps({"model_type": "bert", "hidden_size": 768}), encoding="utf-8")
    with pytest.raises(ModelLoadError, match=r"is not an ONNX model \(it starts like a text"):
        load(path)


def test_load_garbage_bytes() -> None:
    with pytest.raises(ModelLoadError, match="the given bytes do not parse as an ONNX model"):
        load(b"\xff\xfe not a protobuf \x00\x01")


def test_from_bytes_names_what_it_parsed() -> None:
    with pytest.raises(ModelLoadError, match="decrypted blob do not parse"):
        from_bytes(b"\xff\xff\xff", what="decrypted blob")


# truncation -----------------------------------------------------------------------------------


def _opset_boundary(data: bytes, keep: int = 0) -> int:
    """Offset at which the serialized model's top-level opset_import entries (after ``keep`` of
    them) end.

    ModelProto fields are written in field-number order and opset_import (8) comes after the
    graph (7), so cutting here yields a prefix that parses as a complete model with fewer opsets.
    """
    proto = onnx.load_model_from_string(data)
    kept = list(proto.opset_import)[:keep]
    proto.ClearField("opset_import")
    proto.opset_import.extend(kept)
    prefix = proto.SerializeToString()
    assert data.startswith(prefix)
    return len(prefix)


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.75, 0.9, 0.99])
def test_truncated_file_raises(tmp_path: Path, fraction: float) -> None:
    data = to_bytes(small_model())
    cut = int(len(data) * fraction)
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[:cut])
    with pytest.raises(ModelLoadError, match="truncated"):
        load(path)


def test_every_truncated_prefix_raises(tmp_path: Path) -> None:
    """Every proper prefix of the file, and of the bytes, fails to load."""
    data = to_bytes(small_model())
    loaded_silently = []
    for cut in range(1, len(data)):
        path = tmp_path / f"cut{cut}.onnx"
        path.write_bytes(data[:cut])
        try:
            load(path)
        except ModelLoadError:
            pass
        else:
            loaded_silently.append(cut)
        try:
            load(data[:cut])
        except ModelLoadError:
            pass
        else:
            loaded_silently.append(-cut)
    assert loaded_silently == []


def test_truncated_before_opset_import_raises(tmp_path: Path) -> None:
    data = to_bytes(small_model())
    cut = _opset_boundary(data)  # 121 of 127 bytes: the graph is complete, the opsets are gone
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[:cut])
    with pytest.raises(ModelLoadError, match="declares no opset for it — the file is truncated"):
        load(path)
    with pytest.raises(ModelLoadError, match=r"the given bytes .*truncated"):
        load(data[:cut])


def test_truncated_between_opset_imports_raises(tmp_path: Path) -> None:
    model = ir.from_onnx_text(
        """
        <ir_version: 8, opset_import: ["" : 17, "com.microsoft" : 1]>
        g (float[N, 3] x) => (float[N, 3] y)
        {
            t = com.microsoft.FastGelu(x)
            y = Relu(t)
        }
        """
    )
    data = to_bytes(model)
    cut = _opset_boundary(data, keep=1)  # 104 of 123 bytes: "" : 17 kept, com.microsoft lost
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[:cut])
    with pytest.raises(ModelLoadError, match="truncated"):
        load(path)


# saving ---------------------------------------------------------------------------------------


def test_save_creates_parent_folders(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "m.onnx"
    assert save(small_model(), target) == target
    assert listing(tmp_path / "a" / "b") == ["m.onnx"]


def test_save_refuses_to_overwrite_source(tmp_path: Path) -> None:
    path = save(small_model(), tmp_path / "m.onnx")
    before = path.read_bytes()
    model = load(path)
    with pytest.raises(ModelSaveError, match="refusing to overwrite the input model"):
        save(model, path)
    # also through another spelling of the same path
    with pytest.raises(ModelSaveError, match="refusing to overwrite"):
        save(model, tmp_path / "." / "m.onnx")
    assert path.read_bytes() == before


def test_clone_keeps_overwrite_protection(tmp_path: Path) -> None:
    path = save(small_model(), tmp_path / "m.onnx")
    copy = clone(load(path))
    assert source_path(copy) == path.resolve()
    with pytest.raises(ModelSaveError, match="refusing to overwrite"):
        save(copy, path)


def test_save_in_place_overwrites_source(tmp_path: Path) -> None:
    path = save(small_model(), tmp_path / "m.onnx")
    model = load(path)
    model.graph.initializers["b"].const_value = ir.tensor(np.array([0.0, 0.0, 0.0], np.float32))
    assert save(model, path, in_place=True) == path
    feeds = {"x": np.array([[-1.0, 2.0, -3.0]], np.float32)}
    np.testing.assert_array_equal(run_ort(path, feeds)["y"], np.array([[0.0, 2.0, 0.0]], np.float32))
    assert listing(tmp_path) == ["m.onnx"]


def test_save_into_directory_path(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(ModelSaveError, match=r"is a directory — give a file name ending in \.onnx"):
        save(small_model(), tmp_path / "out")


def test_save_under_a_file_fails_without_leftovers(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("I am a file", encoding="utf-8")
    before = listing(tmp_path)
    with pytest.raises(ModelSaveError, match="cannot create the output folder"):
        save(small_model(), tmp_path / "blocker" / "m.onnx")
    assert listing(tmp_path) == before


def test_save_leaves_no_temp_files(tmp_path: Path) -> None:
    save(small_model(), tmp_path / "m.onnx")
    save(weighted_model(), tmp_path / "w.onnx", external_data=True)
    assert listing(tmp_path) == ["m.onnx", "w.onnx", "w.onnx.data"]


def test_failed_write_keeps_old_file_and_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that dies half-way leaves the previous file intact and no temp folder behind."""
    target = save(small_model(), tmp_path / "m.onnx")
    before = target.read_bytes()

    def half_write(model: ir.Model, path: str | Path, **kwargs: Any) -> None:
        Path(path).write_bytes(b"\x08\x08half a model")
        raise OSError("disk full")

    monkeypatch.setattr(ir, "save", half_write)
    with pytest.raises(ModelSaveError, match=r"writing '.*m\.onnx' failed: disk full"):
        save(weighted_model(), target)
    assert target.read_bytes() == before
    assert listing(tmp_path) == ["m.onnx"]


# external data --------------------------------------------------------------------------------


def test_external_data_survives_moving_the_folder(tmp_path: Path) -> None:
    model = weighted_model()
    path = save(model, tmp_path / "a" / "m.onnx", external_data=True)
    assert listing(tmp_path / "a") == ["m.onnx", "m.onnx.data"]
    assert (tmp_path / "a" / "m.onnx.data").stat().st_size == 300 * 4
    assert path.stat().st_size < 300 * 4  # the weights are not inline
    feeds = x_feed(4)
    expected = run_ort(to_bytes(model), feeds)["y"]

    shutil.move(tmp_path / "a", tmp_path / "b")
    moved = tmp_path / "b" / "m.onnx"
    loaded = load(moved)
    assert isinstance(loaded.graph.initializers["w"].const_value, ir.ExternalTensor)
    np.testing.assert_array_equal(run_ort(moved, feeds)["y"], expected)
    np.testing.assert_array_equal(run_ort(to_bytes(loaded), feeds)["y"], expected)
    np.testing.assert_allclose(
        expected,
        feeds["x"] @ np.arange(300, dtype=np.float32).reshape(3, 100) * 0.01,
        rtol=1e-5,
        atol=1e-5,
    )


def test_to_bytes_inlines_external_data(tmp_path: Path) -> None:
    path = save(weighted_model(), tmp_path / "m.onnx", external_data=True)
    loaded = load(path)
    data = to_bytes(loaded)
    # the original model still points at the side file
    assert isinstance(loaded.graph.initializers["w"].const_value, ir.ExternalTensor)
    (tmp_path / "m.onnx.data").unlink()
    again = from_bytes(data)
    np.testing.assert_array_equal(weights(again, "w"), weights(weighted_model(), "w"))


def test_resave_external_model_elsewhere_is_self_contained(tmp_path: Path) -> None:
    source = save(weighted_model(), tmp_path / "a" / "m.onnx", external_data=True)
    feeds = x_feed()
    expected = run_ort(source, feeds)["y"]
    out = save(load(source), tmp_path / "b" / "out.onnx")
    np.testing.assert_array_equal(run_ort(out, feeds)["y"], expected)


def test_in_place_save_with_external_data(tmp_path: Path) -> None:
    path = save(weighted_model(), tmp_path / "m.onnx", external_data=True)
    feeds = x_feed()
    expected = run_ort(path, feeds)["y"]
    model = load(path)
    assert save(model, path, in_place=True, external_data=True) == path
    assert listing(tmp_path) == ["m.onnx", "m.onnx.data"]
    np.testing.assert_array_equal(run_ort(path, feeds)["y"], expected)


def test_model_still_usable_after_in_place_external_save(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    ones = ", ".join(["1.0"] * 100)
    model = ir.from_onnx_text(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3] x) => (float[N, 100] y)
        <float[3, 100] w = {{{", ".join(["0.5"] * 300)}}}, float[100] b = {{{ones}}}>
        {{
            t = MatMul(x, w)
            y = Add(t, b)
        }}
        """
    )
    # a file written with another layout (b at a 4 KiB-aligned offset), as another exporter might
    ir.save(model, path, external_data="m.onnx.data", alignment=4096, align_threshold=0)
    feeds = x_feed()
    expected = run_ort(path, feeds)["y"]
    model = load(path)
    save(model, path, in_place=True, external_data=True)
    np.testing.assert_array_equal(run_ort(path, feeds)["y"], expected)  # the new file is fine
    np.testing.assert_array_equal(run_ort(to_bytes(model), feeds)["y"], expected)


# round trips ----------------------------------------------------------------------------------


def test_to_bytes_round_trip_is_stable() -> None:
    model = small_model()
    data = to_bytes(model)
    again = from_bytes(data)
    assert to_bytes(again) == data
    feeds = {"x": np.array([[-5.0, 1.0, 0.5], [0.0, 3.0, -4.0]], np.float32)}
    np.testing.assert_array_equal(run_ort(data, feeds)["y"], np.array([[0.0, 0.0, 3.5], [1.0, 1.0, 0.0]], np.float32))


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = weighted_model()
    path = save(model, tmp_path / "m.onnx")
    assert listing(tmp_path) == ["m.onnx"]  # small weights stay inline by default
    feeds = x_feed(3)
    np.testing.assert_array_equal(run_ort(path, feeds)["y"], run_ort(to_bytes(model), feeds)["y"])
    assert to_bytes(load(path)) == to_bytes(model)


def test_clone_is_independent() -> None:
    model = small_model()
    copy = clone(model)
    copy.graph.remove(list(copy.graph)[-1], safe=False)
    assert [n.op_type for n in model.graph] == ["Add", "Relu"]
    assert [n.op_type for n in copy.graph] == ["Add"]


def test_check_model_accepts_valid_model() -> None:
    check_model(small_model(), full=True)


def test_check_model_rejects_invalid_model() -> None:
    model = ir.from_onnx_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3] x) => (float[N, 3] y)
        {
            y = NoSuchOp(x)
        }
        """
    )
    with pytest.raises(InvalidModelError, match="the ONNX checker rejected the model"):
        check_model(model)


def test_external_save_streams_lazy_weights_and_keeps_the_model_unchanged(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    big = rng.standard_normal((64, 1024)).astype(np.float32)  # 256 KiB, streamed file to file
    model = ir.from_onnx_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 64] x) => (float[N, 1024] y)
        {
            t = MatMul(x, w)
            y = Add(t, b)
        }
        """
    )
    for name, array in (("w", big), ("b", np.arange(1024, dtype=np.float32))):
        value = next(v for n in model.graph for v in n.inputs if v is not None and v.name == name)
        value.const_value = ir.tensor(array, name=name)
        model.graph.register_initializer(value)
    source = save(model, tmp_path / "a" / "m.onnx", external_data=True)
    lazy = load(source)
    tensor_before = lazy.graph.initializers["w"].const_value
    assert isinstance(tensor_before, ir.ExternalTensor)
    # a weight the optimizer computed (in memory) next to one still read lazily from 'a'
    lazy.graph.initializers["b"].const_value = ir.tensor(np.full(1024, 2.0, np.float32), name="b")
    out = save(lazy, tmp_path / "b" / "m.onnx", external_data=True)
    assert lazy.graph.initializers["w"].const_value is tensor_before  # nothing swapped behind our back
    data = (tmp_path / "b" / "m.onnx.data").read_bytes()
    assert len(data) >= big.nbytes + 1024 * 4
    shutil.rmtree(tmp_path / "a")  # the output must not point back at the input's side file
    shutil.move(tmp_path / "b", tmp_path / "c")
    x = rng.standard_normal((2, 64)).astype(np.float32)
    got = run_ort(tmp_path / "c" / "m.onnx", {"x": x})["y"]
    np.testing.assert_allclose(got, x @ big + 2.0, rtol=1e-5, atol=1e-5)
    assert out == tmp_path / "b" / "m.onnx"
