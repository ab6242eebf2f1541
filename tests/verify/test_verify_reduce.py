"""verify.reduce: shrinking failing models to the node that breaks them, with every kind of check."""

from __future__ import annotations

import shlex
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelport.errors import BackendError, ConfigError, ModelSaveError
from modelport.ir.serde import clone, load, save
from modelport.ir.specs import specs_of
from modelport.runners.onnxruntime import OrtRunner
from modelport.surgery import add_outputs, extract
from modelport.verify.inputs import InputPlan, generate_feeds
from modelport.verify.reduce import (
    CommandCheck,
    CompareCheck,
    ErrorCheck,
    FunctionCheck,
    NanCheck,
    feeds_path,
    parse_check,
    reduce_model,
)

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'


def resnet_chain(*, blocks: int = 5, broken: str | None = None, fault: str = "nan", width: int = 8) -> ir.Model:
    """A ResNet-like chain: stem Conv+Relu, ``blocks`` residual blocks (Conv-Relu-Conv-Add-Relu),
    pooling and a MatMul — 5 * blocks + 5 nodes, seeded weights. The Conv named ``broken`` gets a
    NaN weight (``fault="nan"``) or weights 1e4 times too large (``fault="explode"``)."""
    rng = np.random.default_rng(0)
    nodes: list[Any] = []
    inits: list[Any] = []

    def conv(name: str, x: str, cin: int, cout: int) -> str:
        w = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
        if name == broken:
            if fault == "nan":
                w[1, 0, 1, 1] = np.nan
            else:
                w *= np.float32(1e4)
        inits.append(numpy_helper.from_array(w, f"{name}.weight"))
        nodes.append(helper.make_node("Conv", [x, f"{name}.weight"], [name], name=name, pads=[1, 1, 1, 1]))
        return name

    def op(kind: str, name: str, *inputs: str) -> str:
        nodes.append(helper.make_node(kind, list(inputs), [name], name=name))
        return name

    x = op("Relu", "stem_relu", conv("stem_conv", "image", 3, width))
    for b in range(blocks):
        y = op("Relu", f"b{b}_relu1", conv(f"b{b}_conv1", x, width, width))
        y = conv(f"b{b}_conv2", y, width, width)
        x = op("Relu", f"b{b}_relu2", op("Add", f"b{b}_add", y, x))
    x = op("Flatten", "flatten", op("GlobalAveragePool", "pool", x))
    inits.append(numpy_helper.from_array(rng.standard_normal((width, 4)).astype(np.float32), "fc.weight"))
    op("MatMul", "logits", x, "fc.weight")
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return ir.serde.deserialize_model(proto)


def from_text(text: str) -> ir.Model:
    """An ONNX-text model whose nodes are named after their first output."""
    model = ir.from_onnx_text(HEADER + text)
    for node in model.graph:
        node.name = node.outputs[0].name
    return model


def original_values(model: ir.Model, names: list[str], feeds: dict[str, np.ndarray[Any, Any]]) -> dict[str, Any]:
    """Tensors of ``model`` on ``feeds``, exposed as outputs, on ONNX Runtime without optimizations."""
    work = clone(model)
    add_outputs(work, names)
    with OrtRunner(work, graph_optimization="disable") as runner:
        out = runner.infer(feeds)
    return {n: out[n] for n in names}


def kept(result: Any) -> list[tuple[str, str]]:
    return [(n.name, n.op_type) for n in result.nodes]


# ------------------------------------------------------------------------------------------- nan


def test_nan_check_reduces_a_resnet_chain_to_the_broken_conv(tmp_path: Path) -> None:
    model = resnet_chain(broken="b2_conv2")
    result = reduce_model(model, "nan")
    assert kept(result) == [("b2_conv2", "Conv")]
    assert result.inputs == ["b2_relu1"] and result.outputs == ["b2_conv2"]
    assert result.original_nodes == 30 and len(model.graph) == 30  # the input model is untouched
    assert "holds 256 NaN and 0 Inf of 2048" in result.detail  # one channel of 8x16x16
    # Bisection, not a scan: 1 + ~log2(30) on the output side + ~log2(15) on the input side.
    assert result.steps[0].phase == "original"
    assert result.checks_run == len(result.steps) <= 12
    assert {s.phase for s in result.steps} <= {"original", "outputs", "inputs", "linear"}
    # The Conv is fed what its input really is in the original model.
    assert result.feeds is not None
    image = generate_feeds(specs_of(model.graph.inputs), InputPlan())["image"]
    expected = original_values(model, ["b2_relu1"], {"image": image})["b2_relu1"]
    np.testing.assert_allclose(result.feeds["b2_relu1"], expected, rtol=0, atol=1e-6)
    # The saved reproducer fails on its own, with its saved inputs.
    model_path, npz = result.save(tmp_path / "repro.onnx")
    assert npz == tmp_path / "repro.feeds.npz"
    with np.load(npz) as saved:
        fed = saved["b2_relu1"]
    with OrtRunner(model_path) as runner:
        out = runner.infer({"b2_relu1": fed})["b2_conv2"]
    assert np.isnan(out).sum() == 256 and np.isfinite(fed).all()


