"""The KServe v2 wire format: datatypes, request parsing, response encoding, and their errors."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest

from modelport.errors import ProtocolError
from modelport.serve.protocol import (
    DATATYPES,
    HEADER_LENGTH,
    RequestedOutput,
    datatype_of,
    decode_response,
    encode_request,
    encode_response,
    numpy_dtype_of,
    parse_request,
)


def sample(datatype: str) -> np.ndarray[Any, Any]:
    """A [2, 3] tensor of ``datatype`` that uses the type's extremes where it has them."""
    dtype = DATATYPES[datatype]
    if datatype == "BYTES":
        values = np.empty(6, dtype=object)
        values[:] = [b"a", b"", b"hello", "é".encode(), b"x y", b"0"]
        return values.reshape(2, 3)
    if datatype == "BOOL":
        return np.array([[True, False, True], [False, False, True]])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.array([[info.min, 0, 1], [2, info.max - 1, info.max]], dtype=dtype)
    return np.array([[-1.5, 0.0, 0.25], [3.0, 1e3, -7.75]], dtype=dtype)


def body(doc: dict[str, Any], *chunks: bytes) -> tuple[bytes, int | None]:
    header = json.dumps(doc).encode()
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


# datatypes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_datatype_names_round_trip(datatype: str) -> None:
    assert datatype_of(numpy_dtype_of(datatype)) == datatype


def test_big_endian_dtypes_map_to_the_same_datatype() -> None:
    assert datatype_of(np.dtype(">f4")) == "FP32"


def test_unknown_datatype_names_the_known_ones() -> None:
    with pytest.raises(ProtocolError, match=r"unknown datatype 'FP8' — use one of BOOL, UINT8"):
        numpy_dtype_of("FP8")


def test_dtype_without_datatype_is_rejected() -> None:
    with pytest.raises(ProtocolError, match="numpy dtype complex64 has no KServe v2 datatype"):
        datatype_of(np.dtype(np.complex64))


# requests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_request_round_trips_every_datatype(datatype: str, binary: bool) -> None:
    tensor = sample(datatype)
    encoded = encode_request({"t": tensor, "u": tensor[:1]}, binary=binary, request_id="r1")
    assert (encoded.header_length is not None) == binary
    parsed = parse_request(encoded.body, encoded.header_length)
    assert parsed.id == "r1"
    assert parsed.inputs["t"].dtype == tensor.dtype
    np.testing.assert_array_equal(parsed.inputs["t"], tensor)
    np.testing.assert_array_equal(parsed.inputs["u"], tensor[:1])


def test_json_data_may_be_nested_or_flat() -> None:
    flat, _ = body({"inputs": [{"name": "a", "shape": [2, 2], "datatype": "INT32", "data": [1, 2, 3, 4]}]})
    nested, _ = body({"inputs": [{"name": "a", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3, 4]]}]})
    expected = np.array([[1, 2], [3, 4]], dtype=np.int32)
    for raw in (flat, nested):
        array = parse_request(raw).inputs["a"]
        assert array.dtype == np.int32
        np.testing.assert_array_equal(array, expected)


def test_json_integers_are_exact() -> None:
    """Integral floats are integers; numpy's float64 promotion of big integers loses nothing."""
    big = 2**64 - 1
    raw, _ = body(
        {
            "inputs": [
                {"name": "u", "shape": [3], "datatype": "UINT64", "data": [0, 1, big]},
                {"name": "i", "shape": [2], "datatype": "INT8", "data": [3.0, -128]},
            ]
        }
    )
    inputs = parse_request(raw).inputs
    assert inputs["u"].tolist() == [0, 1, big] and inputs["u"].dtype == np.uint64
    assert inputs["i"].tolist() == [3, -128] and inputs["i"].dtype == np.int8


def test_scalar_and_empty_tensors() -> None:
    raw, _ = body(
        {
            "inputs": [
                {"name": "s", "shape": [], "datatype": "FP64", "data": 2.5},
                {"name": "e", "shape": [0, 3], "datatype": "FP32", "data": []},
            ]
        }
    )
    inputs = parse_request(raw).inputs
    assert inputs["s"].shape == () and inputs["s"] == 2.5
    assert inputs["e"].shape == (0, 3) and inputs["e"].dtype == np.float32


