from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from modelport.errors import CalibrationDataError, ConfigError
from modelport.ir.specs import TensorSpec
from modelport.quantize.calibration import load_calibration
from modelport.verify.dataset import Dataset, ImagePreprocess, load_dataset, parse_preprocess

IMAGE = TensorSpec("image", np.dtype("float32"), ("batch", 3, 8, 8))
IDS = TensorSpec("ids", np.dtype("int64"), ("batch", 5))
VECTOR = TensorSpec("x", np.dtype("float32"), ("batch", 4))


def _png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _random_image(seed: int, height: int = 12, width: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# arrays -----------------------------------------------------------------------------------------------


def test_npz_with_labels_gives_batch_one_feeds_labels_and_names(tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.float64).reshape(3, 4)  # float64 on purpose: converted to float32
    ids = np.arange(15, dtype=np.int32).reshape(3, 5)  # int32 -> int64 is a safe cast
    np.savez(tmp_path / "d.npz", x=x, ids=ids, labels=np.array([2, 0, 1]))
    data = load_dataset(tmp_path / "d.npz", [VECTOR, IDS])
    assert len(data) == 3
    assert data.labels == [2, 0, 1]
    assert all(type(label) is int for label in data.labels)
    assert data.names == ["sample 0", "sample 1", "sample 2"]
    assert data.source == str(tmp_path / "d.npz")
    assert data.classes is None
    assert data.samples[1]["x"].shape == (1, 4)
    assert data.samples[1]["x"].dtype == np.float32
    assert data.samples[1]["ids"].dtype == np.int64
    np.testing.assert_array_equal(data.samples[2]["x"][0], [8, 9, 10, 11])
    np.testing.assert_array_equal(data.samples[0]["ids"][0], [0, 1, 2, 3, 4])


def test_npz_labels_key_and_array_labels(tmp_path: Path) -> None:
    boxes = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 4), np.float32), target=boxes)
    data = load_dataset(tmp_path / "d.npz", [VECTOR], labels_key="target")
    assert data.labels is not None
    np.testing.assert_array_equal(data.labels[1], [2.0, 3.0])
    # Without labels_key the extra array is an unknown input.
    with pytest.raises(ConfigError, match=r"arrays \['target', 'x'\] do not match the model inputs \['x'\]"):
        load_dataset(tmp_path / "d.npz", [VECTOR])


