"""Reading and writing models. The only module that touches the ``onnx`` protobuf package (besides
:mod:`modelport.protect.preview`, which lays out weights-only encrypted files).

Everything else in modelport works on :class:`onnx_ir.Model`. Loading keeps external data lazy;
saving writes to a temporary file next to the target and renames it, so a failed save never
leaves a half-written model behind and never destroys what the user had. A model file encrypted by
:mod:`modelport.protect` is decrypted in memory on load; its plaintext never reaches the disk.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx_ir as ir

from modelport.errors import InvalidModelError, ModelLoadError, ModelSaveError

if TYPE_CHECKING:
    from modelport.protect import Decrypted

__all__ = [
    "EXTERNAL_DATA_THRESHOLD",
    "check_model",
    "clone",
    "from_bytes",
    "infer_shapes",
    "load",
    "load_detached",
    "save",
    "serialize_without_weights",
    "serialized_size",
    "source_path",
    "to_bytes",
    "transform_proto",
    "weight_bytes",
]

logger = logging.getLogger(__name__)

# Above this many bytes of weights the protobuf limit (2 GiB) is near: weights go to a side file.
EXTERNAL_DATA_THRESHOLD = 1 << 30
_SOURCE_KEY = "modelport.source"
_PROTOBUF_LIMIT = (1 << 31) - 1


def load(source: str | os.PathLike[str] | bytes) -> ir.Model:
    """Load an ONNX model from a path or from serialized bytes.

    External data stays on disk until a tensor is read. A file encrypted by
    :mod:`modelport.protect` is decrypted in memory with the active key. Raises
    :class:`ModelLoadError` (or a subclass) for a missing file, a file that is not an ONNX model, a
    truncated one, and an encrypted one without the right key or modified after encryption.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        return _load_bytes(bytes(source))
    path = Path(source)
    if not path.exists():
        raise ModelLoadError(f"model file '{path}' does not exist — check the path")
    if path.is_dir():
        raise ModelLoadError(f"'{path}' is a directory, not an ONNX file — pass the path of the .onnx file inside it")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"model file '{path}' is empty — re-export or re-download it")
    encrypted = _load_encrypted(path)
    model = encrypted if encrypted is not None else _load_file(path)
    _check_complete(model, f"model file '{path}'")
    model.meta[_SOURCE_KEY] = str(path.resolve())
    return model


def _load_bytes(data: bytes) -> ir.Model:
    from modelport.protect import ENCRYPTED_META, active_key, decrypt_bytes
    from modelport.protect.crypto import looks_sealed
    from modelport.protect.preview import looks_like_preview

    if not (looks_sealed(data) or looks_like_preview(data[:64])):
        return from_bytes(data, what="the given bytes")
    decrypted = decrypt_bytes(data, active_key(), what="the given bytes")
    model = from_bytes(decrypted.payload, what="the decrypted bytes")
    model.meta[ENCRYPTED_META] = decrypted.mode.label
    return model


def _load_file(path: Path) -> ir.Model:
    try:
        model = ir.load(path)
    except Exception as e:
        raise ModelLoadError(_parse_failure(path, e)) from e
    return _decrypt_resaved(path, model)


def _load_encrypted(path: Path) -> ir.Model | None:
    """An encrypted file (recognised by its first bytes) decrypted in memory; None for a plain file.

    The key is the active one (:func:`modelport.protect.active_key`); nothing is written to disk.
    """
    from modelport.protect import open_encrypted

    decrypted = open_encrypted(path)
    return None if decrypted is None else _from_decrypted(path, decrypted)


def _decrypt_resaved(path: Path, model: ir.Model) -> ir.Model:
    """A weights-only encrypted file that another tool re-saved is recognised only once parsed."""
    from modelport.protect import active_key, decrypt_bytes
    from modelport.protect.preview import MARKER_KEY

    if MARKER_KEY not in model.metadata_props:
        return model
    return _from_decrypted(path, decrypt_bytes(path.read_bytes(), active_key(), what=f"model file '{path}'"))


def _from_decrypted(path: Path, decrypted: Decrypted) -> ir.Model:
    from modelport.protect import ENCRYPTED_META

    model = from_bytes(decrypted.payload, what=f"the decrypted model '{path}'")
    model.meta[ENCRYPTED_META] = decrypted.mode.label
    return model


