"""Keys: the three file formats, the environment fallbacks, creation, and the active key."""

from __future__ import annotations

import base64
import stat
import threading
from pathlib import Path

import pytest

from modelport.errors import ConfigError
from modelport.protect import (
    ENV_KEY,
    ENV_KEY_FILE,
    KeyFileError,
    active_key,
    generate_key,
    key_id,
    load_key,
    parse_key,
    set_active_key,
    use_key,
)
from modelport.protect.keys import check_key

KEY = bytes(range(32))


@pytest.mark.parametrize(
    "content",
    [
        KEY,
        KEY.hex().encode() + b"\n",
        KEY.hex().upper().encode(),
        base64.b64encode(KEY) + b"\n",
        base64.urlsafe_b64encode(KEY).rstrip(b"="),
    ],
    ids=["raw", "hex", "HEX", "base64", "base64url-unpadded"],
)
def test_a_key_file_may_hold_raw_hex_or_base64(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "k.key"
    path.write_bytes(content)
    assert load_key(path) == KEY


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", r"key file '.*k\.key' is empty"),
        (b"\xff" * 16, r"holds 16 bytes that are not text"),
        (KEY.hex()[:-2].encode(), r"holds 62 hex characters, but a key is 32 raw bytes, 64 hex"),
        (base64.b64encode(KEY[:16]), r"holds base64 of 16 bytes"),
        (b"not a key at all!", r"holds 17 characters that are neither hex nor base64"),
    ],
    ids=["empty", "binary", "short-hex", "short-base64", "text"],
)
def test_a_malformed_key_file_is_refused(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "k.key"
    path.write_bytes(content)
    with pytest.raises(KeyFileError, match=match) as info:
        load_key(path)
    assert "modelport encrypt --new-key" in str(info.value)
    assert isinstance(info.value, ConfigError)


def test_a_missing_or_folder_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"key file '.*nope\.key' does not exist — check the path"):
        load_key(tmp_path / "nope.key")
    with pytest.raises(KeyFileError, match=r"is a folder — give the path of the key file inside it"):
        load_key(tmp_path)


def test_without_a_file_the_environment_gives_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KeyFileError, match=r"no key was given — pass --key-file KEYFILE or set \$MODELPORT_KEY_FILE"):
        load_key()
    monkeypatch.setenv(ENV_KEY, base64.b64encode(KEY).decode())
    assert load_key() == KEY
    path = tmp_path / "k.key"
    path.write_text(KEY.hex())
    monkeypatch.setenv(ENV_KEY_FILE, str(path))
    assert load_key() == KEY  # both set, same key: fine
    monkeypatch.delenv(ENV_KEY)
    assert load_key() == KEY


def test_two_different_environment_keys_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "k.key"
    path.write_bytes(KEY)
    monkeypatch.setenv(ENV_KEY_FILE, str(path))
    monkeypatch.setenv(ENV_KEY, bytes(32).hex())
    with pytest.raises(KeyFileError, match=r"MODELPORT_KEY_FILE and \$MODELPORT_KEY are both set and hold different"):
        load_key()


def test_a_bad_environment_key_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_KEY, "abc")
    with pytest.raises(KeyFileError, match=r"\$MODELPORT_KEY holds 3 hex characters"):
        load_key()
    monkeypatch.delenv(ENV_KEY)
    monkeypatch.setenv(ENV_KEY_FILE, str(tmp_path / "gone.key"))
    with pytest.raises(KeyFileError, match=r"\$MODELPORT_KEY_FILE key file '.*gone\.key' does not exist"):
        load_key()


def test_generate_key_writes_a_private_hex_file_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "new.key"
    key = generate_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == key.hex() + "\n"
    assert load_key(path) == key
    assert [p.name for p in tmp_path.iterdir()] == ["new.key"]  # no temporary file left behind
    with pytest.raises(KeyFileError, match=r"already exists — a new key would replace it and lock out every model"):
        generate_key(path)
    assert load_key(path) == key
    assert generate_key(tmp_path / "other.key") != key
    with pytest.raises(KeyFileError, match=r"folder '.*missing' does not exist — create it first"):
        generate_key(tmp_path / "missing" / "k.key")


def test_check_key_wants_32_bytes() -> None:
    with pytest.raises(KeyFileError, match=r"the key has 16 bytes, but AES-256 needs 32"):
        check_key(bytes(16))
    with pytest.raises(KeyFileError, match=r"a key must be bytes, not str"):
        check_key(KEY.hex())  # type: ignore[arg-type]
    with pytest.raises(KeyFileError, match=r"the key has 5 bytes"):
        set_active_key(b"short")
    assert parse_key(KEY, what="x") == KEY


def test_use_key_nests_and_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    other = bytes(range(1, 33))
    assert active_key() is None
    monkeypatch.setenv(ENV_KEY, KEY.hex())
    assert active_key() == KEY  # the environment is the fallback
    with use_key(other):
        assert active_key() == other
        with use_key(None):
            assert active_key() == KEY
        assert active_key() == other
    assert active_key() == KEY
    set_active_key(other)
    assert active_key() == other
    set_active_key(None)
    assert active_key() == KEY


def test_the_active_key_is_seen_by_other_threads() -> None:
    seen: list[bytes | None] = []
    with use_key(KEY):
        worker = threading.Thread(target=lambda: seen.append(active_key()))
        worker.start()
        worker.join()
    assert seen == [KEY]


def test_key_id_is_stable_and_distinguishes_keys() -> None:
    assert key_id(KEY) == key_id(bytes(KEY))
    assert len(key_id(KEY)) == 16
    assert key_id(KEY) != key_id(bytes(32))
    assert KEY.hex()[:16] not in key_id(KEY)