def test_single_input_accepts_an_unnamed_array_and_limit(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", np.ones((5, 4), np.float32))  # stored as 'arr_0'
    data = load_dataset(tmp_path / "d.npz", [VECTOR], limit=2)
    assert len(data) == 2
    assert data.labels is None
    assert list(data.samples[0]) == ["x"]


def test_npy_has_no_labels_and_a_single_sample_may_omit_the_batch_axis(tmp_path: Path) -> None:
    np.save(tmp_path / "one.npy", np.array([1, 2, 3, 4], np.uint8))  # uint8 -> float32 is safe
    data = load_dataset(tmp_path / "one.npy", [VECTOR])
    assert len(data) == 1
    assert data.labels is None
    np.testing.assert_array_equal(data.samples[0]["x"], [[1, 2, 3, 4]])
    assert data.samples[0]["x"].dtype == np.float32


def test_integers_that_fit_are_narrowed(tmp_path: Path) -> None:
    spec = TensorSpec("ids", np.dtype("int32"), ("batch", 2))
    np.save(tmp_path / "ids.npy", np.array([[1, 2], [3, 2**31 - 1]], np.int64))
    data = load_dataset(tmp_path / "ids.npy", [spec])
    assert data.samples[1]["ids"].dtype == np.int32
    np.testing.assert_array_equal(data.samples[1]["ids"], [[3, 2**31 - 1]])


def test_input_without_batch_axis_gets_bare_samples(tmp_path: Path) -> None:
    spec = TensorSpec("x", np.dtype("float32"), (4,))
    np.save(tmp_path / "d.npy", np.arange(8, dtype=np.float32).reshape(2, 4))
    data = load_dataset(tmp_path / "d.npy", [spec])
    assert [s["x"].shape for s in data.samples] == [(4,), (4,)]
    np.save(tmp_path / "one.npy", np.arange(4, dtype=np.float32))
    assert [s["x"].shape for s in load_dataset(tmp_path / "one.npy", [spec]).samples] == [(4,)]


def test_an_array_named_after_an_input_feeds_it_even_if_it_is_called_labels(tmp_path: Path) -> None:
    spec = TensorSpec("labels", np.dtype("int64"), ("batch",))
    np.savez(tmp_path / "d.npz", labels=np.array([3, 4], np.int64))
    data = load_dataset(tmp_path / "d.npz", [spec])
    assert data.labels is None
    np.testing.assert_array_equal(data.samples[1]["labels"], [4])


# images -----------------------------------------------------------------------------------------------


def _manual(path: Path, size: tuple[int, int], mean: float, std: float) -> np.ndarray:
    """What an RGB NCHW pipeline does, written out by hand: resize, 1/255, normalise, HWC -> CHW."""
    with Image.open(path) as img:
        pixels = np.asarray(img.convert("RGB").resize(size, Image.Resampling.BILINEAR), np.float32)
    return ((pixels / 255.0 - mean) / std).transpose(2, 0, 1)[None]


def test_labelled_image_folder_matches_manual_preprocessing(tmp_path: Path) -> None:
    files = {
        "cat/001.png": _random_image(0),
        "cat/002.png": _random_image(1),
        "dog/a.jpg": _random_image(2),
        "bird/x/deep.png": _random_image(3),  # nested: still class 'bird'
    }
    for name, pixels in files.items():
        _png(tmp_path / name, pixels)
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    _png(tmp_path / ".ipynb_checkpoints" / "junk.png", _random_image(4))  # hidden: not a class
    pre = parse_preprocess("mean=0.5:0.5:0.5,std=0.25:0.25:0.25")
    data = load_dataset(tmp_path, [IMAGE], preprocess=pre)
    assert data.classes == ["bird", "cat", "dog"]
    assert data.names == ["bird/x/deep.png", "cat/001.png", "cat/002.png", "dog/a.jpg"]
    assert data.labels == [0, 1, 1, 2]
    assert data.source == str(tmp_path)
    for name, sample in zip(data.names, data.samples, strict=True):
        assert sample["image"].dtype == np.float32
        expected = _manual(tmp_path / name, (8, 8), 0.5, 0.25)
        np.testing.assert_allclose(sample["image"], expected, rtol=0, atol=1e-6)


def test_bgr_nhwc_gray_and_bare_image_inputs(tmp_path: Path) -> None:
    pixels = _random_image(5, 8, 8)
    _png(tmp_path / "flat" / "a.png", pixels)
    nhwc = TensorSpec("image", np.dtype("float32"), (1, 8, 8, 3))
    data = load_dataset(tmp_path / "flat", [nhwc], preprocess=parse_preprocess("layout=NHWC,color=BGR,scale=1"))
    np.testing.assert_array_equal(data.samples[0]["image"][0], pixels[..., ::-1].astype(np.float32))
    gray = TensorSpec("image", np.dtype("float32"), (1, 8, 8))  # rank 3: [C, H, W], no batch axis
    data = load_dataset(tmp_path / "flat", [gray], preprocess=parse_preprocess("color=GRAY,mean=0.5,std=0.5"))
    with Image.open(tmp_path / "flat" / "a.png") as img:
        luma = np.asarray(img.convert("L"), np.float32)
    np.testing.assert_allclose(data.samples[0]["image"], ((luma / 255 - 0.5) / 0.5)[None], rtol=0, atol=1e-6)


def test_letterbox_pads_and_crop_cuts_the_centre(tmp_path: Path) -> None:
    pixels = _random_image(6, height=10, width=20)
    path = _png(tmp_path / "flat" / "wide.png", pixels)
    image = Image.fromarray(pixels)
    # letterbox 20x10 into 8x8: scale 0.4 -> 8x4, centred with 2 rows of padding above and below
    pre = parse_preprocess("resize=letterbox,pad_value=114,scale=1")
    boxed = load_dataset(path.parent, [IMAGE], preprocess=pre).samples[0]["image"][0].transpose(1, 2, 0)
    inner = np.asarray(image.resize((8, 4), Image.Resampling.BILINEAR), np.float32)
    np.testing.assert_array_equal(boxed[2:6], inner)
    np.testing.assert_array_equal(boxed[:2], 114.0)
    np.testing.assert_array_equal(boxed[6:], 114.0)
    # crop to 8x8 with crop_fraction 0.5: cover 16x16 -> 32x16, cut rows 4:12, columns 12:20
    pre = parse_preprocess("resize=crop,crop_fraction=0.5,scale=1")
    cropped = load_dataset(path.parent, [IMAGE], preprocess=pre).samples[0]["image"][0].transpose(1, 2, 0)
    big = np.asarray(image.resize((32, 16), Image.Resampling.BILINEAR), np.float32)
    np.testing.assert_array_equal(cropped, big[4:12, 12:20])


def test_flat_folder_has_no_labels(tmp_path: Path) -> None:
    for name in ("b.png", "a.png"):
        _png(tmp_path / name, _random_image(7))
    data = load_dataset(tmp_path, [IMAGE])
    assert data.names == ["a.png", "b.png"]
    assert data.labels is None
    assert data.classes is None


def test_limit_takes_classes_round_robin(tmp_path: Path) -> None:
    for name in ("a/0.png", "a/1.png", "a/2.png", "b/0.png", "c/0.png", "c/1.png"):
        _png(tmp_path / name, _random_image(8, 4, 4))
    data = load_dataset(tmp_path, [IMAGE], limit=4)
    assert data.names == ["a/0.png", "a/1.png", "b/0.png", "c/0.png"]
    assert data.labels == [0, 0, 1, 2]


def test_integer_image_input_gets_exact_pixels(tmp_path: Path) -> None:
    pixels = _random_image(9, 8, 8)
    _png(tmp_path / "a.png", pixels)
    spec = TensorSpec("image", np.dtype("uint8"), ("batch", 8, 8, 3))
    data = load_dataset(tmp_path, [spec], preprocess=parse_preprocess("layout=NHWC,scale=1"))
    assert data.samples[0]["image"].dtype == np.uint8
    np.testing.assert_array_equal(data.samples[0]["image"][0], pixels)
    with pytest.raises(ConfigError, match=r"input 'image' is uint8, .* use scale=1,mean=0,std=1"):
        load_dataset(tmp_path, [spec], preprocess=parse_preprocess("layout=NHWC,mean=0.5,std=0.5"))


def test_calibration_reads_class_folders_with_its_own_error_type(tmp_path: Path) -> None:
    _png(tmp_path / "cat" / "a.png", _random_image(10))
    samples = load_calibration(tmp_path, [IMAGE])
    assert [s["image"].shape for s in samples] == [(1, 3, 8, 8)]
    _png(tmp_path / "top.png", _random_image(11))
    with pytest.raises(CalibrationDataError, match="images at the top level and subfolders"):
        load_calibration(tmp_path, [IMAGE])


# preprocess spec ----------------------------------------------------------------------------------------


def test_parse_preprocess_new_fields() -> None:
    pre = parse_preprocess("size=224x256,resize=crop,crop_fraction=0.875,color=BGR,mean=0.5,std=0.5,scale=1/255")
    assert pre == ImagePreprocess(
        size=(224, 256), resize="crop", crop_fraction=0.875, color="BGR", mean=(0.5,), std=(0.5,), scale=1 / 255
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("size224", "not KEY=VALUE"),
        ("size=ax4", "not a number"),
        ("mean=0.1:0.2", "mean has 2 values"),
        ("std=1:0:1", "contains 0"),
        ("resize=pad", "resize"),
        ("crop_fraction=1.5", "crop_fraction"),
        ("scale=1/0", "not a number or a fraction"),
        ("size=0x4", "must be positive"),
    ],
)
def test_bad_preprocess_specs_are_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_preprocess(text)


