from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
import pytest

from modelport.errors import CalibrationDataError, ConfigError, QuantizationError
from modelport.ir.serde import to_bytes
from modelport.quantize import ranges as ranges_module
from modelport.quantize.ranges import (
    RangeSet,
    TensorRange,
    calibration_tensors,
    collect_ranges,
    entropy_bins,
    percentile_bins,
)
from modelport.runners.onnxruntime import OrtRunner
from resnet_models import resnet

Feeds = dict[str, np.ndarray[Any, Any]]

OUTLIER_MODEL = """<ir_version: 8, opset_import: ["" : 17]>
outliers (float[batch, 4096] x) => (float[batch, 4096] y) {
  two = Constant<value = float {2.0}>()
  scaled = Mul(x, two)
  y = Relu(scaled)
}"""

MLP = """<ir_version: 8, opset_import: ["" : 17]>
mlp (float[batch, 3] x) => (float[batch, 2] s)
    <float[3, 2] w = {0.5, -1.0, 2.0, 0.25, -0.75, 1.5}, float[2] b = {0.1, -0.2}> {
  h = MatMul(x, w)
  a = Add(h, b)
  r = Relu(a)
  s = Sigmoid(r)
}"""


def outlier_samples() -> list[Feeds]:
    """16 samples of N(0, 1); two of them carry three values about 100 sigma out."""
    rng = np.random.default_rng(0)
    samples = [{"x": rng.standard_normal((1, 4096)).astype(np.float32)} for _ in range(16)]
    samples[3]["x"][0, [10, 500]] = [100.0, -95.0]
    samples[11]["x"][0, 7] = 98.0
    return samples


def mlp_samples(count: int = 6, seed: int = 0) -> list[Feeds]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((2, 3)).astype(np.float32)} for _ in range(count)]


def image_samples(count: int, size: int = 32) -> list[Feeds]:
    rng = np.random.default_rng(1)
    return [{"image": rng.standard_normal((1, 3, size, size)).astype(np.float32)} for _ in range(count)]


