from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modelport.errors import CalibrationDataError
from modelport.ir.specs import TensorSpec
from modelport.quantize.calibration import ImagePreprocess, load_calibration, parse_preprocess

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