def test_nan_check_keeps_the_failing_output_of_a_multi_output_model() -> None:
    model = from_text("""
        g (float[2, 4] x) => (float[2, 4] fine, float[2, 4] y) {
            fine = Relu(x)
            a = Abs(x)
            n = Neg(a)
            one = Constant<value = float {1.0}>()
            s = Sub(n, one)
            l = Log(s)
            y = Tanh(l)
        }""")
    result = reduce_model(model, NanCheck())
    assert kept(result) == [("l", "Log")]
    assert result.inputs == ["s"] and result.outputs == ["l"]


def test_parallel_branches_do_not_mislead_the_bisection() -> None:
    """The NaN comes early in topological order, then a long healthy branch: probes there pass
    without saying anything about the broken branch."""
    healthy = "\n".join(f"q{i} = {'Tanh' if i % 2 else 'Neg'}(q{i - 1})" for i in range(1, 9))
    model = from_text(f"""
        g (float[2, 4] x) => (float[2, 4] y) {{
            q0 = Relu(x)
            ab = Abs(x)
            ng = Neg(ab)
            one = Constant<value = float {{1.0}}>()
            s = Sub(ng, one)
            lg = Log(s)
            {healthy}
            y = Add(lg, q8)
        }}""")
    result = reduce_model(model, "nan")
    assert kept(result) == [("lg", "Log")]
    assert result.inputs == ["s"]
    assert all(s.phase != "linear" or not s.failing for s in result.steps)  # bisection alone found it
    assert result.checks_run <= 7


def test_captured_values_make_a_fault_show_that_random_inputs_hide() -> None:
    """The divisor is exactly zero only on the values the original computes."""
    model = from_text("""
        g (float[1, 8] x) => (float[1, 8] y) {
            a = Abs(x)
            big = Constant<value = float {100.0}>()
            s = Sub(a, big)
            d = Relu(s)
            q = Div(x, d)
            two = Constant<value = float {2.0}>()
            y = Mul(q, two)
        }""")
    result = reduce_model(model, "nan")
    assert kept(result) == [("q", "Div")]
    assert result.inputs == ["x", "d"]
    assert result.feeds is not None
    np.testing.assert_array_equal(result.feeds["d"], np.zeros((1, 8), np.float32))
    # Fed random values at the cut, the same Div looks healthy: a reducer feeding random inputs
    # would never have kept it.
    div = extract(model, ["x", "d"], ["q"])
    random = generate_feeds(specs_of(div.graph.inputs), InputPlan(seed=3))
    assert not NanCheck().run(div, random).failing
    assert NanCheck().run(div, result.feeds).failing


def test_the_original_must_fail_the_check() -> None:
    with pytest.raises(ConfigError, match=r"original model does not fail the check nan:onnxruntime \(every output"):
        reduce_model(resnet_chain(), "nan")


# ----------------------------------------------------------------------------------------- error


def test_error_check_reduces_to_the_gather_that_indexes_out_of_range() -> None:
    model = from_text("""
        g (float[1, 8] x) => (float[1] y) {
            r = Relu(x)
            am = ArgMax<axis = 1, keepdims = 0>(r)
            hundred = Constant<value = int64 {100}>()
            idx = Add(am, hundred)
            gathered = Gather<axis = 1>(r, idx)
            two = Constant<value = float {2.0}>()
            y = Mul(gathered, two)
        }""")
    result = reduce_model(model, "error")
    assert kept(result) == [("gathered", "Gather")]
    assert result.inputs == ["r", "idx"]
    assert "BackendError" in result.detail and "out of" in result.detail
    assert result.feeds is not None
    np.testing.assert_array_equal(result.feeds["idx"], np.argmax(result.feeds["r"], axis=1) + 100)
    assert isinstance(parse_check("error"), ErrorCheck)