class RunLog:
    """Counts model runs and the bytes of outputs each run returned."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.output_bytes: list[int] = []
        original = OrtRunner.infer

        def infer(runner: OrtRunner, feeds: Any, *, check: bool = True) -> dict[str, np.ndarray[Any, Any]]:
            outputs = original(runner, feeds, check=check)
            self.output_bytes.append(sum(a.nbytes for a in outputs.values()))
            return outputs

        monkeypatch.setattr(OrtRunner, "infer", infer)

    @property
    def runs(self) -> int:
        return len(self.output_bytes)


# ------------------------------------------------------------------------------------ the methods


def test_three_methods_give_clearly_different_ranges_on_outliers() -> None:
    model = ir.from_onnx_text(OUTLIER_MODEL)
    samples = outlier_samples()
    minmax = collect_ranges(model, samples, method="minmax").ranges["x"]
    percentile = collect_ranges(model, samples, method="percentile", percentile=99.99).ranges["x"]
    entropy = collect_ranges(model, samples, method="entropy").ranges["x"]
    assert (minmax.low, minmax.high) == (-95.0, 100.0)
    # 99.99% of |x| over 65536 values: everything but the 3 outliers and ~3.5 of the normal tail.
    assert 3.8 < percentile.high < 4.3 and percentile.low == -percentile.high
    # KL over 2048 bins of [0, 100]: the smallest candidate, 128 bins = 6.25, beats every wider one.
    assert entropy.high == pytest.approx(6.25, abs=1e-9) and entropy.low == -entropy.high
    assert minmax.high > 10 * percentile.high and minmax.high > 10 * entropy.high
    assert abs(entropy.high - percentile.high) > 1.0


def _brute_force_mse(values: np.ndarray[Any, Any], threshold: float, steps: float) -> float:
    """Mean squared error of rounding ``|values|`` to ``steps`` steps over [0, threshold], clipping beyond."""
    magnitude = np.abs(values)
    delta = threshold / steps
    quantized = np.minimum(np.round(magnitude / delta) * delta, threshold)
    return float(np.mean((magnitude - quantized) ** 2))


def test_mse_picks_the_threshold_with_least_squared_error() -> None:
    model = ir.from_onnx_text(OUTLIER_MODEL)
    samples = outlier_samples()
    x = collect_ranges(model, samples, method="mse").ranges["x"]
    values = np.concatenate([s["x"].ravel() for s in samples]).astype(np.float64)
    values = values[values != 0]
    minmax = collect_ranges(model, samples, method="minmax").ranges["x"]
    # Three outliers near 100 among 65536 N(0, 1) values: clipping them to the body would cost
    # ~96² each, far more than the coarser rounding of keeping most of their range — so MSE keeps
    # them (unlike Percentile and Entropy, which clip to the body) but trims the emptiest top.
    assert x.low == -x.high and 50.0 < x.high < minmax.high
    chosen = _brute_force_mse(values, x.high, 127.5)
    for other in (x.high * 0.8, minmax.high, 6.25, 4.0):
        assert chosen <= _brute_force_mse(values, other, 127.5) * 1.02, other
    percentile = collect_ranges(model, samples, method="percentile", percentile=99.99).ranges["x"]
    entropy = collect_ranges(model, samples, method="entropy").ranges["x"]
    assert len({minmax.high, percentile.high, entropy.high, x.high}) == 4


def test_mse_bins_matches_brute_force_on_a_histogram() -> None:
    from modelport.quantize.ranges import mse_bins

    rng = np.random.default_rng(5)
    hist = np.bincount(np.minimum(rng.exponential(40, 200_000).astype(int), 1023), minlength=1024)
    centres = np.arange(1024) + 0.5

    def error(t: int, steps: float) -> float:
        inside = hist[:t].sum() * (t / steps) ** 2 / 12
        beyond = (hist[t:] * (centres[t:] - t) ** 2).sum()
        return float(inside + beyond)

    for one_sided, steps in ((True, 255.0), (False, 127.5)):
        best = min(range(16, 1025), key=lambda t: error(t, steps))
        assert mse_bins(hist, one_sided=one_sided) == best
    assert mse_bins(np.zeros(64, np.int64), one_sided=True) == 64


def test_entropy_resolves_the_body_with_more_bins() -> None:
    model = ir.from_onnx_text(OUTLIER_MODEL)
    result = collect_ranges(model, outlier_samples(), method="entropy", bins=16384)
    x = result.ranges["x"]
    # Bins of 100/16384: the threshold now lands on the body of N(0, 1), past its 3.9-sigma tail.
    assert 3.5 < x.high < 5.0 and x.low == -x.high
    assert result.settings["bins"] == 16384


def test_percentile_matches_numpy_within_one_bin_and_100_is_minmax() -> None:
    model = ir.from_onnx_text(OUTLIER_MODEL)
    samples = outlier_samples()
    magnitudes = np.abs(np.concatenate([s["x"].ravel() for s in samples]).astype(np.float64))
    result = collect_ranges(model, samples, method="percentile", percentile=99.99)
    # The threshold is the upper edge of the bin holding the smallest value whose CDF reaches 99.99%.
    value = float(np.percentile(magnitudes, 99.99, method="inverted_cdf"))
    assert value <= result.ranges["x"].high <= value + 100.0 / 2048
    full = collect_ranges(model, samples, method="percentile", percentile=100.0)
    assert full.as_pairs() == collect_ranges(model, samples).as_pairs()


def test_one_sided_tensor_keeps_its_side() -> None:
    model = ir.from_onnx_text(OUTLIER_MODEL)
    result = collect_ranges(model, outlier_samples(), method="entropy", bins=16384)
    relu = result.ranges["y"]
    assert relu.low == 0.0  # post-Relu: the histogram is the non-negative range, low stays 0
    assert 0.0 < relu.high < result.ranges["scaled"].high


def test_minmax_is_exact_against_numpy() -> None:
    model = ir.from_onnx_text(MLP)
    samples = mlp_samples()
    result = collect_ranges(model, samples)
    assert list(result.ranges) == ["x", "h", "a", "r", "s"]
    w = np.array([[0.5, -1.0], [2.0, 0.25], [-0.75, 1.5]], np.float32)
    b = np.array([0.1, -0.2], np.float32)
    x = np.concatenate([s["x"] for s in samples])
    h = x @ w
    a = h + b
    r = np.maximum(a, 0)
    s = 1 / (1 + np.exp(-r))
    assert result.ranges["x"] == TensorRange(float(x.min()), float(x.max()))
    for name, value in {"h": h, "a": a, "r": r, "s": s}.items():
        got = result.ranges[name]
        np.testing.assert_allclose([got.low, got.high], [value.min(), value.max()], rtol=1e-6, atol=1e-7)
    assert result.samples == 6 and result.method == "minmax" and not result.from_cache


def _reference_entropy_bins(hist: np.ndarray[Any, Any], levels: int) -> int:
    """A direct, per-candidate transliteration of the KL search in the module docstring."""
    h = hist.astype(np.float64)
    n, total = h.size, h.sum()
    best, best_kl = n, np.inf
    for i in range(levels, n + 1):
        p = h[:i].copy()
        p[-1] += h[i:].sum()
        q = np.zeros(i)
        m = i // levels
        for j in range(levels):
            start, stop = j * m, (i if j == levels - 1 else (j + 1) * m)
            nonzero = p[start:stop] > 0
            if nonzero.any():
                mass = h[start:stop].sum()
                q[start:stop][nonzero] = mass / nonzero.sum() if mass > 0 else 1e-4
        if h[:i].sum() == 0:
            continue
        pn, qn = p / total, q / h[:i].sum()
        keep = p > 0
        kl = float(np.sum(pn[keep] * np.log(pn[keep] / qn[keep])))
        if kl < best_kl:
            best, best_kl = i, kl
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_entropy_search_matches_a_direct_implementation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = np.abs(rng.standard_normal(20000))
    values[:5] = 40.0  # outliers
    hist, _ = np.histogram(values, bins=200, range=(0, values.max()))
    hist[rng.integers(0, 60, 10)] = 0  # holes: the non-zero counting matters
    assert entropy_bins(hist, 16) == _reference_entropy_bins(hist, 16)
    assert entropy_bins(hist, 128) == _reference_entropy_bins(hist, 128)


def test_histogram_helpers_edge_cases() -> None:
    assert entropy_bins(np.zeros(256, np.int64)) == 256
    assert entropy_bins(np.ones(64, np.int64)) == 64  # fewer bins than levels: keep them all
    hist = np.zeros(256, np.int64)
    hist[-1] = 10  # everything in the top bin: only the full range keeps any Q mass
    assert entropy_bins(hist) == 256
    uniform = np.ones(1000, np.int64)
    assert percentile_bins(uniform, 100.0) == 1000
    assert percentile_bins(uniform, 50.0) == 500
    assert percentile_bins(uniform, 0.01) == 1


def test_non_finite_values_are_left_out() -> None:
    model = ir.from_onnx_text(MLP)
    samples = mlp_samples(3)
    samples[1]["x"][0, 0] = np.inf
    samples[2]["x"][1, 2] = np.nan
    finite = np.concatenate([s["x"].ravel() for s in samples])
    finite = finite[np.isfinite(finite)]
    for method in ("minmax", "entropy"):
        x = collect_ranges(model, samples, method=method, tensors=["x"]).ranges["x"]
        assert finite.min() <= x.low <= x.high <= finite.max()
    assert collect_ranges(model, samples, tensors=["x"]).ranges["x"] == TensorRange(
        float(finite.min()), float(finite.max())
    )
    nans = [{"x": np.full((1, 3), np.nan, np.float32)}]
    assert "x" not in collect_ranges(model, nans, tensors=["x"]).ranges


# ------------------------------------------------------------------------------- which tensors


def test_calibration_tensors_skip_shapes_constants_initializers_and_ints() -> None:
    model = ir.from_onnx_text(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x, int64[N] k) => (float[N, 4] y, float[N, 4] z, int64[N] k2) <float[4] w = {1, 2, 3, 4}> {
          shape = Shape(x)
          shape_f = Cast<to = 1>(shape)
          half = Constant<value = float {0.5}>()
          scales = Mul(shape_f, half)
          filler = ConstantOfShape<value = float[1] {1.0}>(shape)
          y = Mul(x, w)
          z = Add(y, filler)
          one = Constant<value = int64 {1}>()
          k2 = Add(k, one)
          unused = Identity(scales)
        }"""
    )
    assert calibration_tensors(model) == ["x", "y", "z"]
    assert next(n.op_type for n in model.graph) == "Shape"  # not modified


