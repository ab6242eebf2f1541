"""modelport encrypt / decrypt: AES-256-GCM model protection, and ``--key-file`` for every command.

``encrypt MODEL --key-file K -o OUT [--weights-only]`` seals a model; ``encrypt --new-key K``
creates a key (and, given a model, encrypts with it); ``decrypt MODEL --key-file K -o OUT`` writes
the plain model back. The rest of this module is the plumbing that lets *every* command read
encrypted models without knowing about them: :func:`add_key_file_option` gives each subcommand a
``--key-file`` option, and :func:`key_scope` makes that key the active one while the command runs
(and exports it as ``MODELPORT_KEY_FILE`` to the processes it starts, such as a server).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from modelport.cli._common import console
from modelport.errors import ConfigError

__all__ = ["add_key_file_option", "add_parser", "key_scope", "run_decrypt", "run_encrypt"]

_KEY_FILE_HELP = (
    "key of an encrypted model: a file of 32 raw bytes, 64 hex characters or base64 "
    "(default: $MODELPORT_KEY_FILE, or the key text in $MODELPORT_KEY)"
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "encrypt",
        help="encrypt a model with AES-256-GCM (whole file, or weights only), or create a key",
        description="Encrypt an ONNX model. Every modelport command reads the result given --key-file.",
    )
    p.add_argument("model", nargs="?", help="the plain .onnx file to encrypt")
    p.add_argument("-o", "--output", help="where to write the encrypted model")
    p.add_argument(
        "--weights-only",
        action="store_true",
        help="keep the graph readable (Netron, onnx.load) and encrypt every weight",
    )
    keys = p.add_mutually_exclusive_group()
    keys.add_argument("--key-file", metavar="KEYFILE", help=_KEY_FILE_HELP)
    keys.add_argument("--new-key", metavar="KEYFILE", help="create a new random key in KEYFILE (mode 0600) and use it")
    p.set_defaults(run=run_encrypt)

    d = sub.add_parser("decrypt", help="decrypt an encrypted model to a plain ONNX file (mode 0600)")
    d.add_argument("model", help="the encrypted model")
    d.add_argument("-o", "--output", required=True, help="where to write the plain model")
    d.add_argument("--key-file", metavar="KEYFILE", help=_KEY_FILE_HELP)
    d.set_defaults(run=run_decrypt)


def run_encrypt(args: argparse.Namespace) -> int:
    from modelport.protect import encrypt_model, generate_key, key_id, load_key

    if args.model is None and args.new_key is None:
        raise ConfigError("encrypt needs a MODEL to encrypt (with -o OUT), or --new-key KEYFILE to create a key")
    if args.model is not None and args.output is None:
        raise ConfigError(f"encrypt {args.model} needs -o OUT: where to write the encrypted model")
    if args.model is None and (args.output is not None or args.weights_only):
        raise ConfigError("-o and --weights-only need a MODEL to encrypt")
    out = console()
    if args.new_key is not None:
        key = generate_key(args.new_key)
        out.print(
            f"wrote key file {args.new_key} (key id {key_id(key)}) — keep it secret: it decrypts your models",
            markup=False,
        )
    else:
        key = load_key(args.key_file)
    if args.model is not None:
        target = encrypt_model(args.model, args.output, key, weights_only=args.weights_only)
        mode = "weights only, graph readable" if args.weights_only else "whole file"
        out.print(f"encrypted {args.model} -> {target} ({mode}, key id {key_id(key)})", markup=False)
    return 0


def run_decrypt(args: argparse.Namespace) -> int:
    from modelport.protect import decrypt_model, load_key

    target = decrypt_model(args.model, args.output, load_key(args.key_file))
    console().print(f"decrypted {args.model} -> {target} (plaintext, mode 0600)", markup=False)
    return 0


def add_key_file_option(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Give every subcommand (and nested subcommand) a ``--key-file`` option, unless it has one."""
    for parser in sub.choices.values():
        if "--key-file" not in parser._option_string_actions:
            group = parser.add_argument_group("encrypted models")
            group.add_argument("--key-file", metavar="KEYFILE", help=_KEY_FILE_HELP)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                add_key_file_option(action)


@contextmanager
def key_scope(args: argparse.Namespace) -> Iterator[None]:
    """Run a command with its ``--key-file`` as the active key, exported to child processes too.

    Without ``--key-file`` nothing changes: the environment variables, if set, are the key.
    """
    from modelport.protect import ENV_KEY, ENV_KEY_FILE, load_key, use_key

    key_file = getattr(args, "key_file", None)
    if not key_file:
        yield
        return
    key = load_key(key_file)
    saved = {name: os.environ.get(name) for name in (ENV_KEY, ENV_KEY_FILE)}
    os.environ[ENV_KEY_FILE] = str(Path(key_file).resolve())
    os.environ.pop(ENV_KEY, None)
    try:
        with use_key(key):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
