from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest
from PIL import Image

from modelport.errors import CalibrationDataError
from modelport.ir.specs import TensorSpec, specs_of
from modelport.quantize.calibration import ImagePreprocess, entry_point_reader, load_calibration, parse_preprocess
from modelport.quantize.ranges import collect_ranges

IMAGE = TensorSpec("image", np.dtype("float32"), ("batch", 3, 8, 8))
IDS = TensorSpec("ids", np.dtype("int64"), ("batch", 5))


def test_npy_is_split_into_single_samples(tmp_path: Path) -> None:
    data = np.random.default_rng(0).standard_normal((4, 3, 8, 8))  # float64 on purpose
    np.save(tmp_path / "c.npy", data)
    samples = load_calibration(tmp_path / "c.npy", [IMAGE])
    assert len(samples) == 4
    assert samples[0]["image"].shape == (1, 3, 8, 8)
    assert samples[0]["image"].dtype == np.float32
    np.testing.assert_allclose(samples[2]["image"][0], data[2], rtol=1e-6, atol=0)


def test_npz_with_one_array_per_input(tmp_path: Path) -> None:
    np.savez(tmp_path / "c.npz", image=np.zeros((3, 3, 8, 8), np.float32), ids=np.ones((3, 5), np.int64))
    samples = load_calibration(tmp_path / "c.npz", [IMAGE, IDS])
    assert len(samples) == 3
    assert samples[1]["ids"].dtype == np.int64


def test_image_folder_with_preprocess(tmp_path: Path) -> None:
    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), 51 * i, np.uint8)).save(tmp_path / f"{i}.png")
    pre = parse_preprocess("layout=NCHW,color=RGB,mean=0.5:0.5:0.5,std=0.5:0.5:0.5,scale=1/255")
    samples = load_calibration(tmp_path, [IMAGE], preprocess=pre)
    assert [s["image"].shape for s in samples] == [(1, 3, 8, 8)] * 3
    np.testing.assert_allclose(samples[0]["image"], -1.0, atol=1e-6, rtol=0)
    np.testing.assert_allclose(samples[2]["image"], (102 / 255 - 0.5) / 0.5, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("size224", "not KEY=VALUE"),
        ("layout=NCWH", "layout"),
        ("scale=1/0", "not a number"),
        ("colour=RGB", "colour"),
    ],
)
def test_bad_preprocess_specs(text: str, message: str) -> None:
    with pytest.raises(CalibrationDataError, match=message):
        parse_preprocess(text)


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(CalibrationDataError, match="does not exist"):
        load_calibration(tmp_path / "missing.npz", [IMAGE])
    np.savez(tmp_path / "wrong.npz", pixels=np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(CalibrationDataError, match=r"do not match the model inputs \['image'\]"):
        load_calibration(tmp_path / "wrong.npz", [IMAGE])
    np.save(tmp_path / "rank.npy", np.zeros((2, 8), np.float32))
    with pytest.raises(CalibrationDataError, match="has rank 4"):
        load_calibration(tmp_path / "rank.npy", [IMAGE])
    np.save(tmp_path / "nhwc.npy", np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(CalibrationDataError, match="has size 8 on axis 1"):
        load_calibration(tmp_path / "nhwc.npy", [IMAGE])
    np.save(tmp_path / "ints.npy", np.zeros((2, 5), np.float32))
    with pytest.raises(CalibrationDataError, match=r"astype\(np.int64\)"):
        load_calibration(tmp_path / "ints.npy", [IDS])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationDataError, match="has no images"):
        load_calibration(tmp_path / "empty", [IMAGE])
    (tmp_path / "data.csv").write_text("1,2")
    with pytest.raises(CalibrationDataError, match=r"neither \.npy, \.npz"):
        load_calibration(tmp_path / "data.csv", [IMAGE])
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "empty" / "a.png")
    with pytest.raises(CalibrationDataError, match="no static image size"):
        load_calibration(
            tmp_path / "empty",
            [TensorSpec("image", np.dtype("float32"), ("b", 3, "h", "w"))],
            preprocess=ImagePreprocess(),
        )


# ------------------------------------------------------------------------------ entry point reader