def test_resnet_like_model_with_a_small_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    model = resnet()
    names = calibration_tensors(model)
    assert len(names) == 24 and names[0] == "image" and names[-1] == "logits"
    log = RunLog(monkeypatch)
    samples = image_samples(16)
    result = collect_ranges(model, samples, method="entropy", memory_budget_mb=0.02)
    assert list(result.ranges) == names
    per_sample = log.runs / (2 * 16)
    assert per_sample >= 3  # 8 KB-32 KB tensors in chunks of at most 20 KB
    assert max(log.output_bytes) <= 0.02 * 2**20
    minmax = collect_ranges(model, samples)
    for name in names:
        narrow, wide = result.ranges[name], minmax.ranges[name]
        assert wide.low <= narrow.low <= narrow.high <= wide.high
    for node in model.graph:
        if node.op_type == "Relu":
            assert result.ranges[node.outputs[0].name or ""].low == 0.0


# ------------------------------------------------------------------------------- memory budget


def test_chunked_equals_unchunked(monkeypatch: pytest.MonkeyPatch) -> None:
    model = resnet()
    samples = image_samples(4)
    log = RunLog(monkeypatch)
    whole = collect_ranges(model, samples, method="entropy")  # min/max and histograms: every statistic
    assert log.runs == 4 * 2
    tiny = collect_ranges(model, samples, method="entropy", memory_budget_mb=1e-6)
    assert log.runs - 8 == 23 * 4 * 2  # every probed tensor alone: 23 runs per sample and pass
    assert tiny.as_pairs() == whole.as_pairs()
    assert tiny.key == whole.key  # the budget changes how, not what


