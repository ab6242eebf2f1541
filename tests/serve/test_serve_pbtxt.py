"""Triton's config.pbtxt: the text-format parser, the mapping to ModelConfig keys, and the check
of declared inputs/outputs against a model.

Where tritonclient is installed (the test extra), the configs used here are also parsed by
protobuf's own text_format against Triton's ModelConfig schema: that proves they are configs
Triton accepts, and checks this parser's values against the reference implementation.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelport.errors import RepositoryError
from modelport.ir.specs import TensorSpec, specs_of
from modelport.serve.pbtxt import (
    IGNORED_FIELDS,
    DeclaredTensor,
    Identifier,
    TritonConfig,
    check_declared,
    parse_pbtxt,
    read_triton_config,
)
from modelport.serve.repository import ModelConfig

from .serve_models import mixed_model

# A ResNet-50 as the Triton docs configure one for the ONNX Runtime backend on CPU.
RESNET = """
# ResNet-50, ONNX Runtime on CPU
name: "resnet50"
platform: "onnxruntime_onnx"
backend: "onnxruntime"
default_model_filename: "model.onnx"
max_batch_size: 32
version_policy: { latest: { num_versions: 2 } }
input [
  {
    name: "input"
    data_type: TYPE_FP32
    format: FORMAT_NCHW
    dims: [ 3, 224, 224 ]
  }
]
output [
  {
    name: "output"
    data_type: TYPE_FP32
    dims: [ 1000 ]
  }
]
instance_group [
  { count: 2, kind: KIND_CPU },
  { name: "spare", count: 1, kind: KIND_CPU }
]
dynamic_batching {
  preferred_batch_size: [ 8, 16 ]
  max_queue_delay_microseconds: 500
  default_queue_policy {
    max_queue_size: 128
    default_timeout_microseconds: 250000
    timeout_action: REJECT
  }
}
optimization { graph: { level: 1 } }
parameters { key: "intra_op_thread_count" value: { string_value: "2" } }
parameters { key: "inter_op_thread_count" value: { string_value: "1" } }
"""

# densenet_onnx from Triton's quickstart model repository, unchanged: it reshapes.
DENSENET = """
name: "densenet_onnx"
platform: "onnxruntime_onnx"
max_batch_size : 0
input [
  {
    name: "data_0"
    data_type: TYPE_FP32
    format: FORMAT_NCHW
    dims: [ 3, 224, 224 ]
    reshape { shape: [ 1, 3, 224, 224 ] }
  }
]
output [
  {
    name: "fc6_1"
    data_type: TYPE_FP32
    dims: [ 1000 ]
    reshape { shape: [ 1, 1000, 1, 1 ] }
    label_filename: "densenet_labels.txt"
  }
]
"""


def triton_parse(text: str) -> Any:
    """Parse with protobuf's text_format against Triton's own ModelConfig schema."""
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m" / "config.pbtxt"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def read(tmp_path: Path, text: str) -> TritonConfig:
    return read_triton_config(write(tmp_path, text))


def at(path: Path, line: int, col: int, message: str) -> str:
    """A pattern for an error that starts with ``path:line:col: message``."""
    return "^" + re.escape(f"{path}:{line}:{col}: {message}")


# the parser ----------------------------------------------------------------------------------


def test_parse_tricky_text_format() -> None:
    text = r"""
    # a comment line
    name: "tab\there" 'single \'quoted\'' # joined with the next string
    dims: [ 3, -1, 0x10, 010 ]  dims: 7    # a list, then a repeated key
    level: -2; ratio: -1.5e3, small: .25 f: 2f neg_inf: - inf
    escapes: "\x41\101\u00e9\"\\\n"
    group [ { count: 2, kind: KIND_CPU }, < kind: KIND_AUTO > ]
    colon_before_brace: { inner { deep: true } }
    angle < x: 1 >
    empty {}
    none: []
    """
    parsed = parse_pbtxt(text)
    assert parsed == {
        "name": ["tab\theresingle 'quoted'"],
        "dims": [3, -1, 16, 8, 7],
        "level": [-2],
        "ratio": [-1500.0],
        "small": [0.25],
        "f": [2.0],
        "neg_inf": [-math.inf],
        "escapes": ['AAé"\\\n'],
        "group": [{"count": [2], "kind": ["KIND_CPU"]}, {"kind": ["KIND_AUTO"]}],
        "colon_before_brace": [{"inner": [{"deep": ["true"]}]}],
        "angle": [{"x": [1]}],
        "empty": [{}],
        "none": [],
    }
    # bare words are Identifiers (enum names, true/false), quoted text plain str
    assert type(parsed["group"][0]["kind"][0]) is Identifier
    assert type(parsed["name"][0]) is str
    assert type(parsed["dims"][0]) is int
    assert type(parsed["f"][0]) is float
    # positions of each field's first occurrence, 1-based
    assert parsed.positions["dims"] == (4, 5)
    assert parsed["group"][0].positions["kind"] == (7, 25)


def test_parse_agrees_with_protobuf_text_format() -> None:
    text = r"""
    name: "a\tb\x41\101\u00e9" "-joined"
    max_batch_size: 0x10
    optimization < graph { level: -1 } >;
    input [ { name: "x", dims: [ 3, -1 ] dims: 010 } ]
    """
    reference = triton_parse(text)
    parsed = parse_pbtxt(text)
    assert parsed["name"] == [reference.name]
    assert parsed["max_batch_size"] == [reference.max_batch_size] == [16]
    assert parsed["optimization"][0]["graph"][0]["level"] == [reference.optimization.graph.level] == [-1]
    assert parsed["input"][0]["dims"] == list(reference.input[0].dims) == [3, -1, 8]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: ", "1:7: expected a value, found the end of the file"),
        ("a {\n  b: 1\n", "3:1: expected '}' to close the '{' at 1:3, found the end of the file"),
        ('name: "open', "1:7: unterminated string"),
        ("count 1", "1:7: expected ':' or '{' after field name 'count', found '1'"),
        ("dims [1, 2]", "1:7: 'dims [...]' without ':' holds messages; write 'dims: [...]' for values"),
        ("a: [1, {b: 1}]", "1:8: the list 'a' mixes messages and values"),
        ("a: [1 2]", "1:7: expected ',' or ']' in the list 'a', found '2'"),
        ("a: 09", "1:4: '09' is not a valid octal number"),
        ("a: 12abc", "1:4: malformed number '12a'"),
        ("}", "1:1: unexpected '}': no message is open here"),
        ("a { b: 1 >", "1:10: expected '}' to close the '{' at 1:3, found '>'"),
        (r'a: "\q"', r"1:4: unknown escape sequence '\\q' in a string"),
        (r'a: "\777"', r"1:4: octal escape \777 is larger than a byte"),
        (r'a: "\xff"', "1:4: the string is not valid UTF-8"),
        ("[ext.field]: 1", "1:1: extension and Any fields ([...]) are not part of Triton's model configuration"),
        ("a: -b", "1:5: expected a number after '-', found 'b'"),
        ("a: $", "1:4: unexpected character '$'"),
        ("\n\n  : 1", "3:3: expected a field name, found ':'"),
    ],
)
def test_parse_errors_give_line_and_column(text: str, message: str) -> None:
    with pytest.raises(RepositoryError, match="^" + re.escape(f"my.pbtxt:{message}")):
        parse_pbtxt(text, source="my.pbtxt")


def test_parse_refuses_absurd_nesting() -> None:
    with pytest.raises(RepositoryError, match=r"^config\.pbtxt:1:\d+: messages are nested more than 64 deep"):
        parse_pbtxt("a {" * 100 + "}" * 100)


# the mapping ---------------------------------------------------------------------------------


def test_realistic_config_maps_exactly(tmp_path: Path) -> None:
    triton_parse(RESNET)  # a config Triton itself accepts
    config = read(tmp_path, RESNET)
    assert config.settings == {
        "name": "resnet50",
        "platform": "onnxruntime_onnx",
        "max_batch_size": 32,
        "version_policy": {"kind": "latest", "num_versions": 2},
        "instance_count": 3,
        "dynamic_batching": {"max_queue_delay_ms": 0.5, "preferred_batch_sizes": [8, 16]},
        "max_queue_size": 128,
        "timeout_ms": 250.0,
        "graph_optimization": "extended",
        "intra_op_threads": 2,
        "inter_op_threads": 1,
    }
    assert config.inputs == (DeclaredTensor("input", "FP32", (3, 224, 224)),)
    assert config.outputs == (DeclaredTensor("output", "FP32", (1000,)),)
    validated = ModelConfig.model_validate(config.settings)
    assert validated.instance_count == 3
    assert validated.dynamic_batching is not None
    assert validated.dynamic_batching.preferred_batch_sizes == [8, 16]


@pytest.mark.parametrize(
    ("text", "settings"),
    [
        ("", {}),
        ('name: ""', {}),
        ('backend: "onnxruntime"', {"platform": "onnxruntime_onnx"}),
        ('default_model_filename: "model.onnx"', {}),
        ("max_batch_size: 0", {"max_batch_size": 0}),
        # instance groups: count defaults to 1, counts add up, kind by name or number, AUTO means CPU here
        ("instance_group [ { kind: KIND_CPU } ]", {"instance_count": 1}),
        ("instance_group { count: 2 } instance_group { count: 3, kind: KIND_AUTO }", {"instance_count": 5}),
        ("instance_group [ { count: 4, kind: 2 } ]", {"instance_count": 4}),
        ("instance_group []", {}),
        # dynamic batching: Triton's default delay is 0
        ("dynamic_batching {}", {"dynamic_batching": {"max_queue_delay_ms": 0.0, "preferred_batch_sizes": []}}),
        (
            "dynamic_batching { preferred_batch_size: 4 preferred_batch_size: 8 max_queue_delay_microseconds: 100 }",
            {"dynamic_batching": {"max_queue_delay_ms": 0.1, "preferred_batch_sizes": [4, 8]}},
        ),
        (
            "dynamic_batching { default_queue_policy { max_queue_size: 0 default_timeout_microseconds: 0 } }",
            {"dynamic_batching": {"max_queue_delay_ms": 0.0, "preferred_batch_sizes": []}},
        ),
        # version policies
        ("version_policy { latest {} }", {"version_policy": {"kind": "latest", "num_versions": 1}}),
        ("version_policy { all {} }", {"version_policy": {"kind": "all"}}),
        (
            "version_policy { specific { versions: [1, 3] } }",
            {"version_policy": {"kind": "specific", "versions": [1, 3]}},
        ),
        (
            "version_policy: { specific: { versions: 2 versions: 5 } }",
            {"version_policy": {"kind": "specific", "versions": [2, 5]}},
        ),
        # ONNX Runtime parameters; "0" lets the runtime (here: modelport's budget) choose
        (
            'parameters [ { key: "intra_op_thread_count" value { string_value: "4" } },'
            ' { key: "inter_op_thread_count" value { string_value: "0" } } ]',
            {"intra_op_threads": 4},
        ),
        ('parameters { key: "execution_mode" value: { string_value: "0" } }', {}),
        # graph optimization levels as Triton's ONNX Runtime backend reads them
        ("optimization { graph { level: -1 } }", {"graph_optimization": "basic"}),
        ("optimization { graph { level: 0 } }", {"graph_optimization": "all"}),
        ("optimization { graph {} }", {"graph_optimization": "all"}),
        ("optimization { graph { level: 1 } }", {"graph_optimization": "extended"}),
        ("optimization { graph { level: 2 } }", {"graph_optimization": "disable"}),
        # ignored: what Triton's ONNX Runtime backend ignores on CPU, and fields at their default
        (
            "optimization { priority: PRIORITY_MAX input_pinned_memory { enable: false } eager_batching: true }",
            {},
        ),
        ('instance_group { name: "cpu_group" count: 2 passive: false }', {"instance_count": 2}),
        ("instance_group [ { count: 2 kind: KIND_GPU } ]", {"instance_count": 2, "execution": "cuda"}),
        (
            "instance_group [ { kind: KIND_GPU gpus: [1] }, { kind: KIND_GPU gpus: 1 } ]",
            {"instance_count": 2, "execution": "cuda", "device_id": 1},
        ),
        (
            "dynamic_batching { preserve_ordering: false priority_levels: 0 }",
            {"dynamic_batching": {"max_queue_delay_ms": 0.0, "preferred_batch_sizes": []}},
        ),
        ("response_cache { enable: false } model_transaction_policy { decoupled: False }", {}),
    ],
)
def test_supported_fields_map_to_model_config_keys(tmp_path: Path, text: str, settings: dict[str, Any]) -> None:
    triton_parse(text)
    assert read(tmp_path, text).settings == settings


def test_ignored_fields_are_optimization_and_naming_only() -> None:
    assert sorted(IGNORED_FIELDS) == [
        "instance_group.name",
        "optimization.cuda",
        "optimization.eager_batching",
        "optimization.gather_kernel_buffer_threshold",
        "optimization.input_pinned_memory",
        "optimization.output_pinned_memory",
        "optimization.priority",
    ]


def test_declared_tensors_map_triton_types_to_kserve(tmp_path: Path) -> None:
    text = """
    max_batch_size: 4
    input [
      { name: "image" data_type: TYPE_UINT8 format: FORMAT_NHWC dims: [ -1, -1, 3 ] },
      { name: "prompt" data_type: TYPE_STRING dims: [ 1 ] allow_ragged_batch: false optional: false }
    ]
    output { name: "mask" data_type: TYPE_BOOL dims: [ -1, -1 ] }
    output { name: "scores" data_type: 11 dims: 10 }
    """
    triton_parse(text)
    config = read(tmp_path, text)
    assert config.inputs == (
        DeclaredTensor("image", "UINT8", (-1, -1, 3)),
        DeclaredTensor("prompt", "BYTES", (1,)),
    )
    assert config.outputs == (DeclaredTensor("mask", "BOOL", (-1, -1)), DeclaredTensor("scores", "FP32", (10,)))


# (config, where the error points: the last occurrence of this text, message)
UNSUPPORTED = [
    (
        'platform: "tensorrt_plan"',
        "platform",
        "modelport serves ONNX models with ONNX Runtime; platform 'tensorrt_plan' is not supported",
    ),
    (
        'backend: "python"',
        "backend",
        "modelport serves ONNX models with ONNX Runtime; backend 'python' is not supported",
    ),
    (
        "platform: onnxruntime_onnx",
        "platform",
        "platform must be a quoted string (platform: \"...\"), got 'onnxruntime_onnx'",
    ),
    (
        "instance_group [ { count: 1 kind: KIND_GPU }, { count: 1 kind: KIND_CPU } ]",
        "instance_group",
        "instance_group mixes GPU and CPU groups — one kind per model",
    ),
    (
        "instance_group { kind: KIND_CPU } instance_group { kind: KIND_MODEL }",
        "kind",
        "instance_group[1].kind KIND_MODEL is not supported",
    ),
    ("instance_group { gpus: [0] }", "gpus", "instance_group[0].gpus only applies to kind: KIND_GPU"),
    (
        "instance_group { kind: KIND_GPU gpus: [0, 1] }",
        "instance_group",
        "instance_group names GPUs [0, 1] — one GPU per model",
    ),
    ("instance_group { count: 0 }", "count", "instance_group[0].count must be 1 or more, got 0"),
    ("instance_group { cout: 2 }", "cout", "unknown field 'cout' in 'instance_group[0]' — did you mean 'count'?"),
    ("instance_group { passive: true }", "passive", "instance_group[0].passive: passive instances are not supported"),
    (
        'parameters { key: "enable_mem_arena" value: { string_value: "1" } }',
        "key",
        "parameter 'enable_mem_arena' is not supported — modelport reads intra_op_thread_count, "
        "inter_op_thread_count, execution_mode; remove it",
    ),
    (
        'parameters { key: "intra_op_thread_count" value: { string_value: "two" } }',
        "string_value",
        "parameter 'intra_op_thread_count' must be a whole number as a string, got 'two'",
    ),
    (
        'parameters { key: "execution_mode" value: { string_value: "1" } }',
        "string_value",
        "parameter execution_mode '1': only sequential execution",
    ),
    (
        'parameters { key: "intra_op_thread_count" value { string_value: "1" } }\n'
        'parameters { key: "intra_op_thread_count" value { string_value: "2" } }',
        "key",
        "parameter 'intra_op_thread_count' is given twice",
    ),
    ('parameters { key: "x" }', "{", "parameters[0] needs a key and a value"),
    (
        "dynamic_batching { default_queue_policy { timeout_action: DELAY } }",
        "timeout_action",
        "dynamic_batching.default_queue_policy.timeout_action DELAY is not supported",
    ),
    (
        "dynamic_batching { default_queue_policy { allow_timeout_override: true } }",
        "allow_timeout_override",
        "dynamic_batching.default_queue_policy.allow_timeout_override: per-request timeout overrides",
    ),
    (
        "dynamic_batching { preserve_ordering: true }",
        "preserve_ordering",
        "dynamic_batching.preserve_ordering: ordering responses across requests is not supported",
    ),
    (
        "dynamic_batching { priority_queue_policy { key: 1 value { max_queue_size: 3 } } }",
        "priority_queue_policy",
        "dynamic_batching.priority_queue_policy: per-priority queue policies are not supported",
    ),
    (
        "dynamic_batching { preferred_batch_size: [4, 0] }",
        "preferred_batch_size",
        "dynamic_batching.preferred_batch_size must be 1 or more, got 0",
    ),
    (
        "dynamic_batching {} dynamic_batching {}",
        "dynamic_batching {} dynamic_batching",
        "dynamic_batching is given 2 times, but it takes one value",
    ),
    ("optimization { graph { level: 3 } }", "level", "optimization.graph.level 3 is not one of ONNX Runtime's levels"),
    (
        'optimization { execution_accelerators { cpu_execution_accelerator: [ { name: "openvino" } ] } }',
        "execution_accelerators",
        "optimization.execution_accelerators: execution accelerators (TensorRT, OpenVINO, CUDA) are not supported",
    ),
    (
        "version_policy { latest {} all {} }",
        "{ latest",
        "version_policy sets latest and all, but takes one of latest, all, specific",
    ),
    ("version_policy { specific {} }", "{}", "version_policy.specific lists no versions"),
    (
        "version_policy { latest { num_versions: 0 } }",
        "num_versions",
        "version_policy.latest.num_versions must be 1 or more",
    ),
    ("max_batch_size: -1", "max_batch_size", "max_batch_size must be 0 or more, got -1"),
    ("max_batch_size: 1.5", "max_batch_size", "max_batch_size must be an integer, got 1.5"),
    ("max_batch_sise: 8", "max_batch_sise", "unknown field 'max_batch_sise' in the model configuration — did you mean"),
    (
        'ensemble_scheduling { step [ { model_name: "pre" } ] }',
        "ensemble_scheduling",
        "ensemble_scheduling: Triton ensembles are not supported — chain stages with a pipeline in config.yaml",
    ),
    (
        'model_warmup [ { name: "w" batch_size: 1 } ]',
        "model_warmup",
        "model_warmup: warm-up requests are not supported",
    ),
    ("response_cache { enable: true }", "enable", "response_cache.enable: the response cache is not supported"),
    (
        "model_transaction_policy { decoupled: true }",
        "decoupled",
        "model_transaction_policy.decoupled: decoupled models",
    ),
    (
        'default_model_filename: "resnet.onnx"',
        "default_model_filename",
        "default_model_filename 'resnet.onnx': modelport loads",
    ),
    ('name: "a" name: "b"', 'name: "a"', "name is given 2 times, but it takes one value"),
    (
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] reshape: { shape: [ 2, 2 ] } } ]',
        "reshape",
        "input[0].reshape: reshaping inputs is not supported",
    ),
    (
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] label_filename: "labels.txt" } ]',
        "label_filename",
        "output[0].label_filename: it serves Triton's classification extension",
    ),
    ('input { name: "x" dims: [ 4 ] }', "{", "input[0] needs a data_type"),
    (
        'input { name: "x" data_type: TYPE_BF16 dims: [ 4 ] }',
        "data_type",
        "input[0].data_type TYPE_BF16 is not supported",
    ),
    ('input { name: "x" data_type: TYPE_FP32 }', "{", "input 'x' has no dims"),
    ('input { name: "x" data_type: TYPE_FP32 dims: [ 0 ] }', "dims", "input 'x' has dims [0]; each must be 1 or more"),
    ("input { data_type: TYPE_FP32 dims: [ 1 ] }", "{", "input[0] has no name"),
    (
        'input { name: "x" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 224, 224 ] }',
        "dims",
        "input 'x' has FORMAT_NCHW, which needs 3 dims (C, H, W), got [224, 224]",
    ),
    (
        'input { name: "x" data_type: TYPE_FP32 dims: 1 } input { name: "x" data_type: TYPE_FP32 dims: 1 }',
        "name",
        "input 'x' is declared twice",
    ),
    (
        'input { name: "x" data_type: TYPE_FLOAT dims: 1 }',
        "data_type",
        "input[0].data_type must be one of TYPE_INVALID",
    ),
    ("sequence_batching { }", "sequence_batching", "sequence_batching: stateful sequence batching is not supported"),
]


def locate(text: str, anchor: str) -> tuple[int, int]:
    """1-based line and column of the last occurrence of ``anchor`` in ``text``."""
    offset = text.rindex(anchor)
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


@pytest.mark.parametrize(("text", "anchor", "message"), UNSUPPORTED)
def test_unsupported_fields_are_errors_that_point_at_them(tmp_path: Path, text: str, anchor: str, message: str) -> None:
    text = "# config\n" + text
    path = write(tmp_path, text)
    with pytest.raises(RepositoryError, match=at(path, *locate(text, anchor), message)):
        read_triton_config(path)


def test_triton_quickstart_densenet_is_refused_for_its_reshape(tmp_path: Path) -> None:
    triton_parse(DENSENET)
    path = write(tmp_path, DENSENET)
    where = locate(DENSENET, "reshape { shape: [ 1, 3")
    with pytest.raises(RepositoryError, match=at(path, *where, "input[0].reshape: reshaping inputs is not supported")):
        read_triton_config(path)


def test_syntax_errors_name_the_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, 'name: "m"\nmax_batch_size 8\n')
    with pytest.raises(RepositoryError, match=at(path, 2, 16, "expected ':' or '{' after field name 'max_batch_size'")):
        read_triton_config(path)


def test_unreadable_config_is_a_repository_error(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_bytes(b'name: "\xff"')
    with pytest.raises(RepositoryError, match="^" + re.escape(f"{path}: cannot be read as UTF-8 text")):
        read_triton_config(path)
    with pytest.raises(RepositoryError, match="cannot be read"):
        read_triton_config(tmp_path / "missing.pbtxt")


# declared tensors against the model ----------------------------------------------------------

IMAGE = TensorSpec("image", np.dtype(np.float32), ("batch", 3, 224, 224))
LOGITS = TensorSpec("logits", np.dtype(np.float32), ("batch", 1000))
LABEL = "model 'resnet' version 1"


def test_check_declared_accepts_what_triton_accepts() -> None:
    # batch axis left out; a symbolic axis takes any declared size or -1
    check_declared(
        [DeclaredTensor("image", "FP32", (3, 224, 224))], [IMAGE], kind="input", max_batch_size=8, label=LABEL
    )
    dynamic = TensorSpec("image", np.dtype(np.float32), ("batch", 3, "h", None))
    check_declared(
        [DeclaredTensor("image", "FP32", (3, -1, 640))], [dynamic], kind="input", max_batch_size=8, label=LABEL
    )
    # without batching, dims are the whole shape
    check_declared(
        [DeclaredTensor("logits", "FP32", (-1, 1000))], [LOGITS], kind="output", max_batch_size=0, label=LABEL
    )
    # nothing declared, or unknown rank: nothing to check
    check_declared([], [IMAGE], kind="input", max_batch_size=8, label=LABEL)
    unknown = TensorSpec("image", np.dtype(np.float32), None)
    check_declared([DeclaredTensor("image", "FP32", (1, 2))], [unknown], kind="input", max_batch_size=8, label=LABEL)


def test_check_declared_against_a_real_model(tmp_path: Path) -> None:
    text = """
    max_batch_size: 0
    input [ { name: "x" data_type: TYPE_FP32 dims: [ -1, 3 ] }, { name: "k" data_type: TYPE_INT64 dims: [ -1 ] } ]
    output [
      { name: "y" data_type: TYPE_FP32 dims: [ -1, 3 ] },
      { name: "k_next" data_type: TYPE_INT64 dims: [ -1 ] },
      { name: "positive" data_type: TYPE_BOOL dims: [ -1 ] }
    ]
    """
    config = read(tmp_path, text)
    graph = mixed_model().graph
    check_declared(config.inputs, specs_of(graph.inputs), kind="input", max_batch_size=0, label=LABEL)
    check_declared(config.outputs, specs_of(graph.outputs), kind="output", max_batch_size=0, label=LABEL)
    wrong = read(tmp_path, text.replace('"k_next" data_type: TYPE_INT64', '"k_next" data_type: TYPE_INT32'))
    with pytest.raises(RepositoryError, match="output 'k_next' as TYPE_INT32, but the model's output is int64"):
        check_declared(wrong.outputs, specs_of(graph.outputs), kind="output", max_batch_size=0, label=LABEL)


@pytest.mark.parametrize(
    ("declared", "specs", "max_batch_size", "message"),
    [
        (
            [DeclaredTensor("pixels", "FP32", (3, 224, 224))],
            [IMAGE],
            8,
            "model 'resnet' version 1: the config declares input 'pixels', but the model has no such input — its "
            "inputs are 'image'; fix the name",
        ),
        (
            [DeclaredTensor("image", "FP16", (3, 224, 224))],
            [IMAGE],
            8,
            "model 'resnet' version 1: the config declares input 'image' as TYPE_FP16, but the model's input is "
            "float32 — set data_type: TYPE_FP32",
        ),
        (
            [DeclaredTensor("image", "FP32", (3, 256, 256))],
            [IMAGE],
            8,
            "model 'resnet' version 1: the config declares input 'image' with dims [3, 256, 256] plus the batch axis "
            "(max_batch_size 8), but the model's input has shape [batch, 3, 224, 224] — the config gives axis 2 "
            "size 256, but the model fixes it at 224; declare 224",
        ),
        (
            [DeclaredTensor("image", "FP32", (3, -1, 224))],
            [IMAGE],
            8,
            "the config gives axis 2 any size (-1), but the model fixes it at 224; declare 224",
        ),
        (
            [DeclaredTensor("image", "FP32", (1, 3, 224, 224))],
            [IMAGE],
            8,
            "the model's input has shape [batch, 3, 224, 224] — the ranks differ; leave the batch axis out of dims",
        ),
        (
            [DeclaredTensor("image", "FP32", (224, 224))],
            [IMAGE],
            0,
            "with dims [224, 224], but the model's input has shape [batch, 3, 224, 224] — the ranks differ; fix dims",
        ),
        (
            [DeclaredTensor("image", "FP32", (3, 224, 224))],
            [TensorSpec("image", np.dtype(np.float32), (1, 3, 224, 224))],
            8,
            "whose axis 0 is not a dynamic batch axis — export the model with a dynamic axis 0",
        ),
        (
            [DeclaredTensor("image", "FP32", (3, 224, 224))],
            [IMAGE, TensorSpec("scale", np.dtype(np.float32), ("batch", 1))],
            8,
            "the config declares inputs 'image', but the model also has 'scale' — declare every input",
        ),
        (
            [DeclaredTensor("image", "FP32", (3, 224, 224))],
            [TensorSpec("image", np.dtype(np.complex64), ("batch", 3, 224, 224))],
            8,
            "input 'image' has dtype complex64, which the KServe v2 protocol cannot carry",
        ),
    ],
)
def test_check_declared_errors_say_what_was_declared_and_what_the_model_has(
    declared: list[DeclaredTensor], specs: list[TensorSpec], max_batch_size: int, message: str
) -> None:
    with pytest.raises(RepositoryError, match=re.escape(message)):
        check_declared(declared, specs, kind="input", max_batch_size=max_batch_size, label=LABEL)
