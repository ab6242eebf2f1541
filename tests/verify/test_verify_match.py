"""Tensor pairing across graphs: by structure first, through fusions on either side, then by
name and position; everything left unpaired is listed."""

from __future__ import annotations

import onnx_ir as ir

from modelport.ir.serde import infer_shapes
from modelport.passes.manager import optimize
from modelport.verify.match import match_tensors
from resnet_models import resnet

HEADER = '<ir_version: 8, opset_import: ["" : 17, "com.microsoft" : 1]>'


def _model(body: str, signature: str = "(float[1, 2, 4, 4] x) => (float[1, 2, 4, 4] y)", consts: str = "") -> ir.Model:
    model = ir.from_onnx_text(f"{HEADER}\ng {signature}\n{consts}\n{{\n{body}\n}}")
    infer_shapes(model)  # the positional fallback compares shapes
    return model


CONSTS = (
    "<float[2, 2, 1, 1] w = {1, 0, 0, 1}, float[2] b = {0.5, -0.5}, float[2] s = {1, 1}, "
    "float[2] m = {0, 0}, float[2] v = {1, 1}, float[2, 2, 3, 3] w3 = {" + ", ".join(["0.1"] * 36) + "}>"
)


def _pairs(reference: ir.Model, candidate: ir.Model) -> dict[str, tuple[str, str]]:
    return {p.candidate: (p.reference, p.how) for p in match_tensors(reference, candidate).pairs}


def test_identical_graphs_pair_every_tensor_by_structure() -> None:
    model = resnet()
    matching = match_tensors(model, model)
    dynamic = [v for n in model.graph for v in n.outputs]
    assert len(matching.pairs) == len(dynamic) + 1  # + the graph input
    assert all(p.reference == p.candidate for p in matching.pairs)
    assert matching.counts() == {"input": 1, "structure": len(dynamic)}
    assert matching.unmatched_candidate == matching.unmatched_reference == []


def test_conv_of_a_fused_graph_pairs_with_the_batchnorm_of_the_original() -> None:
    original = _model("c = Conv(x, w)\nn = BatchNormalization(c, s, b, m, v)\ny = Relu(n)", consts=CONSTS)
    fused = _model("k = Conv(x, w, b)\ny = Relu(k)", consts=CONSTS)
    pairs = _pairs(original, fused)
    assert pairs["k"] == ("n", "fusion")
    assert pairs["y"] == ("y", "structure")
    matching = match_tensors(original, fused)
    # The original Conv's output has no counterpart: listed, never paired wrongly.
    assert matching.unmatched_reference == ["c"]


def test_the_unfused_side_may_be_the_candidate() -> None:
    original = _model("c = Conv(x, w)\nn = BatchNormalization(c, s, b, m, v)\ny = Relu(n)", consts=CONSTS)
    fused = _model("k = Conv(x, w, b)\ny = Relu(k)", consts=CONSTS)
    pairs = _pairs(fused, original)
    assert pairs["n"] == ("k", "fusion")
    assert "c" not in pairs
    assert match_tensors(fused, original).unmatched_candidate == ["c"]


def test_a_name_kept_by_a_fusion_is_not_trusted() -> None:
    """The fused Conv keeps the old Conv's name 'c' but now computes what 'n' held."""
    original = _model("c = Conv(x, w)\nn = BatchNormalization(c, s, b, m, v)\ny = Relu(n)", consts=CONSTS)
    fused = _model("c = Conv(x, w, b)\ny = Relu(c)", consts=CONSTS)
    assert _pairs(original, fused)["c"] == ("n", "fusion")


def test_parallel_convs_on_one_input_pair_by_weight_shape_not_order() -> None:
    original = _model("p = Conv(x, w3)\nq = Conv(x, w)\ny = Add(p, q)", consts=CONSTS)
    # Renamed and in the other order; each Conv also gained a bias.
    candidate = _model(
        "b1 = Conv(x, w, b)\na1 = Conv(x, w3, b)\ny = Add(a1, b1)",
        consts=CONSTS.replace("float[2] b", "float[2] b"),
    )
    pairs = _pairs(original, candidate)
    assert pairs["a1"] == ("p", "structure")
    assert pairs["b1"] == ("q", "structure")


def test_fused_conv_with_a_residual_pairs_with_the_relu_after_the_add() -> None:
    original = _model("c = Conv(x, w, b)\na = Add(c, x)\ny = Relu(a)", consts=CONSTS)
    candidate = _model(
        'y = com.microsoft.FusedConv <activation: string = "Relu"> (x, w, b, x)',
        consts=CONSTS,
    )
    assert _pairs(original, candidate)["y"] == ("y", "fusion")


def test_leftovers_pair_by_name_then_by_position() -> None:
    # 'Neg(Neg(.))' became 'Identity' in the candidate: structure cannot see through it.
    original = _model("t = Neg(x)\nu = Neg(t)\ny = Relu(u)")
    by_name = _model("u = Identity(x)\ny = Relu(u)")
    assert _pairs(original, by_name)["u"] == ("u", "name")
    by_position = _model("z = Identity(x)\ny = Relu(z)")
    assert _pairs(original, by_position)["z"] == ("u", "position")


def test_inputs_and_outputs_pair_by_position_when_renamed() -> None:
    original = _model("y = Relu(x)")
    renamed = _model(
        "out = Sigmoid(inp)",
        signature="(float[1, 2, 4, 4] inp) => (float[1, 2, 4, 4] out)",
    )
    pairs = _pairs(original, renamed)
    assert pairs["inp"] == ("x", "input")
    assert pairs["out"] == ("y", "output")


def test_optimized_resnet_pairs_everything_it_kept() -> None:
    model = resnet(widths=(8, 16), blocks=2)
    optimized = optimize(model, measure=False).model
    matching = match_tensors(model, optimized)
    assert matching.unmatched_candidate == []
    assert set(matching.counts()) <= {"input", "structure", "fusion"}
    # Only the pre-BatchNorm Conv outputs of the original are left over.
    assert all(name.startswith("conv_") for name in matching.unmatched_reference)
    assert matching.to_dict()["pairs"] == len(matching.pairs)