def from_bytes(data: bytes, *, what: str = "bytes") -> ir.Model:
    """Deserialize a model from bytes (e.g. decrypted in memory)."""
    import onnx

    try:
        proto = onnx.load_model_from_string(data)
        model = ir.serde.deserialize_model(proto)
    except Exception as e:
        raise ModelLoadError(f"{what} do not parse as an ONNX model ({e}) — is it an .onnx file?") from e
    _check_complete(model, what)
    return model


def _parse_failure(path: Path, error: Exception) -> str:
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(64)
    if head.lstrip().startswith((b"{", b"<", b"PK", b"#", b"\x89PNG")):
        return f"'{path}' is not an ONNX model (it starts like a text, archive or image file) — pass the .onnx file"
    return (
        f"'{path}' ({size} bytes) does not parse as an ONNX model: {error} — "
        "the file is corrupt, truncated, or not ONNX"
    )


def _check_complete(model: ir.Model, what: str) -> None:
    """Detect models that parsed but are incomplete (protobuf truncated at a field boundary)."""
    graph = model.graph
    declared = set(model.opset_imports) | ({"ai.onnx"} if "" in model.opset_imports else set())
    local_functions = {domain for domain, _name, _overload in model.functions}
    undeclared = sorted({n.domain or "" for n in graph} - declared - local_functions)
    if undeclared:
        names = ", ".join(repr(d or "ai.onnx (default)") for d in undeclared)
        raise ModelLoadError(
            f"{what} uses ops of domain {names} but declares no opset for it — the file is truncated or corrupt"
        )
    if len(graph.outputs) == 0:
        raise ModelLoadError(f"{what} has no graph outputs — the file is truncated or not an ONNX model")
    for node in graph:
        for value in node.inputs:
            if value is None or value.producer() is not None:
                continue
            if value.is_graph_input() or value.is_initializer():
                continue
            if value.name == "" or value.graph is None:
                # A reference to an outer-scope value from a subgraph, or an optional input.
                continue
            raise ModelLoadError(
                f"{what}: node '{node.name}' ({node.op_type}) reads tensor '{value.name}', "
                "which nothing produces — the file is truncated or corrupt; re-export it"
            )
    for value in graph.outputs:
        if value.producer() is None and not (value.is_graph_input() or value.is_initializer()):
            raise ModelLoadError(
                f"{what}: graph output '{value.name}' is produced by no node — "
                "the file is truncated or corrupt; re-export it"
            )


def load_detached(path: str | os.PathLike[str]) -> ir.Model:
    """Load a model with every external tensor read into memory, detached from its file (which may
    then be deleted — e.g. the output a converter wrote to a temporary folder)."""
    model = load(path)
    ir.external_data.load_to_model(model)
    model.meta.clear()
    return model


def source_path(model: ir.Model) -> Path | None:
    """The file a model was loaded from, if it was loaded by :func:`load`."""
    source = model.meta.get(_SOURCE_KEY)
    return Path(source) if source else None


def weight_bytes(model: ir.Model) -> int:
    """Bytes of every initializer of every graph, read from tensor metadata (no weight is loaded)."""
    total = 0
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if tensor is not None:
                total += tensor.nbytes
    return total