# --------------------------------------------------------------------------------------- compare


def test_compare_onnxruntime_openvino_finds_the_relu_that_drops_nan() -> None:
    """A genuine engine difference: ONNX Runtime's Relu keeps NaN, OpenVINO's maps it to 0."""
    pytest.importorskip("openvino")
    model = resnet_chain(blocks=1, broken="b0_conv2")
    result = reduce_model(model, "compare:onnxruntime,openvino")
    assert kept(result) == [("b0_relu2", "Relu")]
    assert result.inputs == ["b0_add"]
    assert "non-finite values differ" in result.detail
    assert result.feeds is not None and np.isnan(result.feeds["b0_add"]).any()  # the NaN came from upstream


def test_compare_check_parses_backends_and_tolerance() -> None:
    check = parse_check("compare:onnxruntime,onnxruntime:1e-3,0")
    assert isinstance(check, CompareCheck)
    assert (check.tolerance.atol, check.tolerance.rtol) == (1e-3, 0.0)
    model = from_text("g (float[2] x) => (float[2] y) { y = Relu(x) }")
    verdict = check.run(model, {"x": np.array([1.0, -1.0], np.float32)})
    assert not verdict.failing and "agree within atol=0.001, rtol=0" in verdict.detail


# ---------------------------------------------------------------------------------- python check


CHECK_MODULE = '''
import numpy as np
from modelport.runners.onnxruntime import OrtRunner


def explodes(model, feeds):
    """Outputs above 1e3 from inputs below it."""
    if any(np.abs(a).max() > 1e3 for a in feeds.values()):
        return False
    with OrtRunner(model, graph_optimization="disable") as runner:
        outputs = runner.infer(feeds)
    return bool(any(np.abs(a).max() > 1e3 for a in outputs.values()))


def not_a_bool(model, feeds):
    return "yes"


def raises(model, feeds):
    raise RuntimeError("broken check")
'''