def test_aligned_binary_inputs_are_views_of_the_body() -> None:
    data = np.arange(6, dtype=np.float32)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "a",
                    "shape": [6],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 24},
                }
            ]
        }
    ).encode()
    header += b" " * (-len(header) % 8)  # JSON may end in blanks: pad it so the tensor is aligned
    raw = header + data.tobytes()
    array = parse_request(raw, len(header)).inputs["a"]
    np.testing.assert_array_equal(array, data)
    assert np.shares_memory(array, np.frombuffer(raw, dtype=np.uint8))
    assert not array.flags.writeable


def test_unaligned_binary_inputs_are_copied_aligned() -> None:
    data = np.arange(6, dtype=np.float64)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "a",
                    "shape": [2, 3],
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": 48},
                }
            ]
        }
    ).encode()
    header += b" " * (-len(header) % 8 + 1)
    array = parse_request(header + data.tobytes(), len(header)).inputs["a"]
    assert array.flags.aligned
    np.testing.assert_array_equal(array, data.reshape(2, 3))


def test_binary_tensors_follow_the_json_order() -> None:
    a = np.array([[1, 2], [3, 4]], dtype=np.uint32)
    b = np.array([True, False, True])
    raw, length = body(
        {
            "inputs": [
                {
                    "name": "input0",
                    "shape": [2, 2],
                    "datatype": "UINT32",
                    "parameters": {"binary_data_size": 16},
                },
                {
                    "name": "input1",
                    "shape": [3],
                    "datatype": "BOOL",
                    "parameters": {"binary_data_size": 3},
                },
            ],
            "outputs": [{"name": "output0", "parameters": {"binary_data": True}}],
        },
        a.tobytes(),
        b.tobytes(),
    )
    parsed = parse_request(raw, str(length))
    np.testing.assert_array_equal(parsed.inputs["input0"], a)
    np.testing.assert_array_equal(parsed.inputs["input1"], b)
    assert parsed.outputs == (RequestedOutput("output0", True),)


def test_requested_outputs_and_binary_defaults() -> None:
    raw, _ = body(
        {
            "inputs": [],
            "parameters": {"binary_data_output": True},
            "outputs": [{"name": "b"}, {"name": "a", "parameters": {"binary_data": False}}],
        }
    )
    parsed = parse_request(raw)
    assert parsed.select_outputs(["a", "b", "c"]) == [
        RequestedOutput("b", True),
        RequestedOutput("a", False),
    ]
    everything, _ = body({"inputs": [], "parameters": {"binary_data_output": True}})
    assert parse_request(everything).select_outputs(["a", "b"]) == [
        RequestedOutput("a", True),
        RequestedOutput("b", True),
    ]
    empty_list, _ = body({"inputs": [], "outputs": []})
    assert parse_request(empty_list).select_outputs(["a"]) == [RequestedOutput("a", False)]


def test_unknown_requested_output_names_the_outputs() -> None:
    raw, _ = body({"inputs": [], "outputs": [{"name": "nope"}]})
    with pytest.raises(ProtocolError, match=r"model 'm' has no output named 'nope'; its outputs are 'a', 'b'"):
        parse_request(raw).select_outputs(["a", "b"], model_name="model 'm'")


