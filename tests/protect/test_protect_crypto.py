"""The sealed container: layout, round trip, and every way of breaking it."""

from __future__ import annotations

import hashlib

import pytest

from modelport.errors import ModelLoadError
from modelport.protect import DecryptionError, EncryptedModelError, MissingKeyError, crypto, key_id
from modelport.protect.crypto import HEADER_BYTES, MAGIC, TAG_BYTES, Mode, read_header, seal, unseal

PAYLOAD = bytes(range(256)) * 40


def test_layout_and_round_trip(key: bytes) -> None:
    sealed = seal(PAYLOAD, key, Mode.WHOLE)
    assert len(sealed) == HEADER_BYTES + len(PAYLOAD) + TAG_BYTES
    assert sealed[:8] == MAGIC
    assert sealed[8] == 1  # format version
    assert sealed[9] == Mode.WHOLE.value
    assert sealed[10:12] == b"\0\0"  # flags
    assert sealed[12:20].hex() == key_id(key) == hashlib.sha256(b"modelport key id v1" + key).digest()[:8].hex()
    assert PAYLOAD[:64] not in sealed
    assert unseal(sealed, key, what="x") == (Mode.WHOLE, PAYLOAD)
    header = read_header(sealed, what="x")
    assert (header.version, header.mode, header.key_id, header.nonce) == (1, Mode.WHOLE, key_id(key), sealed[20:32])


def test_every_container_gets_a_fresh_nonce(key: bytes) -> None:
    first, second = seal(PAYLOAD, key, Mode.WHOLE), seal(PAYLOAD, key, Mode.WHOLE)
    assert first[20:32] != second[20:32]
    assert first[HEADER_BYTES:] != second[HEADER_BYTES:]


def _flipped(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    changed = bytearray(data)
    changed[offset] ^= mask
    return bytes(changed)


@pytest.mark.parametrize(
    ("offset", "match"),
    [
        (21, r"failed authentication \(AES-GCM tag mismatch\): the key matches .* so the file was modified"),
        (HEADER_BYTES, r"failed authentication .* modified or corrupted after encryption"),
        (HEADER_BYTES + 5000, r"failed authentication"),
        (-TAG_BYTES, r"failed authentication"),
        (-1, r"failed authentication"),
        (13, r"was encrypted with key id [0-9a-f]{16}, but the key given has id .* or the header was modified"),
    ],
    ids=["nonce", "first-ciphertext-byte", "ciphertext", "first-tag-byte", "last-tag-byte", "key-id"],
)
def test_any_changed_byte_is_detected(key: bytes, offset: int, match: str) -> None:
    tampered = _flipped(seal(PAYLOAD, key, Mode.WHOLE), offset)
    with pytest.raises(DecryptionError, match=match) as info:
        unseal(tampered, key, what="model file 'm.onnx'")
    assert "nothing was decrypted, loaded or written" in str(info.value)


def test_the_mode_byte_is_authenticated(key: bytes) -> None:
    # Mode 1 -> 2 is a valid mode, so only the authenticated header can catch it.
    tampered = _flipped(seal(PAYLOAD, key, Mode.WHOLE), 9, mask=0x03)
    assert tampered[9] == Mode.WEIGHTS_ONLY.value
    with pytest.raises(DecryptionError, match=r"failed authentication"):
        unseal(tampered, key, what="x")
    with pytest.raises(EncryptedModelError, match=r"holds a 'weights only' container where a 'whole file' one belongs"):
        unseal(tampered, key, what="x", expect=Mode.WHOLE)


@pytest.mark.parametrize(
    ("offset", "mask", "match"),
    [
        (8, 0x03, r"format version 2, but this modelport reads version 1 — upgrade modelport"),
        (9, 0x04, r"mode 5 and flags 0x0000, but this modelport knows modes 1-2 and no flags"),
        (11, 0x01, r"mode 1 and flags 0x0001"),
    ],
    ids=["version", "unknown-mode", "flags"],
)
def test_unknown_header_fields_are_refused(key: bytes, offset: int, mask: int, match: str) -> None:
    with pytest.raises(EncryptedModelError, match=match):
        unseal(_flipped(seal(PAYLOAD, key, Mode.WHOLE), offset, mask), key, what="x")


def test_wrong_key(key: bytes, other_key: bytes) -> None:
    sealed = seal(PAYLOAD, key, Mode.WEIGHTS_ONLY)
    with pytest.raises(DecryptionError, match=rf"encrypted with key id {key_id(key)}, but the key given has id "):
        unseal(sealed, other_key, what="x")


def test_missing_key(key: bytes) -> None:
    with pytest.raises(
        MissingKeyError, match=r"'m.onnx' is encrypted \(key id [0-9a-f]+\) — pass --key-file KEYFILE or"
    ):
        unseal(seal(PAYLOAD, key, Mode.WHOLE), None, what="'m.onnx'")
    assert issubclass(MissingKeyError, ModelLoadError)


def test_truncated_and_foreign_data(key: bytes) -> None:
    sealed = seal(PAYLOAD, key, Mode.WHOLE)
    with pytest.raises(DecryptionError, match=r"is 40 bytes, shorter than an encrypted model's header and tag"):
        unseal(sealed[:40], key, what="x")
    with pytest.raises(DecryptionError, match=r"failed authentication"):
        unseal(sealed[:-100], key, what="x")
    with pytest.raises(EncryptedModelError, match=r"does not start with the modelport encryption header"):
        unseal(PAYLOAD, key, what="x")


def test_payloads_over_the_limit_are_refused(key: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crypto, "MAX_PAYLOAD_BYTES", 1000)
    with pytest.raises(EncryptedModelError, match=r"the model is 10,240 bytes, over the 1,000-byte limit"):
        seal(PAYLOAD, key, Mode.WHOLE)