@pytest.fixture
def check_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "reduce_checks_for_test.py").write_text(CHECK_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "reduce_checks_for_test"


def test_entry_point_check_flags_the_exploding_conv(check_module: str) -> None:
    model = resnet_chain(broken="b3_conv1", fault="explode")
    result = reduce_model(model, f"{check_module}:explodes")
    assert kept(result) == [("b3_conv1", "Conv")]
    assert result.inputs == ["b2_relu2"]
    assert result.check == f"{check_module}:explodes"


def test_entry_point_errors(check_module: str) -> None:
    with pytest.raises(ConfigError, match="cannot import module 'no_such_module_for_reduce'"):
        parse_check("no_such_module_for_reduce:check")
    with pytest.raises(ConfigError, match="module 'json' has no attribute 'no_such_function'"):
        parse_check("json:no_such_function")
    with pytest.raises(ConfigError, match="'json:__doc__' is a str, not a function"):
        parse_check("json:__doc__")
    model = resnet_chain(blocks=1)
    with pytest.raises(ConfigError, match=r"returned str 'yes', but it must return True"):
        reduce_model(model, f"{check_module}:not_a_bool")
    with pytest.raises(ConfigError, match="raised RuntimeError on a candidate of 10 nodes: broken check") as info:
        reduce_model(model, f"{check_module}:raises")
    assert isinstance(info.value.__cause__, RuntimeError)


def test_linear_phase_drops_interleaved_branch_nodes() -> None:
    """Bisection keeps everything after the cut; removing ends one by one leaves only what matters."""
    model = from_text("""
        g (float[2, 4] x) => (float[2, 4] y) {
            a = Relu(x)
            c = Sigmoid(a)
            b1 = Neg(a)
            b2 = Abs(b1)
            add = Add(b2, c)
            y = Tanh(add)
        }""")

    def needs_c_and_b1(candidate: ir.Model, feeds: dict[str, Any]) -> bool:
        return {"c", "b1"} <= {n.name for n in candidate.graph}

    result = reduce_model(model, needs_c_and_b1)
    assert sorted(kept(result)) == [("b1", "Neg"), ("c", "Sigmoid")]
    assert result.inputs == ["a"] and result.outputs == ["c", "b1"]
    linear = [s for s in result.steps if s.phase == "linear"]
    assert [s.failing for s in linear][:2] == [True, True]  # 'add' went, then 'b2'
    assert isinstance(FunctionCheck(needs_c_and_b1), FunctionCheck)


# -------------------------------------------------------------------------------- command check


def _python(code: str) -> str:
    return f"{shlex.quote(sys.executable)} -S -c {shlex.quote(code)}"


def test_command_check_reduces_through_a_subprocess() -> None:
    # Fails (exit 1) while the candidate file still holds the weights of b1_conv1.
    code = "import sys; sys.exit(1 if b'b1_conv1.weight' in open(sys.argv[1], 'rb').read() else 0)"
    check = parse_check(_python(code))
    assert isinstance(check, CommandCheck) and check.argv[-1] == "{model}" and not check.wants_feeds
    result = reduce_model(resnet_chain(), check)
    assert kept(result) == [("b1_conv1", "Conv")]
    assert result.inputs == ["b0_relu2"] and result.outputs == ["b1_conv1"]
    assert result.detail == "exit status 1"
    assert result.captures == 1  # only for the reproducer's inputs: the command does not read feeds
    assert result.feeds is not None and result.feeds["b0_relu2"].shape == (1, 8, 16, 16)


def test_command_check_gets_the_feeds_and_reports_the_exit_status() -> None:
    code = "import sys, zipfile; sys.exit(3 if zipfile.ZipFile(sys.argv[2]).namelist() == ['x.npy'] else 0)"
    check = CommandCheck(_python(code) + " {model} {feeds}")
    assert check.wants_feeds
    model = from_text("g (float[2] x) => (float[2] y) { y = Relu(x) }")
    try:
        verdict = check.run(model, {"x": np.ones(2, np.float32)})
    finally:
        check.close()
    assert verdict.failing and verdict.detail == "exit status 3"


def test_command_check_errors(tmp_path: Path) -> None:
    model = from_text("g (float[2] x) => (float[2] y) { y = Relu(x) }")
    slow = CommandCheck(_python("import time; time.sleep(60)"), timeout=0.3)
    with pytest.raises(ConfigError, match=r"did not finish within 0.3 s on a candidate of 1 nodes — give it more"):
        slow.run(model, {})
    slow.close()
    missing = CommandCheck([str(tmp_path / "no-such-tool"), "--flag"])
    with pytest.raises(ConfigError, match="could not be started"):
        missing.run(model, {})
    missing.close()
    with pytest.raises(ConfigError, match="timeout must be > 0"):
        CommandCheck("true", timeout=0)
    with pytest.raises(ConfigError, match="the check command is empty"):
        CommandCheck([])


# ----------------------------------------------------------------------------- parsing and saving


def test_parse_check_errors() -> None:
    with pytest.raises(ConfigError, match="unknown check 'nann' — use nan"):
        parse_check("nann")
    with pytest.raises(ConfigError, match="the check is empty"):
        parse_check("  ")
    with pytest.raises(ConfigError, match="must name two backends"):
        parse_check("compare:onnxruntime")
    with pytest.raises(ConfigError, match="the tolerance 'x,1' must be two numbers"):
        parse_check("compare:onnxruntime,onnxruntime:x,1")
    with pytest.raises(BackendError, match="unknown backend 'nosuchengine'"):
        parse_check("nan:nosuchengine")
    assert parse_check("nan").name == "nan:onnxruntime"
    with pytest.raises(ConfigError, match=r"a check is a Check, a spelling .* or a function, not int"):
        reduce_model(resnet_chain(blocks=1), 42)  # type: ignore[arg-type]


def test_save_refuses_the_input_path_and_writes_feeds_next_to_the_output(tmp_path: Path) -> None:
    source = save(resnet_chain(broken="b0_conv1"), tmp_path / "model.onnx")
    before = source.read_bytes()
    result = reduce_model(load(source), "nan")
    with pytest.raises(ModelSaveError, match="refusing to overwrite the input model"):
        result.save(source)
    assert source.read_bytes() == before
    model_path, npz = result.save(tmp_path / "out" / "repro.onnx")
    assert npz == feeds_path(model_path) == tmp_path / "out" / "repro.feeds.npz"
    assert [n.op_type for n in load(model_path).graph] == ["Conv"]
    with zipfile.ZipFile(npz) as archive:
        assert archive.namelist() == ["stem_relu.npy"]