def test_sizes_that_depend_on_data_are_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    model = ir.from_onnx_text(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[N] x, int64[1] reps) => (float[M] y) {
          r = Tile(x, reps)
          a = Relu(r)
          b = Neg(a)
          y = Add(a, b)
        }"""
    )
    rng = np.random.default_rng(0)
    samples = [{"x": rng.standard_normal(64).astype(np.float32), "reps": np.array([4])} for _ in range(3)]
    log = RunLog(monkeypatch)
    # Tile's size depends on the data: on the first sample each tensor runs alone; measured at
    # 1024 bytes each, all four fit the default budget from then on, two of them 2100 bytes.
    whole = collect_ranges(model, samples)
    assert log.output_bytes == [1024] * 4 + [4096] * 2
    chunked = collect_ranges(model, samples, memory_budget_mb=2100 / 2**20)
    assert chunked.as_pairs() == whole.as_pairs()
    assert log.output_bytes[6:] == [1024] * 4 + [2048] * 4


def test_dynamic_spatial_sizes_are_inferred_at_the_sample_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    model = ir.from_onnx_text(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 2, H, W] x) => (float[1, 2, H, W] y) <float[2, 2, 1, 1] w = {1, -1, 0.5, 2}> {
          c = Conv(x, w)
          r = Relu(c)
          y = Neg(r)
        }"""
    )
    rng = np.random.default_rng(0)
    samples = [{"x": rng.standard_normal((1, 2, 8, 8)).astype(np.float32)} for _ in range(2)]
    log = RunLog(monkeypatch)
    collect_ranges(model, samples, memory_budget_mb=1100 / 2**20)
    assert log.output_bytes == [1024, 512] * 2  # planned right from the first sample: [c, r], [y]


