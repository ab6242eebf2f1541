"""Weights-only encryption: an ONNX file whose graph anyone can read and whose weights nobody can.

The file is a valid ONNX protobuf. ``onnx.load`` reads it, Netron draws it, and every initializer
keeps its name, dtype and shape — but no tensor holds data: every dense and sparse tensor of every
graph, subgraph, function and Constant attribute is emptied. The real model (graph *and* weights,
byte for byte what was encrypted) is a sealed container (:mod:`modelport.protect.crypto`, mode
"weights only") stored as the raw bytes of one extra uint8 initializer, ``modelport.encrypted_model``.

Why this design rather than the alternatives:

* **Empty tensors, not external-data references.** References to an encrypted side file would make
  ``onnx.load`` and ONNX Runtime read *ciphertext* as weights and run a model that silently returns
  garbage. An empty tensor is refused loudly by ONNX Runtime (its data does not match its shape) and
  by the ONNX checker, while ``onnx.load`` and Netron still show the graph.
* **One file, no side blob.** The serving repository, bundles and checksums handle one ``.onnx``
  file per version; there is no companion file to forget when copying. Binary bytes in an
  initializer cost nothing, where base64 text in a metadata entry would add a third.
* **The sealed payload is the whole model, not only the weights.** What is loaded is exactly what
  was authenticated, so no field of the readable graph needs its own integrity scheme (a protobuf
  has no canonical byte form to sign). The readable graph is a *copy*: on load it is compared
  field by field with the decrypted model, emptied the same way, and any difference is reported as
  tampering. The graph is small, so holding it twice costs little.
* **The marker comes first.** A metadata entry ``modelport.encryption`` is written *before* the rest
  of the model (protobuf merges concatenated messages, so the file still parses as one model), which
  lets :func:`looks_like_preview` recognise the file from its first bytes without parsing it. A
  file that another tool re-saved (moving the entry to the end) is still recognised by
  :func:`modelport.ir.serde.load`, which parses it anyway.

Like the ONNX serializer in :mod:`modelport.ir.serde`, this module works on the ``onnx`` protobuf,
because its purpose is a byte-level layout that onnx-ir does not model (tensors without data).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from modelport.errors import ModelLoadError
from modelport.protect.crypto import MAX_PAYLOAD_BYTES, Mode, unseal
from modelport.protect.errors import DecryptionError, EncryptedModelError, NotEncryptedError

__all__ = ["BLOB_NAME", "MARKER_KEY", "build_preview", "looks_like_preview", "open_preview", "strip_tensor_data"]

logger = logging.getLogger(__name__)

MARKER_KEY = "modelport.encryption"
BLOB_NAME = "modelport.encrypted_model"
_FORMAT = "modelport-encrypted-model"
_UINT8 = 2  # onnx.TensorProto.UINT8
# A serialized ModelProto that starts with a metadata_props entry (field 14, length-delimited: tag
# 0x72), whose first field is the key (field 1, length-delimited: tag 0x0A) "modelport.encryption".
_ENTRY_TAG = 0x72
_KEY_FIELD = b"\x0a" + bytes([len(MARKER_KEY)]) + MARKER_KEY.encode("ascii")
_DATA_FIELDS = (
    "raw_data",
    "float_data",
    "int32_data",
    "string_data",
    "int64_data",
    "double_data",
    "uint64_data",
    "external_data",
    "data_location",
)


def looks_like_preview(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes, 64 are enough) starts like a weights-only encrypted file."""
    if not head or head[0] != _ENTRY_TAG:
        return False
    position = 1
    while position < min(len(head), 6) and head[position] & 0x80:  # skip the entry's length varint
        position += 1
    return head[position + 1 : position + 1 + len(_KEY_FIELD)] == _KEY_FIELD


def strip_tensor_data(model: Any) -> int:
    """Empty every tensor of an ``onnx.ModelProto`` in place (keeping names, dtypes and shapes).

    Covers initializers, sparse initializers and tensor attributes (Constant values) of the main
    graph, every subgraph, every function and the training info. Returns the number of tensors.
    """
    count = _strip_graph(model.graph)
    for function in model.functions:
        count += _strip_nodes(function.node)
    for info in model.training_info:
        count += _strip_graph(info.initialization) + _strip_graph(info.algorithm)
    return count


def _strip_graph(graph: Any) -> int:
    for tensor in graph.initializer:
        _strip_tensor(tensor)
    for sparse in graph.sparse_initializer:
        _strip_tensor(sparse.values)
        _strip_tensor(sparse.indices)
    return len(graph.initializer) + len(graph.sparse_initializer) + _strip_nodes(graph.node)