# errors -------------------------------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, **arrays: Any) -> Path:
    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, arrays["arr"])
    else:
        np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("name", "arrays", "specs", "message"),
    [
        (
            "miss.npz",
            {"x": np.zeros((2, 4), np.float32)},
            [VECTOR, IDS],
            r"do not match the model inputs \['ids', 'x'\]",
        ),
        (
            "lab.npz",
            {"x": np.zeros((3, 4), np.float32), "labels": np.array([1, 2])},
            [VECTOR],
            r"'labels' holds 2 labels \(shape \[2\]\) for 3 samples — give exactly one label per sample",
        ),
        (
            "lab0.npz",
            {"x": np.zeros((3, 4), np.float32), "labels": np.array(1)},
            [VECTOR],
            "'labels' holds a single value for 3 samples",
        ),
        (
            "rank.npy",
            {"arr": np.zeros((2, 2, 4), np.float32)},
            [VECTOR],
            r"has shape \[2, 2, 4\], but input 'x' has rank 2",
        ),
        (
            "dim.npy",
            {"arr": np.zeros((2, 8, 8, 3), np.float32)},
            [IMAGE],
            r"has size 8 on axis 1 .* is \[batch, 3, 8, 8\]",
        ),
        (
            "bare.npy",
            {"arr": np.zeros((2, 2, 4), np.float32)},
            [TensorSpec("x", np.dtype("float32"), (4,))],
            "stack samples along a new axis 0",
        ),
        (
            "float.npy",
            {"arr": np.zeros((2, 5), np.float32)},
            [IDS],
            r"values would change — save it with \.astype\(np\.int64\)",
        ),
        (
            "wide.npy",
            {"arr": np.array([[2**40, 1]], np.int64)},
            [TensorSpec("ids", np.dtype("int32"), ("b", 2))],
            r"dtype int64, but the input expects int32",
        ),
        (
            "half.npy",
            {"arr": np.array([[1e6, 1, 1, 1]])},
            [TensorSpec("x", np.dtype("float16"), ("b", 4))],
            "beyond the range of float16",
        ),
        (
            "counts.npz",
            {"x": np.zeros((2, 4), np.float32), "ids": np.zeros((3, 5), np.int64)},
            [VECTOR, IDS],
            r"different sample counts \{'x': 2, 'ids': 3\}",
        ),
        ("two.npy", {"arr": np.zeros((2, 4), np.float32)}, [VECTOR, IDS], "holds one array but the model has 2 inputs"),
        ("empty.npy", {"arr": np.zeros((0, 4), np.float32)}, [VECTOR], "holds no samples"),
        (
            "scalar.npy",
            {"arr": np.array(1.0, np.float32)},
            [TensorSpec("x", np.dtype("float32"), None)],
            "is a single value — stack samples along axis 0",
        ),
    ],
)
def test_bad_arrays(
    tmp_path: Path, name: str, arrays: dict[str, np.ndarray], specs: list[TensorSpec], message: str
) -> None:
    path = _write(tmp_path, name, **arrays)
    with pytest.raises(ConfigError, match=message):
        load_dataset(path, specs)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_dataset(tmp_path / "missing.npz", [VECTOR])
    (tmp_path / "data.csv").write_text("1,2")
    with pytest.raises(ConfigError, match=r"neither \.npy, \.npz nor a folder of images \(suffix '\.csv'\)"):
        load_dataset(tmp_path / "data.csv", [VECTOR])
    (tmp_path / "bad.npz").write_bytes(b"not a zip file")
    with pytest.raises(ConfigError, match=r"bad\.npz' is not a readable \.npz"):
        load_dataset(tmp_path / "bad.npz", [VECTOR])
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ConfigError, match=r"obj\.npy' is not a numeric \.npy array"):
        load_dataset(tmp_path / "obj.npy", [VECTOR])
    with pytest.raises(ConfigError, match="limit must be at least 1 sample, got 0"):
        load_dataset(tmp_path / "obj.npy", [VECTOR], limit=0)