def test_model_is_not_modified() -> None:
    model = resnet()
    before = to_bytes(model)
    collect_ranges(model, image_samples(2), method="entropy", memory_budget_mb=0.01)
    assert to_bytes(model) == before


# ----------------------------------------------------------------------------------------- cache


def test_cache_hit_runs_nothing_and_misses_on_any_change(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    model = ir.from_onnx_text(MLP)
    samples = mlp_samples()
    log = RunLog(monkeypatch)
    first = collect_ranges(model, samples, method="entropy", cache_dir=tmp_path)
    assert not first.from_cache and log.runs == 12
    assert [p.name for p in tmp_path.iterdir()] == [f"ranges-{first.key}.json"]  # no temporary file left
    again = collect_ranges(model, samples, method="entropy", cache_dir=tmp_path)
    assert again.from_cache and log.runs == 12
    assert again.as_pairs() == first.as_pairs() and again.key == first.key and again.samples == 6

    changed_sample = [dict(s) for s in samples]
    changed_sample[4] = {"x": samples[4]["x"] + np.float32(1e-3)}
    changed_setting = collect_ranges(model, samples, method="entropy", bins=4096, cache_dir=tmp_path)
    heavier = ir.from_onnx_text(MLP)
    heavier.graph.initializers["w"].const_value = ir.tensor(np.full((3, 2), 0.5, np.float32), name="w")
    results = [
        changed_setting,
        collect_ranges(model, changed_sample, method="entropy", cache_dir=tmp_path),
        collect_ranges(heavier, samples, method="entropy", cache_dir=tmp_path),
        collect_ranges(model, samples, method="percentile", cache_dir=tmp_path),
    ]
    assert not any(r.from_cache for r in results)
    assert len({first.key, *(r.key for r in results)}) == 5
    assert log.runs == 12 + 4 * 12


def test_two_models_never_share_an_entry(tmp_path: Path) -> None:
    small, other = resnet(seed=0), resnet(seed=1)  # same graph, different weights
    samples = image_samples(2)
    a = collect_ranges(small, samples, cache_dir=tmp_path)
    b = collect_ranges(other, samples, cache_dir=tmp_path)
    assert a.key != b.key and not b.from_cache
    assert a.as_pairs() != b.as_pairs()
    assert collect_ranges(small, samples, cache_dir=tmp_path).as_pairs() == a.as_pairs()
    assert collect_ranges(other, samples, cache_dir=tmp_path).as_pairs() == b.as_pairs()
    assert len(list(tmp_path.glob("ranges-*.json"))) == 2


def test_cache_entry_is_json_of_the_range_set(tmp_path: Path) -> None:
    model = ir.from_onnx_text(MLP)
    result = collect_ranges(model, mlp_samples(), method="percentile", cache_dir=tmp_path)
    stored = json.loads((tmp_path / f"ranges-{result.key}.json").read_text())
    assert stored == json.loads(json.dumps(result.to_dict()))
    assert stored["settings"]["method"] == "percentile" and stored["settings"]["percentile"] == 99.999
    assert set(stored["settings"]) >= {"bins", "tensors", "modelport", "onnxruntime"}
    assert result.as_pairs()["s"] == (stored["ranges"]["s"]["low"], stored["ranges"]["s"]["high"])


def test_corrupt_cache_entry_is_recomputed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ir.from_onnx_text(MLP)
    first = collect_ranges(model, mlp_samples(), cache_dir=tmp_path)
    entry = tmp_path / f"ranges-{first.key}.json"
    entry.write_text("{not json")
    log = RunLog(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="modelport.quantize.ranges"):
        again = collect_ranges(model, mlp_samples(), cache_dir=tmp_path)
    assert not again.from_cache and log.runs == 6
    assert again.as_pairs() == first.as_pairs()
    assert "unreadable calibration cache entry" in caplog.text
    assert json.loads(entry.read_text())["key"] == first.key


def test_cache_dir_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot create the calibration cache folder"):
        collect_ranges(ir.from_onnx_text(MLP), mlp_samples(), cache_dir=tmp_path / "file" / "cache")


# ---------------------------------------------------------------------------------- samples


def test_sources_of_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    model = ir.from_onnx_text(MLP)
    samples = mlp_samples()
    expected = collect_ranges(model, samples, method="entropy").as_pairs()

    def generate() -> Iterator[Feeds]:
        yield from mlp_samples()

    assert collect_ranges(model, generate, method="entropy").as_pairs() == expected
    assert collect_ranges(model, tuple(samples), method="entropy").as_pairs() == expected
    one_shot = collect_ranges(model, iter(samples))  # minmax reads once: an iterator is fine
    assert one_shot.as_pairs() == collect_ranges(model, samples).as_pairs()
    messages: list[str] = []
    collect_ranges(model, samples, method="entropy", progress=messages.append)
    assert messages[0] == "min/max: sample 1" and messages[-1] == "histograms: sample 6/6"


def test_one_shot_iterator_needs_one_pass(tmp_path: Path) -> None:
    model = ir.from_onnx_text(MLP)
    with pytest.raises(ConfigError, match=r"method 'entropy' reads the samples twice .* one-shot iterator"):
        collect_ranges(model, iter(mlp_samples()), method="entropy")
    with pytest.raises(ConfigError, match="a cache_dir needs the samples hashed before they are run"):
        collect_ranges(model, iter(mlp_samples()), cache_dir=tmp_path)


def test_reader_that_changes_between_passes() -> None:
    model = ir.from_onnx_text(MLP)
    rng = np.random.default_rng(0)

    def unseeded() -> list[Feeds]:
        return [{"x": rng.standard_normal((1, 3)).astype(np.float32)} for _ in range(3)]

    with pytest.raises(CalibrationDataError, match=r"changed between passes.*seed any random generator"):
        collect_ranges(model, unseeded, method="percentile")
    shared = iter(mlp_samples())
    with pytest.raises(CalibrationDataError, match=r"6 samples, then 0 in the histogram pass"):
        collect_ranges(model, lambda: shared, method="entropy")


def test_sample_errors() -> None:
    model = ir.from_onnx_text(MLP)
    good = mlp_samples(2)
    with pytest.raises(ConfigError, match="samples is one feeds dict"):
        collect_ranges(model, good[0])  # type: ignore[arg-type]
    with pytest.raises(
        ConfigError, match=r"samples is a path or string \('calib.npz'\) — read files with load_calibration"
    ):
        collect_ranges(model, "calib.npz")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="samples is a int"):
        collect_ranges(model, 5)  # type: ignore[arg-type]
    with pytest.raises(CalibrationDataError, match="samples are empty"):
        collect_ranges(model, [])
    with pytest.raises(CalibrationDataError, match="sample 1 is a list, not a dict"):
        collect_ranges(model, [good[0], [good[1]["x"]]])  # type: ignore[list-item]
    with pytest.raises(CalibrationDataError, match=r"sample 0 does not fit the model: .*astype\(np.float32\)"):
        collect_ranges(model, [{"x": good[0]["x"].astype(np.float64)}])
    with pytest.raises(CalibrationDataError, match=r"sample 0 does not fit the model: .*no input named 'pixels'"):
        collect_ranges(model, [{"pixels": good[0]["x"]}])

    def broken() -> Iterator[Feeds]:
        yield good[0]
        raise OSError("disk gone")

    with pytest.raises(CalibrationDataError, match="reading calibration sample 1 failed: OSError: disk gone"):
        collect_ranges(model, broken)

    def fails() -> list[Feeds]:
        raise RuntimeError("no data")

    with pytest.raises(CalibrationDataError, match=r"the samples function .*fails failed: RuntimeError: no data"):
        collect_ranges(model, fails)
    with pytest.raises(CalibrationDataError, match="returned a dict — it must return an iterable"):
        collect_ranges(model, lambda: good[0])  # type: ignore[arg-type,return-value]