def _strip_nodes(nodes: Any) -> int:
    count = 0
    for node in nodes:
        for attribute in node.attribute:
            tensors = [*attribute.tensors, *([attribute.t] if attribute.HasField("t") else [])]
            sparse = [
                *attribute.sparse_tensors,
                *([attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []),
            ]
            for tensor in [*tensors, *(s.values for s in sparse), *(s.indices for s in sparse)]:
                _strip_tensor(tensor)
            count += len(tensors) + len(sparse)
            for graph in [*attribute.graphs, *([attribute.g] if attribute.HasField("g") else [])]:
                count += _strip_graph(graph)
    return count


def _strip_tensor(tensor: Any) -> None:
    for name in _DATA_FIELDS:
        tensor.ClearField(name)


def build_preview(payload: bytes, sealed: bytes, *, key_id: str) -> bytes:
    """The weights-only file: the payload's graph with empty tensors, the container, and the marker."""
    import onnx

    proto = onnx.load_model_from_string(payload)
    stripped = strip_tensor_data(proto)
    proto.graph.initializer.append(
        onnx.TensorProto(name=BLOB_NAME, data_type=_UINT8, dims=[len(sealed)], raw_data=sealed)
    )
    marker = onnx.ModelProto()
    marker.metadata_props.add(key=MARKER_KEY, value=_marker_text(key_id))
    data = bytes(marker.SerializeToString()) + bytes(proto.SerializeToString())
    if len(data) > MAX_PAYLOAD_BYTES:
        raise EncryptedModelError(
            f"the weights-only file would be {len(data):,} bytes, over the 2 GiB limit of one ONNX protobuf "
            "(it holds the readable graph and the encrypted model) — encrypt the whole file instead"
        )
    logger.debug("weights-only preview: %d tensors emptied, container of %d bytes", stripped, len(sealed))
    return data


def _marker_text(key_id: str) -> str:
    return json.dumps(
        {
            "format": _FORMAT,
            "version": 1,
            "mode": Mode.WEIGHTS_ONLY.label,
            "cipher": "AES-256-GCM",
            "key_id": key_id,
            "container": BLOB_NAME,
            "note": (
                "The weights of this model are encrypted and its tensors are empty: this graph is a readable copy. "
                "Load the model with modelport and its key (--key-file KEYFILE or MODELPORT_KEY_FILE)."
            ),
        }
    )


def open_preview(data: bytes, key: bytes | None, *, what: str) -> bytes:
    """Authenticate and decrypt a weights-only file; return the model bytes that were encrypted.

    Raises :class:`NotEncryptedError` when ``data`` is an ONNX model without the marker,
    :class:`DecryptionError` when the container or the readable graph was modified.
    """
    import onnx

    try:
        proto = onnx.load_model_from_string(data)
    except Exception as e:
        if looks_like_preview(data[:64]):
            raise ModelLoadError(
                f"{what} is a weights-only encrypted model that does not parse ({e}) — it is truncated or corrupt"
            ) from e
        raise NotEncryptedError(
            f"{what} is neither an encrypted model nor an ONNX file — there is nothing to decrypt"
        ) from e
    _pop_marker(proto, what)
    sealed = _pop_blob(proto, what)
    _mode, payload = unseal(sealed, key, what=what, expect=Mode.WEIGHTS_ONLY)
    expected = onnx.load_model_from_string(payload)
    strip_tensor_data(expected)
    if expected != proto:
        raise DecryptionError(
            f"the readable graph of {what} differs from the encrypted model in {_first_difference(expected, proto)} — "
            "the file was modified after encryption; restore it from a good copy, or encrypt the model again"
        )
    return payload


def _pop_marker(proto: Any, what: str) -> None:
    for index, entry in enumerate(proto.metadata_props):
        if entry.key != MARKER_KEY:
            continue
        try:
            marker = json.loads(entry.value)
        except ValueError:
            marker = None
        if not isinstance(marker, dict) or marker.get("format") != _FORMAT:
            raise EncryptedModelError(
                f"{what} has a '{MARKER_KEY}' metadata entry that is not modelport's — the file is corrupt"
            )
        del proto.metadata_props[index]
        return
    raise NotEncryptedError(
        f"{what} is a plain ONNX model (no '{MARKER_KEY}' metadata entry) — there is nothing to decrypt"
    )


def _pop_blob(proto: Any, what: str) -> bytes:
    initializers = proto.graph.initializer
    for index, tensor in enumerate(initializers):
        if tensor.name == BLOB_NAME:
            sealed = bytes(tensor.raw_data)
            del initializers[index]
            return sealed
    raise DecryptionError(
        f"{what} is marked as a weights-only encrypted model but has no '{BLOB_NAME}' initializer — "
        "the encrypted weights were removed; restore the file from a good copy"
    )


def _first_difference(expected: Any, seen: Any) -> str:
    """The first top-level field (or graph field) in which two ModelProtos differ, for messages."""
    for field in (
        "ir_version",
        "opset_import",
        "producer_name",
        "producer_version",
        "domain",
        "model_version",
        "doc_string",
        "metadata_props",
        "functions",
        "training_info",
    ):
        if getattr(expected, field) != getattr(seen, field):
            return f"'{field}'"
    for field in ("name", "node", "initializer", "sparse_initializer", "input", "output", "value_info", "doc_string"):
        if getattr(expected.graph, field) != getattr(seen.graph, field):
            return f"'graph.{field}'"
    return "a field of the model"
