"""Encrypting model files: round trips through OrtRunner and load, the readable graph, refusals, tampering."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from protect_models import WEIGHT_ARRAYS, feeds, mlp_proto

from modelport.errors import ModelLoadError, ModelSaveError, QuantizationError
from modelport.ir import serde
from modelport.protect import (
    ENCRYPTED_META,
    ENV_KEY,
    ENV_KEY_FILE,
    DecryptionError,
    EncryptedModelError,
    KeyFileError,
    MissingKeyError,
    Mode,
    NotEncryptedError,
    decrypt_model,
    encrypt_model,
    encryption_mode,
    is_encrypted,
    key_id,
    preview,
    use_key,
)
from modelport.protect import model as protect_model
from modelport.protect.crypto import MAGIC, seal
from modelport.runners.onnxruntime import OrtRunner


def _outputs(path: Path | bytes) -> np.ndarray:
    with OrtRunner(path, graph_optimization="disable") as runner:
        return runner.infer(feeds())["y"]


def _contains_weights(data: bytes) -> list[str]:
    return [str(w.shape) for w in WEIGHT_ARRAYS if w.tobytes() in data]


@pytest.mark.parametrize("weights_only", [False, True], ids=["whole", "weights-only"])
def test_round_trip_gives_identical_outputs_and_bytes(
    plain: Path, key: bytes, tmp_path: Path, weights_only: bool
) -> None:
    enc = encrypt_model(plain, tmp_path / "new" / "mlp.onnx", key, weights_only=weights_only)
    assert enc == tmp_path / "new" / "mlp.onnx"
    assert encryption_mode(enc) is (Mode.WEIGHTS_ONLY if weights_only else Mode.WHOLE)
    assert is_encrypted(enc) and not is_encrypted(plain)
    assert _contains_weights(enc.read_bytes()) == []
    assert _contains_weights(plain.read_bytes()) == ["(8, 16)", "(16,)", "(16, 4)", "(4,)"]  # the check works
    with use_key(key):
        np.testing.assert_array_equal(_outputs(enc), _outputs(plain))  # exact: the same model
        loaded = serde.load(enc)
    assert loaded.meta[ENCRYPTED_META] == ("weights only" if weights_only else "whole file")
    assert serde.source_path(loaded) == enc.resolve()
    assert [n.op_type for n in loaded.graph] == ["MatMul", "Add", "Relu", "MatMul", "Constant", "Add"]
    w1 = loaded.graph.initializers["w1"].const_value
    assert w1 is not None
    np.testing.assert_array_equal(w1.numpy(), WEIGHT_ARRAYS[0])
    dec = decrypt_model(enc, tmp_path / "dec.onnx", key)
    assert dec.read_bytes() == plain.read_bytes()
    assert stat.S_IMODE(dec.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["dec.onnx", "mlp.onnx", "mlp.onnx"]


def test_weights_only_keeps_a_readable_graph_that_nothing_can_run(plain: Path, key: bytes, tmp_path: Path) -> None:
    enc = encrypt_model(plain, tmp_path / "enc.onnx", key, weights_only=True)
    original, shown = mlp_proto(), onnx.load(str(enc))  # onnx.load with its defaults reads it
    assert [(n.name, n.op_type) for n in shown.graph.node] == [(n.name, n.op_type) for n in original.graph.node]
    assert shown.graph.input == original.graph.input and shown.graph.output == original.graph.output
    tensors = {t.name: t for t in shown.graph.initializer}
    for tensor in original.graph.initializer:
        kept = tensors[tensor.name]
        assert (kept.data_type, list(kept.dims)) == (tensor.data_type, list(tensor.dims))
        assert kept.raw_data == b"" and not kept.float_data
    constant = shown.graph.node[4].attribute[0].t
    assert (list(constant.dims), constant.raw_data) == ([4], b"")
    marker = json.loads(shown.metadata_props[0].value)
    assert shown.metadata_props[0].key == preview.MARKER_KEY
    assert marker["key_id"] == key_id(key) and marker["mode"] == "weights only"
    assert [(p.key, p.value) for p in shown.metadata_props[1:]] == [("author", "tests")]
    blob = tensors[preview.BLOB_NAME]
    assert blob.raw_data.startswith(MAGIC)
    with pytest.raises(onnx.checker.ValidationError, match=r"should contain one and only one value field"):
        onnx.checker.check_model(shown)
    with pytest.raises(Exception, match=r"does not match"):  # no silent garbage in plain ORT
        ort.InferenceSession(str(enc), providers=["CPUExecutionProvider"])


def test_subgraph_tensors_are_emptied_too(key: bytes, tmp_path: Path) -> None:
    secret = np.random.default_rng(3).standard_normal(6).astype(np.float32)

    def branch(name: str, value: np.ndarray) -> onnx.GraphProto:
        node = helper.make_node("Constant", [], [f"{name}_out"], value=numpy_helper.from_array(value, f"{name}_v"))
        return helper.make_graph(
            [node], name, [], [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [6])]
        )

    graph = helper.make_graph(
        [
            helper.make_node(
                "If", ["cond"], ["y"], then_branch=branch("then", secret), else_branch=branch("else", -secret)
            )
        ],
        "branches",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6])],
    )
    plain = tmp_path / "if.onnx"
    plain.write_bytes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9).SerializeToString()
    )
    enc = encrypt_model(plain, tmp_path / "if.enc.onnx", key, weights_only=True)
    data = enc.read_bytes()
    assert secret.tobytes() not in data and (-secret).tobytes() not in data
    for branch_graph in onnx.load(str(enc)).graph.node[0].attribute:
        assert branch_graph.g.node[0].attribute[0].t.raw_data == b""
    feed = {"cond": np.array(True)}
    with use_key(key), OrtRunner(enc) as runner:
        np.testing.assert_array_equal(runner.infer(feed)["y"], secret)


def test_a_model_with_external_data_is_encrypted_with_its_weights_inline(key: bytes, tmp_path: Path) -> None:
    weight = np.random.default_rng(5).standard_normal((32, 32)).astype(np.float32)  # 4 KiB: goes to the .data file
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 32])],
        [numpy_helper.from_array(weight, "w")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    model = serde.from_bytes(proto.SerializeToString())
    plain = serde.save(model, tmp_path / "ext" / "big.onnx", external_data=True)
    assert weight.tobytes() in (tmp_path / "ext" / "big.onnx.data").read_bytes()
    enc = encrypt_model(plain, tmp_path / "big.enc.onnx", key)
    assert weight.tobytes() not in enc.read_bytes()
    dec = decrypt_model(enc, tmp_path / "alone" / "big.onnx", key)
    assert not (tmp_path / "alone" / "big.onnx.data").exists()
    x = {"x": np.ones((2, 32), dtype=np.float32)}
    with OrtRunner(dec) as runner:
        np.testing.assert_array_equal(runner.infer(x)["y"], x["x"] @ weight)


def test_encrypt_refuses_what_it_must_not_do(plain: Path, key: bytes, tmp_path: Path) -> None:
    enc = encrypt_model(plain, tmp_path / "enc.onnx", key)
    with pytest.raises(EncryptedModelError, match=r"'.*enc\.onnx' is already encrypted — encrypt the plaintext model"):
        encrypt_model(enc, tmp_path / "twice.onnx", key)
    with pytest.raises(ModelSaveError, match=r"refusing to overwrite the input model '.*mlp\.onnx'"):
        encrypt_model(plain, plain, key)
    with pytest.raises(ModelSaveError, match=r"output path '.*' is a directory — give a file name"):
        encrypt_model(plain, tmp_path, key)
    with pytest.raises(ModelLoadError, match=r"model file '.*gone\.onnx' does not exist"):
        encrypt_model(tmp_path / "gone.onnx", tmp_path / "out.onnx", key)
    with pytest.raises(KeyFileError, match=r"the key has 31 bytes, but AES-256 needs 32"):
        encrypt_model(plain, tmp_path / "out.onnx", key[:31])
    assert not (tmp_path / "twice.onnx").exists() and not (tmp_path / "out.onnx").exists()


def test_decrypt_refuses_what_it_must_not_do(plain: Path, key: bytes, other_key: bytes, tmp_path: Path) -> None:
    enc = encrypt_model(plain, tmp_path / "enc.onnx", key, weights_only=True)
    with pytest.raises(NotEncryptedError, match=r"is a plain ONNX model \(no 'modelport.encryption' metadata entry\)"):
        decrypt_model(plain, tmp_path / "out.onnx", key)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\xff" * 50)
    with pytest.raises(NotEncryptedError, match=r"is neither an encrypted model nor an ONNX file"):
        decrypt_model(junk, tmp_path / "out.onnx", key)
    with pytest.raises(DecryptionError, match=r"the key is wrong .* nothing was decrypted, loaded or written"):
        decrypt_model(enc, tmp_path / "out.onnx", other_key)
    with pytest.raises(ModelSaveError, match=r"refusing to overwrite the input model"):
        decrypt_model(enc, enc, key)
    with pytest.raises(ModelLoadError, match=r"model file '.*gone\.onnx' does not exist"):
        decrypt_model(tmp_path / "gone.onnx", tmp_path / "out.onnx", key)
    assert not (tmp_path / "out.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc.onnx", "junk.bin", "plain"]  # no temporary files


@pytest.mark.parametrize("weights_only", [False, True], ids=["whole", "weights-only"])
def test_readers_need_the_right_key(
    plain: Path, key: bytes, other_key: bytes, tmp_path: Path, weights_only: bool
) -> None:
    enc = encrypt_model(plain, tmp_path / "enc.onnx", key, weights_only=weights_only)
    missing = r"'.*enc\.onnx' is encrypted \(key id [0-9a-f]{16}\) — pass --key-file KEYFILE or set MODELPORT_KEY_FILE"
    with pytest.raises(MissingKeyError, match=missing):
        serde.load(enc)
    with pytest.raises(MissingKeyError, match=missing):
        OrtRunner(enc).activate()
    with use_key(other_key):
        with pytest.raises(DecryptionError, match=r"the key is wrong"):
            serde.load(enc)
        with pytest.raises(DecryptionError, match=r"the key is wrong"):
            OrtRunner(enc).activate()


@pytest.mark.parametrize("variable", [ENV_KEY_FILE, ENV_KEY])
def test_readers_take_the_key_from_the_environment(
    plain: Path, key: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    enc = encrypt_model(plain, tmp_path / "enc.onnx", key, weights_only=True)
    key_file = tmp_path / "k.key"
    key_file.write_bytes(key)
    monkeypatch.setenv(variable, str(key_file) if variable == ENV_KEY_FILE else key.hex())
    np.testing.assert_array_equal(_outputs(enc), _outputs(plain))
    assert serde.load(enc).meta[ENCRYPTED_META] == "weights only"


def test_load_takes_encrypted_bytes(plain: Path, key: bytes, tmp_path: Path) -> None:
    for weights_only in (False, True):
        enc = encrypt_model(plain, tmp_path / f"enc{weights_only}.onnx", key, weights_only=weights_only)
        with pytest.raises(MissingKeyError, match=r"the given bytes is encrypted"):
            serde.load(enc.read_bytes())
        with use_key(key):
            model = serde.load(enc.read_bytes())
        assert [n.name for n in model.graph] == [n.name for n in mlp_proto().graph.node]


@pytest.mark.parametrize("part", ["header", "ciphertext", "tag"])
def test_a_changed_file_is_refused_and_nothing_is_written(plain: Path, key: bytes, tmp_path: Path, part: str) -> None:
    enc = encrypt_model(plain, tmp_path / "enc.onnx", key)
    data = bytearray(enc.read_bytes())
    data[{"header": 25, "ciphertext": 100, "tag": len(data) - 3}[part]] ^= 0x40
    enc.write_bytes(bytes(data))
    with use_key(key), pytest.raises(DecryptionError, match=r"the file was modified or corrupted after encryption"):
        serde.load(enc)
    with pytest.raises(DecryptionError, match=r"nothing was decrypted, loaded or written"):
        decrypt_model(enc, tmp_path / "out.onnx", key)
    assert not (tmp_path / "out.onnx").exists()


def _rewrite(path: Path, change: object) -> None:
    proto = onnx.load(str(path))
    change(proto)  # type: ignore[operator]
    path.write_bytes(proto.SerializeToString())  # re-saved: the marker is no longer first


def test_a_weights_only_file_re_saved_unchanged_still_loads(plain: Path, key: bytes, tmp_path: Path) -> None:
    enc = encrypt_model(plain, tmp_path / "enc.onnx", key, weights_only=True)
    _rewrite(enc, lambda proto: None)
    assert encryption_mode(enc) is None  # the cheap check no longer sees it ...
    with pytest.raises(MissingKeyError, match=r"is encrypted"):
        serde.load(enc)  # ... but load, which parses the file, does
    with use_key(key):
        assert serde.load(enc).meta[ENCRYPTED_META] == "weights only"
    assert decrypt_model(enc, tmp_path / "dec.onnx", key).read_bytes() == plain.read_bytes()


def _flip_in_container(proto: onnx.ModelProto) -> None:
    blob = next(t for t in proto.graph.initializer if t.name == preview.BLOB_NAME)
    data = bytearray(blob.raw_data)
    data[60] ^= 0x01
    blob.raw_data = bytes(data)


def _other_op(proto: onnx.ModelProto) -> None:
    proto.graph.node[2].op_type = "Sigmoid"


def _other_shape(proto: onnx.ModelProto) -> None:
    proto.graph.initializer[0].dims[:] = [16, 8]


def _drop_blob(proto: onnx.ModelProto) -> None:
    del proto.graph.initializer[-1]


def _foreign_marker(proto: onnx.ModelProto) -> None:
    proto.metadata_props[0].value = "{}"


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (_flip_in_container, DecryptionError, r"failed authentication \(AES-GCM tag mismatch\)"),
        (_other_op, DecryptionError, r"readable graph of .* differs from the encrypted model in 'graph.node'"),
        (
            _other_shape,
            DecryptionError,
            r"differs from the encrypted model in 'graph.initializer' — the file was modified",
        ),
        (
            _drop_blob,
            DecryptionError,
            r"has no 'modelport.encrypted_model' initializer — the encrypted weights were removed",
        ),
        (_foreign_marker, EncryptedModelError, r"has a 'modelport.encryption' metadata entry that is not modelport's"),
    ],
    ids=["container", "graph-op", "initializer-shape", "no-container", "marker"],
)
def test_a_changed_weights_only_file_is_refused(
    plain: Path, key: bytes, tmp_path: Path, change: object, error: type[Exception], match: str
) -> None:
    enc = encrypt_model(plain, tmp_path / "enc.onnx", key, weights_only=True)
    _rewrite(enc, change)
    with use_key(key), pytest.raises(error, match=match):
        serde.load(enc)
    with pytest.raises(error, match=match):
        decrypt_model(enc, tmp_path / "out.onnx", key)
    assert not (tmp_path / "out.onnx").exists()


def test_a_whole_file_container_inside_a_weights_only_file_is_refused(plain: Path, key: bytes, tmp_path: Path) -> None:
    enc = encrypt_model(plain, tmp_path / "enc.onnx", key, weights_only=True)
    whole = seal(plain.read_bytes(), key, Mode.WHOLE)

    def swap(proto: onnx.ModelProto) -> None:
        next(t for t in proto.graph.initializer if t.name == preview.BLOB_NAME).raw_data = whole

    _rewrite(enc, swap)
    with (
        use_key(key),
        pytest.raises(EncryptedModelError, match=r"holds a 'whole file' container where a 'weights only'"),
    ):
        serde.load(enc)


def test_a_truncated_weights_only_file_is_refused(plain: Path, key: bytes, tmp_path: Path) -> None:
    enc = encrypt_model(plain, tmp_path / "enc.onnx", key, weights_only=True)
    enc.write_bytes(enc.read_bytes()[:-200])
    with (
        use_key(key),
        pytest.raises(ModelLoadError, match=r"weights-only encrypted model that does not parse .* truncated"),
    ):
        serde.load(enc)


def test_models_over_the_limits_are_refused(
    plain: Path, key: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preview, "MAX_PAYLOAD_BYTES", 1000)
    with pytest.raises(EncryptedModelError, match=r"the weights-only file would be [\d,]+ bytes, over the 2 GiB limit"):
        encrypt_model(plain, tmp_path / "out.onnx", key, weights_only=True)
    monkeypatch.setattr(protect_model, "MAX_PAYLOAD_BYTES", 100)
    with pytest.raises(EncryptedModelError, match=r"holds 832 bytes of weights, over the 2 GiB limit"):
        encrypt_model(plain, tmp_path / "out.onnx", key)
    assert not (tmp_path / "out.onnx").exists()


def test_static_int8_refuses_to_write_a_decrypted_model_to_a_temporary_file(
    plain: Path, key: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelport.quantize import int8

    enc = encrypt_model(plain, tmp_path / "enc.onnx", key)
    with use_key(key):
        model = serde.load(enc)
    monkeypatch.setattr(int8, "_IN_MEMORY_LIMIT", 0)  # as if the model were over 2 GiB
    with pytest.raises(
        QuantizationError, match=r"decrypted from an encrypted file \(whole file\) .*\(modelport decrypt\)"
    ):
        int8.StaticQuantizer(model).quantize({"x": (-1.0, 1.0)})


def test_strip_tensor_data_reaches_functions_sparse_tensors_and_training_info() -> None:
    secret = np.arange(1.0, 7.0, dtype=np.float32)
    constant = helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(secret, "k"))
    function = helper.make_function("local", "f", [], ["k"], [constant], [helper.make_opsetid("", 17)])
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(secret[:2], "s"), numpy_helper.from_array(np.array([1, 4], dtype=np.int64)), [6]
    )
    graph = helper.make_graph(
        [helper.make_node("f", [], ["y"], domain="local")],
        "g",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6])],
        sparse_initializer=[sparse],
    )
    model = helper.make_model(graph, functions=[function], opset_imports=[helper.make_opsetid("", 17)])
    training = model.training_info.add()
    training.initialization.CopyFrom(helper.make_graph([], "init", [], [], [numpy_helper.from_array(secret, "t")]))
    assert preview.strip_tensor_data(model) == 3
    data = model.SerializeToString()
    assert secret.tobytes() not in data and secret[:2].tobytes() not in data
    assert list(model.functions[0].node[0].attribute[0].t.dims) == [6]
    assert list(model.graph.sparse_initializer[0].values.dims) == [2]