READER_MODULE = """
import numpy as np

calls = []


def generate():
    calls.append("generate")
    rng = np.random.default_rng(0)
    for _ in range(3):
        yield {"image": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)}


def as_list():
    return [{"image": np.full((1, 3, 8, 8), float(i), np.float32)} for i in range(2)]


class Holder:
    @staticmethod
    def nested():
        return as_list()


NOT_CALLABLE = 42


def needs_argument(path):
    return []


def with_defaults(count=2, *rest, **options):
    return as_list()[:count]


def raises():
    raise RuntimeError("database offline")


def returns_number():
    return 7


def returns_dict():
    return {"image": np.zeros((1, 3, 8, 8), np.float32)}


def yields_list():
    yield [np.zeros((1, 3, 8, 8), np.float32)]


def yields_wrong_name():
    yield {"pixels": np.zeros((1, 3, 8, 8), np.float32)}


def yields_float64():
    yield {"image": np.zeros((1, 3, 8, 8))}


def yields_list_value():
    yield {"image": [[0.0]]}


def yields_wrong_shape():
    yield {"image": np.zeros((1, 3, 4, 4), np.float32)}


def fails_midway():
    yield from as_list()
    raise OSError("stream closed")


def yields_nothing():
    return iter(())
"""

BROKEN_MODULE = "raise ImportError('needs libfoo')\n"

_module_ids = itertools.count()


@pytest.fixture
def reader_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The name of a fresh importable module holding READER_MODULE."""
    name = f"calib_reader_{next(_module_ids)}"
    (tmp_path / f"{name}.py").write_text(READER_MODULE)
    (tmp_path / f"{name}_broken.py").write_text(BROKEN_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_entry_point_gives_a_fresh_checked_iterator_each_call(reader_module: str) -> None:
    read = entry_point_reader(f"{reader_module}:generate", [IMAGE])
    first, second = list(read()), list(read())
    assert len(first) == 3
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
    assert sys.modules[reader_module].calls == ["generate", "generate"]
    assert [float(s["image"].max()) for s in entry_point_reader(f"{reader_module}:as_list", [IMAGE])()] == [0.0, 1.0]
    assert len(list(entry_point_reader(f"{reader_module}:Holder.nested", [IMAGE])())) == 2
    assert len(list(entry_point_reader(f" {reader_module} : with_defaults ", [IMAGE])())) == 2


def test_entry_point_feeds_streaming_calibration(reader_module: str) -> None:
    model = ir.from_onnx_text(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[batch, 3, 8, 8] image) => (float[batch, 3, 8, 8] y) {
          y = Relu(image)
        }"""
    )
    read = entry_point_reader(f"{reader_module}:generate", specs_of(model.graph.inputs))
    result = collect_ranges(model, read, method="entropy")  # two passes: min/max, then histograms
    data = np.concatenate([s["image"] for s in read()])
    assert result.samples == 3
    assert result.ranges["y"].low == 0.0
    assert float(data.min()) <= result.ranges["image"].low < 0.0 < result.ranges["image"].high <= float(data.max())


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_colon", r"should have the form 'package.module:function'"),
        (":generate", r"should have the form"),
        ("{m}:", r"should have the form"),
        ("calib_reader_missing_module:generate", r"cannot import module 'calib_reader_missing_module'.*PYTHONPATH"),
        ("{m}_broken:generate", r"importing module '.*_broken' .* failed: ImportError: needs libfoo"),
        ("{m}:missing", r"has no attribute 'missing'"),
        ("{m}:Holder.missing", r"has no attribute 'Holder.missing'"),
        ("{m}:NOT_CALLABLE", r"is a int, not a function"),
        ("{m}:needs_argument", r"needs argument\(s\) path, but it is called with none"),
    ],
)
def test_entry_point_load_errors(reader_module: str, target: str, message: str) -> None:
    with pytest.raises(CalibrationDataError, match=message):
        entry_point_reader(target.format(m=reader_module), [IMAGE])


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("raises", r":raises' failed: RuntimeError: database offline"),
        ("returns_number", r"returned a int, but it must return an iterable of feeds dicts"),
        ("returns_dict", r"returned a dict, but it must return an iterable"),
        ("yields_list", r"yielded a list as sample 0, but each sample must be a dict .* \['image'\]"),
        ("yields_wrong_name", r"sample 0 from .* does not fit the model: .*no input named 'pixels'"),
        ("yields_float64", r"sample 0 from .* does not fit the model: .*astype\(np.float32\)"),
        ("yields_list_value", r"sample 0 from .* does not fit the model: .*not a numpy array"),
        ("yields_wrong_shape", r"sample 0 from .* does not fit the model: .*size 4 on axis 2"),
        ("fails_midway", r"failed at sample 2: OSError: stream closed"),
        ("yields_nothing", r"yielded no samples"),
    ],
)
def test_entry_point_data_errors(reader_module: str, function: str, message: str) -> None:
    read = entry_point_reader(f"{reader_module}:{function}", [IMAGE])
    with pytest.raises(CalibrationDataError, match=message):
        list(read())