def save(
    model: ir.Model,
    path: str | os.PathLike[str],
    *,
    in_place: bool = False,
    external_data: bool | None = None,
) -> Path:
    """Write ``model`` to ``path`` atomically and return the path.

    The model is written to a temporary file in the target folder and renamed. Weights above
    :data:`EXTERNAL_DATA_THRESHOLD` (or always, with ``external_data=True``) go to
    ``<name>.data`` next to the output, referenced by a relative path, so the pair can be moved
    together. Writing over the file the model was loaded from needs ``in_place=True``.
    """
    target = Path(path)
    source = source_path(model)
    if source is not None and target.resolve() == source and not in_place:
        raise ModelSaveError(
            f"refusing to overwrite the input model '{target}' — choose another output path, "
            "or pass in_place=True (--in-place on the command line)"
        )
    if target.is_dir():
        raise ModelSaveError(f"output path '{target}' is a directory — give a file name ending in .onnx")
    parent = target.parent if str(target.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelSaveError(f"cannot create the output folder '{parent}': {e}") from e
    if external_data is None:
        external_data = weight_bytes(model) > EXTERNAL_DATA_THRESHOLD
    if source is not None and target.resolve() == source:
        # The side file is about to be replaced: the model must stop reading from it.
        ir.external_data.load_to_model(model)
    data_name = target.name + ".data"
    tmpdir = Path(tempfile.mkdtemp(prefix=".modelport-", dir=parent))
    try:
        tmp_model = tmpdir / target.name
        if external_data:
            _save_external(model, tmp_model, tmpdir / data_name)
        else:
            _check_inline_size(model, target)
            # Weights still read lazily from the source's .data file must be written inline,
            # or the new file would point at a side file that does not exist next to it.
            ir.save(_inlined(model), tmp_model)
        tmp_data = tmpdir / data_name
        if tmp_data.exists():
            os.replace(tmp_data, parent / data_name)
        os.replace(tmp_model, target)
    except ModelSaveError:
        raise
    except Exception as e:
        raise ModelSaveError(f"writing '{target}' failed: {e}") from e
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    logger.debug("saved %s (external data: %s)", target, external_data)
    return target


# Tensors at least this big go to the side file, each starting at a multiple of _ALIGNMENT so
# that engines can memory-map them.
_EXTERNAL_MIN_BYTES = 1024
_ALIGNMENT = 4096


def _save_external(model: ir.Model, path: Path, data_path: Path) -> None:
    """Write ``model`` with its weights in ``data_path``, streaming them tensor by tensor.

    Weights still lazily read from a source ``.data`` file are copied file to file in the
    kernel (``os.copy_file_range``), never mapped into this process: optimizing a multi-GB model
    does not cost its size in memory. The model itself is left unchanged.
    """
    swapped: list[tuple[ir.Value, ir.TensorProtocol]] = []
    try:
        with open(data_path, "wb") as out:
            for graph in model.graphs():
                for value in graph.initializers.values():
                    tensor = value.const_value
                    if tensor is None or tensor.nbytes < _EXTERNAL_MIN_BYTES:
                        continue
                    offset = _align(out)
                    _write_tensor(tensor, out)
                    reference = ir.ExternalTensor(
                        data_path.name,
                        offset,
                        tensor.nbytes,
                        tensor.dtype,
                        shape=ir.Shape(list(tensor.shape)),  # type: ignore[arg-type]
                        name=tensor.name or value.name or "",
                        base_dir=str(data_path.parent),
                    )
                    swapped.append((value, tensor))
                    value.const_value = reference
        proto = ir.serde.serialize_model(model)
        path.write_bytes(proto.SerializeToString())
    finally:
        for value, tensor in swapped:
            value.const_value = tensor


def _align(out: Any) -> int:
    position = int(out.tell())
    padding = -position % _ALIGNMENT
    if padding:
        out.write(b"\0" * padding)
    return position + padding


def _write_tensor(tensor: ir.TensorProtocol, out: Any) -> None:
    if isinstance(tensor, ir.ExternalTensor) and tensor.offset is not None:
        out.flush()
        with open(tensor.path, "rb") as source:
            remaining, position = tensor.nbytes, tensor.offset
            while remaining > 0:
                copied = _copy_range(source, out, remaining, position)
                if copied <= 0:
                    raise ModelSaveError(f"'{tensor.path}' ends before tensor '{tensor.name}' does")
                remaining -= copied
                position += copied
        out.seek(0, os.SEEK_END)
        return
    out.write(tensor.tobytes())


def _copy_range(source: Any, out: Any, count: int, position: int) -> int:
    """Copy up to ``count`` bytes at ``position`` of ``source`` to the end of ``out``."""
    try:
        return int(os.copy_file_range(source.fileno(), out.fileno(), count, position))
    except (AttributeError, OSError):  # not Linux, or a file system that cannot do it
        source.seek(position)
        chunk = source.read(min(count, 64 << 20))
        out.write(chunk)
        out.flush()
        return len(chunk)


def _check_inline_size(model: ir.Model, target: Path) -> None:
    if weight_bytes(model) > _PROTOBUF_LIMIT:
        raise ModelSaveError(
            f"'{target}' would exceed the 2 GiB protobuf limit with weights inline — save it with external_data=True"
        )


def to_bytes(model: ir.Model) -> bytes:
    """Serialize a model, with every weight inline, for engines that load from memory."""
    if weight_bytes(model) > _PROTOBUF_LIMIT:
        raise InvalidModelError(
            "the model's weights exceed 2 GiB and cannot be serialized to one buffer — "
            "save it with external data and load the engine from the file"
        )
    proto = ir.serde.serialize_model(_inlined(model))
    return bytes(proto.SerializeToString())


def _inlined(model: ir.Model) -> ir.Model:
    """A model whose external tensors are read into memory (a copy only if there are any)."""
    has_external = any(
        isinstance(v.const_value, ir.ExternalTensor) for g in model.graphs() for v in g.initializers.values()
    )
    if not has_external:
        return model
    copy = model.clone()
    ir.external_data.load_to_model(copy)
    return copy


def clone(model: ir.Model) -> ir.Model:
    """A deep copy that shares no mutable state with ``model`` (tensors are shared read-only)."""
    copy = model.clone()
    copy.meta.update(model.meta)
    return copy


def transform_proto(model: ir.Model, fn: Callable[[Any], Any]) -> ir.Model:
    """Apply a function that works on ``onnx.ModelProto`` (a third-party converter) to a model."""
    proto = ir.serde.serialize_model(_inlined(model))
    result = fn(proto)
    return ir.serde.deserialize_model(result if result is not None else proto)


def check_model(model: ir.Model, *, full: bool = False) -> None:
    """Run the ONNX checker (``full`` adds strict shape inference); raise InvalidModelError."""
    import onnx

    proto = ir.serde.serialize_model(_inlined(model))
    try:
        onnx.checker.check_model(proto, full_check=full)
    except Exception as e:
        raise InvalidModelError(f"the ONNX checker rejected the model: {e}") from e


def infer_shapes(model: ir.Model) -> bool:
    """Run ONNX shape inference and merge the inferred types and shapes into ``model``.

    Large weights are left out of the call (the model may be far over 2 GiB): they are passed as
    external references, which carry their type and shape. Unlike onnx-ir's ShapeInferencePass,
    whole *types* are merged, so a sequence or optional value keeps its kind (the onnx-ir pass
    sets ``dtype``, which turns an untyped ``seq(tensor(float))`` into a plain float tensor and
    makes the model invalid), and only the values whose inferred type or shape differs from what
    was sent are read back. Returns whether anything changed; a model the inference rejects is
    left unchanged.
    """
    import onnx

    with _weights_as_references(model, _INFERENCE_INLINE_BYTES, used_only=False):
        sent = ir.serde.serialize_model(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(sent, check_type=False, strict_mode=False, data_prop=True)
    except Exception as e:
        logger.debug("shape inference failed, model left unchanged: %s", e)
        return False
    return _merge_inferred(model.graph, sent.graph, inferred.graph)


# Initializers up to this size stay inline for shape inference: its data propagation reads small
# constants (a Reshape's shape, a Slice's starts); a big weight only needs its type and shape.
_INFERENCE_INLINE_BYTES = 1024


def _merge_inferred(graph: ir.Graph, sent: Any, inferred: Any) -> bool:
    """Merge what shape inference found for ``graph`` (``sent`` and ``inferred`` are GraphProtos)."""
    changed = _merge_values(graph, sent, inferred)
    # Subgraphs (If/Loop/Scan bodies): nodes are serialized, and inferred, in graph order.
    nodes = list(graph)
    if len(nodes) != len(inferred.node) or len(nodes) != len(sent.node):
        logger.debug("shape inference returned %d nodes for %d; subgraphs not merged", len(inferred.node), len(nodes))
        return changed
    for node, sent_node, inferred_node in zip(nodes, sent.node, inferred.node, strict=True):
        if any(attr.type in _GRAPH_ATTRIBUTES for attr in node.attributes.values()):
            for subgraph, sent_graph, inferred_graph in _subgraph_triples(node, sent_node, inferred_node):
                changed = _merge_inferred(subgraph, sent_graph, inferred_graph) or changed
    return changed


def _merge_values(graph: ir.Graph, sent: Any, inferred: Any) -> bool:
    """Set the types and shapes of ``graph``'s values whose inferred info differs from what was sent."""
    before = {info.name: info for part in (sent.input, sent.output, sent.value_info) for info in part}
    fresh = [
        info
        for part in (inferred.input, inferred.output, inferred.value_info)
        for info in part
        if info.name not in before or before[info.name] != info
    ]
    if not fresh:
        return False
    values = {value.name: value for value in graph.inputs if value.name}
    values.update(graph.initializers)
    values.update((out.name, out) for node in graph for out in node.outputs if out.name)
    changed = False
    for info in fresh:
        value = values.get(info.name)
        if value is None:
            continue
        other = ir.serde.deserialize_value_info_proto(info, None)
        if other.type is not None and value.type != other.type:
            value.type = other.type
            changed = True
        if other.shape is not None and value.shape != other.shape:
            value.shape = other.shape
            changed = True
    return changed


def _subgraph_triples(node: ir.Node, sent: Any, inferred: Any) -> list[tuple[ir.Graph, Any, Any]]:
    """The node's subgraphs, each with its sent and inferred GraphProto."""
    sent_attrs = {a.name: a for a in sent.attribute}
    inferred_attrs = {a.name: a for a in inferred.attribute}
    triples: list[tuple[ir.Graph, Any, Any]] = []
    for name, attr in node.attributes.items():
        if attr.type not in _GRAPH_ATTRIBUTES or name not in sent_attrs or name not in inferred_attrs:
            continue
        if attr.type == ir.AttributeType.GRAPH:
            triples.append((attr.value, sent_attrs[name].g, inferred_attrs[name].g))
        else:
            triples.extend(zip(attr.value, sent_attrs[name].graphs, inferred_attrs[name].graphs, strict=False))
    return triples


_GRAPH_ATTRIBUTES = (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)


@contextlib.contextmanager
def _weights_as_references(
    model: ir.Model, min_bytes: int, *, used_only: bool
) -> Iterator[list[tuple[str, ir.TensorProtocol]]]:
    """Swap the main graph's big weights for external references while the block runs.

    Yields the ``(name, tensor)`` pairs swapped out; the model is restored on exit. With
    ``used_only``, an initializer nobody reads stays inline (ONNX Runtime drops it on load and
    would then refuse a buffer for it).
    """
    swapped: list[tuple[ir.Value, ir.TensorProtocol]] = []
    try:
        for value in model.graph.initializers.values():
            tensor = value.const_value
            if tensor is None or tensor.nbytes < min_bytes or not value.name or (used_only and not value.uses()):
                continue
            swapped.append((value, tensor))
            value.const_value = ir.ExternalTensor(
                "modelport-shared-weights",
                0,
                tensor.nbytes,
                tensor.dtype,
                shape=ir.Shape(list(tensor.shape)),  # type: ignore[arg-type]
                name=value.name,
            )
        yield [(str(value.name), tensor) for value, tensor in swapped]
    finally:
        for value, tensor in swapped:
            value.const_value = tensor


def _serialize_with_placeholders(model: ir.Model, min_bytes: int) -> tuple[bytes, list[tuple[str, ir.TensorProtocol]]]:
    """Serialize the main graph with its big (and read) weights replaced by external references."""
    with _weights_as_references(model, min_bytes, used_only=True) as tensors:
        data = bytes(ir.serde.serialize_model(model).SerializeToString())
    return data, tensors


def serialize_without_weights(model: ir.Model, min_bytes: int = 1 << 20) -> tuple[bytes, list[str], list[Any]]:
    """The main graph serialized with its big weights marked external, and those weights.

    Returns ``(model bytes, names, arrays)``: the arrays are views of the tensors' memory (for
    lazily loaded external data, of the mapped file), for engines that take weights as buffers
    (ONNX Runtime's ``add_external_initializers``) — no weight is copied into the model bytes.
    The model itself is left unchanged.
    """
    import numpy as np

    data, tensors = _serialize_with_placeholders(model, min_bytes)
    return data, [name for name, _ in tensors], [np.ascontiguousarray(t.numpy()) for _, t in tensors]


def serialized_size(model: ir.Model) -> int:
    """About the bytes of the model serialized with every weight inline (no weight is read)."""
    data, tensors = _serialize_with_placeholders(model, 1 << 16)
    return len(data) + sum(int(t.nbytes) for _, t in tensors)
