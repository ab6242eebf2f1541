"""Timing a may-slow rewrite: the rewritten region cut out of both versions, or the whole model."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from helpers import apply, bind, op_types, run_plain

from modelport.passes.base import Pass
from modelport.passes.rules.parallel_conv import MergeParallelConvPass
from modelport.passes.timing import Timer
from modelport.passes.verification import RegionVerifier
from modelport.verify.inputs import InputPlan

TOL = MergeParallelConvPass.tolerance
RNG = np.random.default_rng(0)


def _model() -> ir.Model:
    """A head (Sigmoid, Mul) the rewrite does not touch, three parallel Convs, a tail reading them."""
    model = ir.from_onnx_text(
        """<ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 8, 12, 12] x) => (float[N, 15, 12, 12] y) {
      s = Sigmoid(x)
      h = Mul(s, x)
      c1 = Conv<pads=[1,1,1,1]>(h, w1, b1)
      c2 = Conv<pads=[1,1,1,1]>(h, w2, b2)
      c3 = Conv<pads=[1,1,1,1]>(h, w3, b3)
      r1 = Relu(c1)
      r2 = Relu(c2)
      r3 = Relu(c3)
      cat = Concat<axis=1>(r1, r2, r3)
      y = Sigmoid(cat)
    }"""
    )
    for i, out in enumerate((4, 5, 6), start=1):
        bind(model, f"w{i}", RNG.standard_normal((out, 8, 3, 3)).astype(np.float32))
        bind(model, f"b{i}", RNG.standard_normal(out).astype(np.float32))
    return model


def _rewritten() -> tuple[ir.Model, ir.Model]:
    before = _model()
    after, changed = apply(MergeParallelConvPass(), before)
    assert changed and op_types(after).count("Conv") == 1
    return before, after


def test_the_region_is_what_changed_plus_its_readers_and_runs_like_the_model() -> None:
    before, after = _rewritten()
    pair = RegionVerifier(before, InputPlan(), [1]).timing_pair(before, after)
    assert not isinstance(pair, str), pair
    region_b, region_a, feeds = pair
    # The Convs (and the Split that replaces them), widened by the Relus that read them; the head
    # (Sigmoid, Mul) and the tail (Concat, Sigmoid) are the same on both sides and left out.
    assert sorted(op_types(region_b)) == ["Conv", "Conv", "Conv", "Relu", "Relu", "Relu"]
    assert sorted(op_types(region_a)) == ["Conv", "Relu", "Relu", "Relu", "Split"]
    names_b = [v.name for v in region_b.graph.inputs]
    assert names_b == [v.name for v in region_a.graph.inputs] == ["h"] and list(feeds) == ["h"]
    assert feeds["h"].shape == (1, 8, 12, 12) and feeds["h"].dtype == np.float32
    assert {v.name for v in region_b.graph.outputs} == {v.name for v in region_a.graph.outputs} == {"r1", "r2", "r3"}
    got_b, got_a = run_plain(region_b, feeds), run_plain(region_a, feeds)
    for name, value in got_b.items():
        np.testing.assert_allclose(got_a[name], value, atol=TOL.atol, rtol=TOL.rtol, err_msg=name)


def test_shape_inference_runs_only_when_a_boundary_shape_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelport.ir import serde

    before, after = _rewritten()
    for model in (before, after):
        serde.infer_shapes(model)
    calls: list[ir.Model] = []
    real = serde.infer_shapes
    monkeypatch.setattr(serde, "infer_shapes", lambda model: calls.append(model) or real(model))
    regions = RegionVerifier(before, InputPlan(), [1])
    pair = regions.timing_pair(before, after)
    assert not isinstance(pair, str), pair
    assert calls == []  # every boundary value already had its type and shape
    for model in (before, after):
        for node in model.graph:
            for value in node.outputs:
                value.shape = None  # what a pass leaves on values it creates
    pair = regions.timing_pair(before, after)
    assert not isinstance(pair, str), pair
    assert calls == [before, after]
    assert pair[2]["h"].shape == (1, 8, 12, 12)  # inferred, since it was not known


def test_the_timer_times_the_region() -> None:
    before, after = _rewritten()
    timing = Timer("generic", InputPlan()).compare(before, after)
    assert timing.scope == "rewritten region (6 -> 5 nodes)"
    assert timing.before_ms > 0 and timing.after_ms > 0


class _RenameInsideIf(Pass):
    """Changes an attribute inside an If branch (a rewrite no region can be cut out for)."""

    name = "rename-inside-if"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        node = next(n for n in model.graph if n.op_type == "If")
        branch = node.attributes["then_branch"].as_graph()
        inner = next(iter(branch))
        inner.attributes["alpha"] = ir.AttrFloat32("alpha", 0.2)
        return ir.passes.PassResult(model, modified=True)


def test_a_rewrite_inside_a_subgraph_is_timed_on_the_whole_model() -> None:
    model = ir.from_onnx_text(
        """<ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 4] x, bool c) => (float[N, 4] y) {
      y = If(c) <
        then_branch = t () => (float[N, 4] a) { a = LeakyRelu<alpha=0.1>(x) },
        else_branch = e () => (float[N, 4] b) { b = Relu(x) }
      >
    }"""
    )
    after, changed = apply(_RenameInsideIf(), model)
    assert changed
    timing = Timer("generic", InputPlan()).compare(model, after)
    assert timing.scope == "whole model (a rewrite inside an If/Loop/Scan body cannot be cut out as a region)"
    assert timing.before_ms > 0 and timing.after_ms > 0


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ([1.0, 1.0], [0.5, 0.5], False),  # two rounds are not enough, however far apart
        ([1.0, 1.0, 1.0], [0.8, 0.85, 0.9], True),  # after ahead by >= 10 % in every round
        ([1.0, 1.0, 1.0], [1.2, 1.15, 1.1], True),  # after behind by >= 10 % in every round
        ([1.0, 1.0, 1.0], [0.8, 0.85, 0.95], False),  # one round within the margin
        ([1.0, 1.0, 1.0, 1.0], [0.8, 1.3, 0.8, 0.8], False),  # rounds disagree
    ],
)
def test_timing_ends_early_only_on_a_clear_verdict(before: list[float], after: list[float], expected: bool) -> None:
    from modelport.passes.timing import settled

    assert settled([before, after]) is expected


@pytest.mark.parametrize(
    ("after", "threshold", "expected"),
    [
        ([0.95, 0.94, 0.95], 0.97, True),  # every round clearly below the "clearly faster" bar
        ([0.95, 0.94, 0.95], None, False),  # without a threshold only a 10 % lead settles it
        ([0.99, 1.00, 0.995], 0.97, True),  # every round clearly above it: not clearly faster
        ([0.95, 0.965, 0.95], 0.97, False),  # one round within 1 % of the bar
        ([0.95, 0.99, 0.95], 0.97, False),  # rounds on both sides
        ([1.00, 1.00], 1.02, False),  # two rounds are not enough
        ([1.00, 0.99, 1.00, 1.00], 1.02, True),  # fewer nodes, never slower than the 2 % bar
        ([1.04, 1.05, 1.04], 1.02, True),  # fewer nodes, but slower in every round
    ],
)
def test_timing_ends_early_once_the_verdict_is_clear(
    after: list[float], threshold: float | None, expected: bool
) -> None:
    from modelport.passes.timing import settled

    assert settled([[1.0] * len(after), after], threshold=threshold) is expected


def test_timing_sessions_use_one_thread_and_prepacked_shared_weights() -> None:
    from modelport.passes.timing import TIMING_THREADS, _timing_runner

    before, _ = _rewritten()
    with _timing_runner(before, "disable", "before") as runner:
        options = runner.session.get_session_options()
        assert options.intra_op_num_threads == TIMING_THREADS == 1
        assert runner.share_weights and runner.prepack_shared  # tests/runners: ORT then prepacks them
