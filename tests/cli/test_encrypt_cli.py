"""modelport encrypt / decrypt, and --key-file / MODELPORT_KEY_FILE on every command."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest

from modelport.cli.encrypt import key_scope
from modelport.cli.main import build_parser, main
from modelport.ir.serde import save
from modelport.protect import ENV_KEY, ENV_KEY_FILE, Mode, active_key, encryption_mode, key_id

WEIGHTS = np.array([0.5, -1.25, 2.0, 3.5], dtype=np.float32)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    values = ", ".join(str(float(v)) for v in WEIGHTS)
    text = f"""
        <ir_version: 9, opset_import: ["" : 17]>
        shift (float[N, 4] x) => (float[N, 4] y) <float[4] w = {{{values}}}>
        {{
            y = Add(x, w)
        }}
    """
    return save(ir.from_onnx_text(text), tmp_path / "shift.onnx")


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, " ".join(out.split()), " ".join(err.split())  # rich wraps long lines


def test_new_key_then_encrypt_inspect_and_decrypt(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "k.key"
    code, out, _ = run(capsys, "encrypt", "--new-key", key_file)
    assert code == 0
    key = bytes.fromhex(key_file.read_text())
    assert f"wrote key file {key_file} (key id {key_id(key)})" in out
    enc = tmp_path / "shift.enc.onnx"
    code, out, _ = run(capsys, "encrypt", model, "--key-file", key_file, "-o", enc, "--weights-only")
    assert code == 0
    assert f"-> {enc} (weights only, graph readable, key id {key_id(key)})" in out
    assert encryption_mode(enc) is Mode.WEIGHTS_ONLY
    assert WEIGHTS.tobytes() not in enc.read_bytes()
    code, out, _ = run(capsys, "inspect", enc, "--key-file", key_file, "--json")
    assert code == 0 and '"Add": 1' in out
    dec = tmp_path / "shift.dec.onnx"
    code, out, _ = run(capsys, "decrypt", enc, "--key-file", key_file, "-o", dec)
    assert code == 0 and "(plaintext, mode 0600)" in out
    assert dec.read_bytes() == model.read_bytes()


def test_new_key_and_encrypt_in_one_call_and_the_environment_key(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file, enc = tmp_path / "k.key", tmp_path / "enc.onnx"
    assert run(capsys, "encrypt", model, "--new-key", key_file, "-o", enc)[0] == 0
    assert encryption_mode(enc) is Mode.WHOLE
    code, _, err = run(capsys, "inspect", enc)
    assert code == 2
    assert "is encrypted (key id" in err and "pass --key-file KEYFILE or set MODELPORT_KEY_FILE" in err
    monkeypatch.setenv(ENV_KEY_FILE, str(key_file))
    assert run(capsys, "inspect", enc)[0] == 0
    assert run(capsys, "decrypt", enc, "-o", tmp_path / "dec.onnx")[0] == 0  # the key from the environment
    monkeypatch.delenv(ENV_KEY_FILE)
    monkeypatch.setenv(ENV_KEY, key_file.read_text().strip())
    assert run(capsys, "encrypt", model, "-o", tmp_path / "enc2.onnx")[0] == 0
    assert (tmp_path / "dec.onnx").read_bytes() == model.read_bytes()


def test_wrong_key_and_bad_key_file(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    right, wrong, bad = tmp_path / "right.key", tmp_path / "wrong.key", tmp_path / "bad.key"
    enc = tmp_path / "enc.onnx"
    assert run(capsys, "encrypt", model, "--new-key", right, "-o", enc)[0] == 0
    assert run(capsys, "encrypt", "--new-key", wrong)[0] == 0
    bad.write_text("0123")
    code, _, err = run(capsys, "inspect", enc, "--key-file", wrong)
    assert code == 2 and "the key is wrong" in err
    code, _, err = run(capsys, "decrypt", enc, "--key-file", wrong, "-o", tmp_path / "out.onnx")
    assert code == 2 and "nothing was decrypted, loaded or written" in err
    assert not (tmp_path / "out.onnx").exists()
    code, _, err = run(capsys, "inspect", model, "--key-file", bad)
    assert code == 2 and "key file" in err and "holds 4 hex characters" in err
    code, _, err = run(capsys, "encrypt", "--new-key", right)
    assert code == 2 and "already exists" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["encrypt"], "encrypt needs a MODEL to encrypt (with -o OUT), or --new-key KEYFILE"),
        (["encrypt", "{model}", "--key-file", "{key}"], "needs -o OUT: where to write the encrypted model"),
        (["encrypt", "--new-key", "{tmp}/n.key", "--weights-only"], "-o and --weights-only need a MODEL"),
        (["encrypt", "{model}", "-o", "{tmp}/o.onnx"], "no key was given — pass --key-file KEYFILE"),
        (["encrypt", "{model}", "--key-file", "{key}", "-o", "{model}"], "refusing to overwrite the input model"),
        (["decrypt", "{model}", "--key-file", "{key}", "-o", "{tmp}/o.onnx"], "there is nothing to decrypt"),
        (["encrypt", "{model}", "--key-file", "{tmp}/none.key", "-o", "{tmp}/o.onnx"], "does not exist"),
    ],
    ids=["nothing", "no-output", "output-without-model", "no-key", "overwrite", "plain", "missing-key-file"],
)
def test_errors(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    key_file = tmp_path / "k.key"
    key_file.write_bytes(bytes(range(32)))
    args = [a.format(model=model, key=key_file, tmp=tmp_path) for a in argv]
    code, _, err = run(capsys, *args)
    assert code == 2
    assert message in err
    assert not (tmp_path / "o.onnx").exists() and not (tmp_path / "n.key").exists()


def test_key_file_and_new_key_exclude_each_other(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["encrypt", "--new-key", str(tmp_path / "a.key"), "--key-file", str(tmp_path / "b.key")])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def _parsers(parser: argparse.ArgumentParser, path: str = "") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield f"{path} {name}".strip(), child
                yield from _parsers(child, f"{path} {name}")


def test_every_command_accepts_key_file() -> None:
    commands = dict(_parsers(build_parser()))
    assert {"inspect", "optimize", "quantize", "compare", "verify", "bench", "serve", "encrypt", "decrypt"} <= set(
        commands
    )
    missing = [name for name, parser in commands.items() if "--key-file" not in parser._option_string_actions]
    assert missing == []


def test_key_scope_activates_the_key_and_exports_it_then_restores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = bytes(range(32))
    key_file = tmp_path / "k.key"
    key_file.write_bytes(key)
    monkeypatch.setenv(ENV_KEY, bytes(range(1, 33)).hex())  # another key, hidden from children in the scope
    with key_scope(argparse.Namespace(key_file=str(key_file))):
        assert active_key() == key
        assert os.environ[ENV_KEY_FILE] == str(key_file.resolve())  # what a started server inherits
        assert ENV_KEY not in os.environ
    assert os.environ[ENV_KEY] == bytes(range(1, 33)).hex()
    assert ENV_KEY_FILE not in os.environ
    assert active_key() == bytes(range(1, 33))
    with key_scope(argparse.Namespace()):  # a command without the option: nothing changes
        assert active_key() == bytes(range(1, 33))
