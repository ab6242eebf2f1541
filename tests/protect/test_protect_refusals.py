"""Modules whose engine works only on files refuse (or skip) a model decrypted in memory."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from protect_models import feeds

from modelport.errors import ConfigError, QuantizationError
from modelport.ir.serde import load
from modelport.passes.ort_fusions import OrtFusionsPass
from modelport.protect import ENCRYPTED_META, encrypt_model, use_key
from modelport.quantize.dynamic import quantize_dynamic
from modelport.verify.reduce import CommandCheck


@pytest.fixture
def decrypted(plain: Path, key: bytes, tmp_path: Path) -> object:
    sealed = encrypt_model(plain, tmp_path / "mlp.enc.onnx", key)
    with use_key(key):
        model = load(sealed)
    assert ENCRYPTED_META in model.meta
    return model


def test_dynamic_int8_refuses_to_write_plaintext(decrypted: object) -> None:
    with pytest.raises(QuantizationError, match=r"decrypted from an encrypted file .* works on files"):
        quantize_dynamic(decrypted)  # type: ignore[arg-type]


def test_ort_fusions_skip_instead_of_writing_plaintext(decrypted: object, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        result = OrtFusionsPass()(decrypted)  # type: ignore[arg-type]
    assert not result.modified
    assert "skipped for a model decrypted from an encrypted file" in caplog.text


def test_reduce_command_check_refuses(decrypted: object) -> None:
    check = CommandCheck("true")
    with pytest.raises(ConfigError, match=r"gets each candidate as a file.*in-process check"):
        check.run(decrypted, feeds())  # type: ignore[arg-type]