# ---------------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"method": "kl"}, "unknown calibration method 'kl'"),
        ({"percentile": 0.0}, r"outside \(0, 100\]"),
        ({"percentile": 100.5}, r"outside \(0, 100\]"),
        ({"bins": 64}, "bins=64 is too few"),
        ({"bins": 2048.0}, "bins=2048.0 is too few"),
        ({"memory_budget_mb": 0}, "must be positive"),
        ({"tensors": "h"}, "is a string"),
        ({"tensors": []}, "names no tensor"),
        ({"tensors": ["nope"]}, "no tensor 'nope' in its main graph"),
        ({"tensors": ["w"]}, "'w' is an initializer"),
    ],
)
def test_bad_settings(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        collect_ranges(ir.from_onnx_text(MLP), mlp_samples(1), **options)


def test_non_float_tensor_and_nothing_to_calibrate() -> None:
    model = ir.from_onnx_text(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (int64[N] k) => (int64[N] k2) {
          one = Constant<value = int64 {1}>()
          k2 = Add(k, one)
        }"""
    )
    samples = [{"k": np.arange(3)}]
    with pytest.raises(ConfigError, match="tensor 'k2' has dtype INT64, but only float32"):
        collect_ranges(model, samples, tensors=["k2"])
    with pytest.raises(QuantizationError, match="no float32 activations to calibrate"):
        collect_ranges(model, samples)


def test_range_set_views() -> None:
    result = RangeSet({"a": TensorRange(-1.0, 2.5)}, "minmax", 3, {"method": "minmax"}, "abc")
    assert result.as_pairs() == {"a": (-1.0, 2.5)}
    assert result.to_dict() == {
        "method": "minmax",
        "samples": 3,
        "settings": {"method": "minmax"},
        "key": "abc",
        "from_cache": False,
        "ranges": {"a": {"low": -1.0, "high": 2.5}},
    }
    assert ranges_module.METHODS == ("minmax", "entropy", "percentile", "mse")


def test_entropy_is_not_fooled_by_the_zeros_a_relu_leaves() -> None:
    """Half of a post-Relu tensor is exactly 0; counted in the histogram they pulled the KL
    threshold so low that the quantized ResNet's output SQNR fell to ~5 dB. Without them entropy
    calibration is at least as good as MinMax here."""
    from modelport.passes.manager import optimize
    from modelport.quantize.int8 import quantize_static
    from modelport.runners.onnxruntime import OrtRunner
    from modelport.verify.diff import diff_array
    from modelport.verify.tolerance import EXACT

    model = optimize(resnet(widths=(16, 32), blocks=1, size=32), measure=False).model
    rng = np.random.default_rng(3)
    calib = [{"image": rng.uniform(0, 1, (1, 3, 32, 32)).astype(np.float32)} for _ in range(16)]
    held_out = {"image": rng.uniform(0, 1, (8, 3, 32, 32)).astype(np.float32)}

    def sqnr(method: str) -> float:
        quantized = quantize_static(model, ranges=collect_ranges(model, calib, method=method))  # type: ignore[arg-type]
        with OrtRunner(model) as ref, OrtRunner(quantized) as cand:
            return diff_array("logits", cand.infer(held_out)["logits"], ref.infer(held_out)["logits"], EXACT).sqnr_db

    minmax, entropy = sqnr("minmax"), sqnr("entropy")
    assert entropy > 30.0
    assert entropy >= minmax - 1.0


def test_entropy_never_clips_most_of_a_tensor_away() -> None:
    """A strictly positive tensor far from 0 (a pooled feature in [0.2, 2.2]): clipping below
    nearly all its mass leaves P one spike Q matches exactly (KL ~ 0); such thresholds are out."""
    from modelport.quantize.ranges import MAX_CLIPPED, entropy_bins

    rng = np.random.default_rng(0)
    values = rng.uniform(0.2, 2.2, 100_000)
    hist = np.bincount(np.minimum((values / 2.2 * 2048).astype(int), 2047), minlength=2048)
    chosen = entropy_bins(hist)
    kept = hist[:chosen].sum() / hist.sum()
    assert kept >= 1 - MAX_CLIPPED