_X = {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({}, r"the request has no 'inputs' field, which is required"),
        ({"inputs": {}}, r"'inputs' of the request must be a list, got an object"),
        ({"inputs": [3]}, r"inputs\[0\] must be an object, got the number 3"),
        (
            {"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]},
            r"inputs\[0\] has no 'name' field",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "data": [1]}]},
            r"input 'x' has no 'shape' field",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1], "data": [1]}]},
            r"input 'x' has no 'datatype' field",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]},
            r"input 'x' has no 'data' and no binary_data_size parameter",
        ),
        ({"inputs": [{**_X, "datatype": "FLOAT"}]}, r"unknown datatype 'FLOAT'"),
        ({"inputs": [{**_X, "shape": [2, -1]}]}, r"every dimension must be a non-negative integer"),
        (
            {"inputs": [{**_X, "data": [1, 2, 3]}]},
            r"shape \[2, 2\] \(4 elements\), but its data holds 3",
        ),
        ({"inputs": [{**_X, "data": [[1, 2, 3, 4]]}]}, r"its nested data has shape \[1, 4\]"),
        ({"inputs": [{**_X, "data": [[1, 2], [3]]}]}, r"input 'x' has ragged data"),
        ({"inputs": [{**_X, "data": [1, 2, "3", 4]}]}, r"FP32, but its data holds strings"),
        (
            {"inputs": [{**_X, "datatype": "INT32", "data": [1, 2, 3.5, 4]}]},
            r"INT32, but its data holds floating-point numbers, not integers",
        ),
        (
            {"inputs": [{**_X, "datatype": "UINT8", "data": [1, 2, 300, 4]}]},
            r"holds 300, outside \[0, 255\]",
        ),
        (
            {"inputs": [{**_X, "datatype": "BOOL"}]},
            r"BOOL, but its data holds integers, not booleans",
        ),
        (
            {"inputs": [{**_X, "datatype": "BYTES"}]},
            r"BYTES, but its data holds the number 1, not strings",
        ),
        ({"inputs": [_X, _X]}, r"input 'x' appears twice"),
        ({"id": 7, "inputs": [_X]}, r"request 'id' must be a string, got the number 7"),
        ({"inputs": [_X], "parameters": []}, r"'parameters' of the request must be an object"),
        ({"inputs": [_X], "outputs": "y"}, r"request 'outputs' must be a list"),
        ({"inputs": [_X], "outputs": [{"name": "y"}, {"name": "y"}]}, r"'y' is listed twice"),
        (
            {"inputs": [_X], "outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}]},
            r"requested output 'y' has parameter binary_data 'yes'; it must be true or false",
        ),
        (
            {"inputs": [_X], "parameters": {"binary_data_output": 1}},
            r"parameter binary_data_output 1; it must be true or false",
        ),
        (
            {"inputs": [{**_X, "datatype": "INT64", "data": [-1, 2**63, 0, 1]}]},
            r"INT64, but its data holds values outside its range",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [2],
                        "datatype": "FP32",
                        "parameters": {"shared_memory_region": "r"},
                    }
                ]
            },
            r"input 'x' has parameter shared_memory_region, which belongs to the shared memory",
        ),
        (
            {"inputs": [_X], "outputs": [{"name": "y", "parameters": {"classification": 3}}]},
            r"requested output 'y' has parameter classification, "
            r"which belongs to the classification extension",
        ),
        (
            {"inputs": [{**_X, "parameters": {"binary_data_size": 16}}]},
            r"input 'x' has a binary_data_size parameter, but the body has no Inference-Header",
        ),
    ],
)
def test_malformed_json_requests(doc: dict[str, Any], match: str) -> None:
    raw, _ = body(doc)
    with pytest.raises(ProtocolError, match=match):
        parse_request(raw)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b'{"inputs": [', r"the request is not valid JSON: Expecting value at line 1 column 13"),
        (b"[1, 2]", r"the request must be a JSON object, got a list"),
        (b'{"id": "\xff"}', r"the JSON part of the request is not UTF-8 text"),
    ],
)
def test_bodies_that_are_not_json_objects(raw: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        parse_request(raw)


_B = {"name": "b", "shape": [2, 2], "datatype": "FP32", "parameters": {"binary_data_size": 16}}
_FOUR_FLOATS = np.arange(4, dtype=np.float32).tobytes()


@pytest.mark.parametrize(
    ("doc", "chunks", "header", "match"),
    [
        (
            {"inputs": [_B]},
            [_FOUR_FLOATS],
            "abc",
            r"Inference-Header-Content-Length is 'abc', which is not a byte count",
        ),
        (
            {"inputs": [_B]},
            [_FOUR_FLOATS],
            0,
            r"Inference-Header-Content-Length: 0 .* is not supported",
        ),
        ({"inputs": [_B]}, [_FOUR_FLOATS], 10_000, r"is 10000, but the request body has \d+ bytes"),
        (
            {"inputs": [_B]},
            [_FOUR_FLOATS[:12]],
            None,
            r"declares binary_data_size 16 at offset 0 .* only 12 bytes follow",
        ),
        (
            {"inputs": [_B]},
            [_FOUR_FLOATS, b"\0" * 4],
            None,
            r"20 bytes of binary data follow the JSON header, but the inputs declare 16",
        ),
        (
            {"inputs": [{**_B, "parameters": {"binary_data_size": 12}}]},
            [_FOUR_FLOATS[:12]],
            None,
            r"input 'b' is FP32 with shape \[2, 2\], which is 16 bytes, "
            r"but its binary_data_size is 12",
        ),
        (
            {"inputs": [{**_B, "data": [1, 2, 3, 4]}]},
            [_FOUR_FLOATS],
            None,
            r"has both 'data' and binary_data_size",
        ),
        (
            {"inputs": [{**_B, "parameters": {"binary_data_size": -4}}]},
            [_FOUR_FLOATS],
            None,
            r"binary_data_size -4; it must be a non-negative integer",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "f",
                        "shape": [2],
                        "datatype": "BOOL",
                        "parameters": {"binary_data_size": 2},
                    }
                ]
            },
            [b"\x01\x02"],
            None,
            r"BOOL, but its binary data holds bytes other than 0 and 1",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "s",
                        "shape": [2],
                        "datatype": "BYTES",
                        "parameters": {"binary_data_size": 7},
                    }
                ]
            },
            [struct.pack("<I", 1) + b"a" + b"\0\0"],
            None,
            r"BYTES element 1 has a truncated length prefix",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "s",
                        "shape": [1],
                        "datatype": "BYTES",
                        "parameters": {"binary_data_size": 6},
                    }
                ]
            },
            [struct.pack("<I", 5) + b"ab"],
            None,
            r"BYTES element 0 declares 5 bytes, but only 2 remain",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "s",
                        "shape": [2],
                        "datatype": "BYTES",
                        "parameters": {"binary_data_size": 5},
                    }
                ]
            },
            [struct.pack("<I", 1) + b"a"],
            None,
            r"input 's' has 2 elements by its shape, but its binary data holds 1 BYTES elements",
        ),
    ],
)
def test_malformed_binary_requests(
    doc: dict[str, Any], chunks: list[bytes], header: str | int | None, match: str
) -> None:
    raw, length = body(doc, *chunks)
    with pytest.raises(ProtocolError, match=match):
        parse_request(raw, length if header is None else header)