def test_bad_image_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"has no images .* and no class subfolders"):
        load_dataset(tmp_path / "empty", [IMAGE])
    _png(tmp_path / "classes" / "cat" / "a.png", _random_image(0))
    (tmp_path / "classes" / "dog").mkdir()
    with pytest.raises(ConfigError, match=r"class folder '.*dog' has no images .* would shift every class index"):
        load_dataset(tmp_path / "classes", [IMAGE])
    _png(tmp_path / "flat" / "a.png", _random_image(0))
    (tmp_path / "flat" / "b.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ConfigError, match=r"cannot read image '.*b\.png'"):
        load_dataset(tmp_path / "flat", [IMAGE])
    good = tmp_path / "good"
    _png(good / "a.png", _random_image(0))
    with pytest.raises(ConfigError, match="a folder of images feeds one input, but the model has 2"):
        load_dataset(good, [IMAGE, IDS])
    with pytest.raises(ConfigError, match=r"input 'ids' \[batch, 5\] is not an image input"):
        load_dataset(good, [IDS])
    dynamic = TensorSpec("image", np.dtype("float32"), ("b", 3, "h", "w"))
    with pytest.raises(ConfigError, match="has no static image size — give one with size=HxW"):
        load_dataset(good, [dynamic])
    with pytest.raises(ConfigError, match=r"has size 1 on axis 1 .* check layout= \(now NCHW\) and color= \(now GRAY"):
        load_dataset(good, [IMAGE], preprocess=ImagePreprocess(color="GRAY"))
    text = TensorSpec("image", np.dtype("bool"), ("b", 3, 8, 8))
    with pytest.raises(ConfigError, match="dtype bool, which a folder of images cannot feed"):
        load_dataset(good, [text])


def test_dataset_checks_its_lengths() -> None:
    feeds = [{"x": np.zeros((1, 4), np.float32)}]
    with pytest.raises(ConfigError, match="has 1 samples but 2 labels"):
        Dataset(samples=feeds, labels=[0, 1], names=["a"], source="mem")
    with pytest.raises(ConfigError, match="has 1 samples but 0 names"):
        Dataset(samples=feeds, labels=None, names=[], source="mem")