def test_header_length_that_cuts_the_json_short() -> None:
    raw, length = body({"inputs": [_B]}, _FOUR_FLOATS)
    assert length is not None
    with pytest.raises(ProtocolError, match=r"not valid JSON: .* set the Inference-Header-Content-Length"):
        parse_request(raw, length - 5)


# responses ------------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_response_round_trips_every_datatype(datatype: str, binary: bool) -> None:
    tensor = sample(datatype)
    encoded = encode_response(
        {"out": tensor, "first": tensor[0]},
        model_name="m",
        model_version="3",
        request_id="abc",
        binary={"out"} if binary else (),
    )
    assert (encoded.header_length is not None) == binary
    assert encoded.headers["Content-Type"] == encoded.content_type
    if binary:
        assert encoded.headers[HEADER_LENGTH] == str(encoded.header_length)
        assert encoded.content_type == "application/octet-stream"
    response = decode_response(encoded.body, encoded.header_length)
    assert (response.model_name, response.model_version, response.id) == ("m", "3", "abc")
    assert list(response.outputs) == ["out", "first"]
    for name, expected in (("out", tensor), ("first", tensor[0])):
        assert response.outputs[name].dtype == expected.dtype
        np.testing.assert_array_equal(response.outputs[name], expected)


def test_json_response_layout() -> None:
    encoded = encode_response({"y": np.array([[1.5, 2.0]], dtype=np.float32)}, model_name="m")
    assert encoded.header_length is None
    assert encoded.content_type == "application/json"
    assert json.loads(encoded.body) == {
        "model_name": "m",
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.0]}],
    }


def test_binary_response_layout() -> None:
    y = np.array([1.0, 2.0], dtype=np.float32)
    n = np.array([7], dtype=np.int64)
    encoded = encode_response({"y": y, "n": n}, model_name="m", binary={"y", "n"})
    assert encoded.header_length is not None
    header = json.loads(encoded.body[: encoded.header_length])
    assert [o["parameters"] for o in header["outputs"]] == [
        {"binary_data_size": 8},
        {"binary_data_size": 8},
    ]
    assert encoded.body[encoded.header_length :] == y.tobytes() + n.tobytes()


def test_string_elements_are_sent_as_utf8() -> None:
    text = np.array(["é", "b"], dtype=object)
    for binary in ((), {"t"}):
        encoded = encode_response({"t": text}, model_name="m", binary=binary)
        decoded = decode_response(encoded.body, encoded.header_length).outputs["t"]
        assert decoded.tolist() == ["é".encode(), b"b"]


def test_non_utf8_bytes_cannot_be_sent_as_json() -> None:
    raw = np.array([b"\xff"], dtype=object)
    with pytest.raises(ProtocolError, match=r"tensor 'raw' holds bytes that are not UTF-8 .* \(binary_data: true\)"):
        encode_response({"raw": raw}, model_name="m")
    encoded = encode_response({"raw": raw}, model_name="m", binary={"raw"})
    assert decode_response(encoded.body, encoded.header_length).outputs["raw"].tolist() == [b"\xff"]


def test_decode_response_requires_model_name() -> None:
    with pytest.raises(ProtocolError, match=r"the response has no 'model_name' field"):
        decode_response(b'{"outputs": []}')
