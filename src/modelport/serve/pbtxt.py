"""Triton's ``config.pbtxt``, read for the settings modelport supports.

Users coming from Triton keep their model repository: ``<model>/config.pbtxt`` is Triton's
``inference.ModelConfig`` message in protobuf text format. :mod:`google.protobuf.text_format`
parses only into a message class built from a descriptor, and Triton's descriptor ships with
``tritonclient``, which the server does not depend on; without a schema the text format cannot
even tell an integer field from an enum. So this module has its own small text-format parser
(:func:`parse_pbtxt`, which keeps every field as the list of its values, since without a schema a
repeated field cannot be told from a singular one), and a mapping (:func:`read_triton_config`)
that knows Triton's schema for the fields it reads.

The mapping never drops a setting the user expects to take effect: every Triton field modelport
does not implement is an error naming the field and saying what to do. The exceptions are
harmless, and each is listed here:

* ``backend: "onnxruntime"`` (the same engine as ``platform: "onnxruntime_onnx"``),
  ``default_model_filename: "model.onnx"`` (the file modelport loads anyway),
  ``instance_group.name`` (names only Triton's instances), ``input.format`` (Triton only checks
  that a ``FORMAT_NCHW``/``FORMAT_NHWC`` input has three dims; so does this module);
* the :data:`IGNORED_FIELDS`, which Triton's own ONNX Runtime backend ignores on CPU;
* fields set to their default value, which in proto3 is the same as not setting them
  (``preserve_ordering: false``, ``response_cache { enable: false }``, ...).

How Triton fields become :class:`~modelport.serve.repository.ModelConfig` keys:

* ``instance_group`` → ``instance_count``, the sum of the groups' ``count`` (1 when absent);
  ``KIND_CPU`` and ``KIND_AUTO`` (which falls back to the CPU) run on the CPU; ``KIND_GPU`` gives
  ``execution: cuda`` (on the one GPU ``gpus`` names, GPU 0 by default); CPU and GPU groups in one
  model, or several GPUs, are refused.
* ``dynamic_batching`` → ``dynamic_batching`` with ``max_queue_delay_ms`` (Triton's default
  delay is 0, so ``dynamic_batching {}`` maps to ``max_queue_delay_ms: 0.0``, not to modelport's
  default) and ``preferred_batch_sizes``; its ``default_queue_policy`` gives ``max_queue_size``
  and ``timeout_ms``. A value of 0 means "no limit" in Triton; modelport has no unbounded queue,
  so ``max_queue_size: 0`` keeps modelport's bounded default, and ``default_timeout_microseconds:
  0`` leaves ``timeout_ms`` unset (no timeout).
* ``optimization { graph { level } }`` → ``graph_optimization``, as Triton's ONNX Runtime backend
  reads it (onnxruntime_backend ``src/onnxruntime.cc`` and its README; the generic "-1: disabled"
  in model_config.proto does not hold for ONNX Runtime): -1 → ``basic``, 0 (the default) →
  ``all``, 1 → ``extended``, 2 → ``disable``. Triton quietly treats other levels as 0; here they are an error.
* ``parameters`` ``intra_op_thread_count`` / ``inter_op_thread_count`` → ``intra_op_threads`` /
  ``inter_op_threads``; "0" means "let the runtime choose", so it leaves the key unset (modelport
  then budgets threads across instances). ``execution_mode`` "0" (sequential, ONNX Runtime's
  default) is accepted.

``input`` / ``output`` are not settings: they come back as :class:`DeclaredTensor` for
:func:`check_declared` to compare with the model once it is loaded.
"""

from __future__ import annotations

import bisect
import difflib
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn

from modelport.errors import ProtocolError, RepositoryError
from modelport.ir.specs import TensorSpec
from modelport.serve.protocol import DATATYPES, datatype_of

__all__ = [
    "IGNORED_FIELDS",
    "DeclaredTensor",
    "Identifier",
    "Message",
    "TritonConfig",
    "check_declared",
    "parse_pbtxt",
    "read_triton_config",
]

logger = logging.getLogger(__name__)

_MODEL_FILE = "model.onnx"  # repository.MODEL_FILE; not imported, repository imports this module
_MAX_DEPTH = 64


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


#: Triton fields accepted with any value and ignored, because Triton's ONNX Runtime backend
#: ignores them too when it runs on CPU (config path -> why).
IGNORED_FIELDS: Final[Mapping[str, str]] = {
    "instance_group.name": "it only names Triton's instances",
    "optimization.priority": "Triton applies model priorities to TensorRT models only",
    "optimization.cuda": "Triton reads CUDA settings for TensorRT models only",
    "optimization.input_pinned_memory": "pinned buffers speed up CPU-GPU copies; this server runs on CPU",
    "optimization.output_pinned_memory": "pinned buffers speed up CPU-GPU copies; this server runs on CPU",
    "optimization.gather_kernel_buffer_threshold": "Triton reads it for TensorRT models only",
    "optimization.eager_batching": "Triton reads it for TensorRT models only",
}

# The fields of each Triton message this module reads (model_config.proto), by config path; a
# name not listed is a typo, answered with the closest field.
_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    path: _words(names)
    for path, names in {
        "": "name platform backend runtime version_policy max_batch_size input output batch_input batch_output "
        "optimization dynamic_batching sequence_batching ensemble_scheduling instance_group default_model_filename "
        "cc_model_filenames metric_tags parameters model_warmup model_operations model_transaction_policy "
        "model_repository_agents response_cache model_metrics",
        "version_policy": "latest all specific",
        "version_policy.latest": "num_versions",
        "version_policy.all": "",
        "version_policy.specific": "versions",
        "instance_group": "name kind count rate_limiter gpus secondary_devices profile passive host_policy",
        "dynamic_batching": "preferred_batch_size max_queue_delay_microseconds preserve_ordering priority_levels "
        "default_priority_level default_queue_policy priority_queue_policy",
        "dynamic_batching.default_queue_policy": "timeout_action default_timeout_microseconds allow_timeout_override "
        "max_queue_size",
        "optimization": "graph priority cuda execution_accelerators input_pinned_memory output_pinned_memory "
        "gather_kernel_buffer_threshold eager_batching",
        "optimization.graph": "level",
        "parameters": "key value",
        "parameters.value": "string_value",
        "input": "name data_type format dims reshape is_shape_tensor allow_ragged_batch optional "
        "is_non_linear_format_io",
        "output": "name data_type dims reshape label_filename is_shape_tensor is_non_linear_format_io",
        "model_transaction_policy": "decoupled",
        "response_cache": "enable",
    }.items()
}

# Fields that take effect in Triton but are not implemented here: config path -> what to do.
_UNSUPPORTED: Final[Mapping[str, str]] = {
    "runtime": "it selects a Triton backend library; modelport always runs ONNX Runtime — remove it",
    "batch_input": "Triton's ragged-batch inputs are not supported — remove it",
    "batch_output": "Triton's ragged-batch outputs are not supported — remove it",
    "sequence_batching": "stateful sequence batching is not supported — use dynamic_batching, or remove it",
    "ensemble_scheduling": "Triton ensembles are not supported — chain stages with a pipeline in config.yaml",
    "cc_model_filenames": f"per-GPU model files are not supported — keep one <version>/{_MODEL_FILE} and remove it",
    "metric_tags": "custom metric labels are not supported — remove it",
    "model_warmup": "warm-up requests are not supported — remove it",
    "model_operations": "custom operator libraries are not supported — remove it",
    "model_repository_agents": "repository agents (checksums, decryption) are not supported — remove it",
    "model_metrics": "custom metric buckets are not supported — remove it",
    "instance_group.secondary_devices": "secondary devices (NVDLA) are not supported — remove it",
    "instance_group.rate_limiter": "the rate limiter is not supported — bound the load with max_queue_size instead",
    "instance_group.profile": "TensorRT optimization profiles do not apply to ONNX Runtime — remove it",
    "instance_group.host_policy": "host policies (NUMA binding) are not supported — remove it",
    "dynamic_batching.priority_queue_policy": "per-priority queue policies are not supported — remove it",
    "optimization.execution_accelerators": (
        "execution accelerators (TensorRT, OpenVINO, CUDA) are not supported; modelport runs ONNX Runtime's "
        "CPU provider — remove it"
    ),
    "input.reshape": "reshaping inputs is not supported — export the model with the shape clients send; remove it",
    "output.reshape": "reshaping outputs is not supported — export the model with the shape clients get; remove it",
    "output.label_filename": (
        "it serves Triton's classification extension, which modelport does not implement — remove it and "
        "post-process the output (a pipeline stage, or the client)"
    ),
}

# Fields accepted only at their proto3 default (the same as not setting them): path -> (default, fix).
_DEFAULT_ONLY: Final[Mapping[str, tuple[bool | int, str]]] = {
    "dynamic_batching.preserve_ordering": (False, "ordering responses across requests is not supported — remove it"),
    "dynamic_batching.priority_levels": (0, "request priorities are not supported — remove it"),
    "dynamic_batching.default_priority_level": (0, "request priorities are not supported — remove it"),
    "dynamic_batching.default_queue_policy.allow_timeout_override": (
        False,
        "per-request timeout overrides are not supported — remove it",
    ),
    "instance_group.passive": (False, "passive instances are not supported — remove it"),
    "input.is_shape_tensor": (False, "shape tensors are a TensorRT feature — remove it"),
    "input.allow_ragged_batch": (False, "ragged batches are not supported — remove it"),
    "input.optional": (False, "optional inputs are not supported — send the input, and remove it"),
    "input.is_non_linear_format_io": (False, "non-linear formats are a TensorRT feature — remove it"),
    "output.is_shape_tensor": (False, "shape tensors are a TensorRT feature — remove it"),
    "output.is_non_linear_format_io": (False, "non-linear formats are a TensorRT feature — remove it"),
    "model_transaction_policy.decoupled": (
        False,
        "decoupled models (several responses per request) are not supported — remove it",
    ),
    "response_cache.enable": (False, "the response cache is not supported — remove it"),
}

# Enums, in number order (text format accepts an enum by name or by number).
_KINDS: Final = ("KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL")
_TIMEOUT_ACTIONS: Final = ("REJECT", "DELAY")
_FORMATS: Final = ("FORMAT_NONE", "FORMAT_NHWC", "FORMAT_NCHW")
_DATA_TYPES: Final = _words(
    "TYPE_INVALID TYPE_BOOL TYPE_UINT8 TYPE_UINT16 TYPE_UINT32 TYPE_UINT64 TYPE_INT8 TYPE_INT16 TYPE_INT32 "
    "TYPE_INT64 TYPE_FP16 TYPE_FP32 TYPE_FP64 TYPE_STRING TYPE_BF16"
)
_GRAPH_LEVELS: Final = {-1: "basic", 0: "all", 1: "extended", 2: "disable"}
_THREAD_PARAMETERS: Final = {"intra_op_thread_count": "intra_op_threads", "inter_op_thread_count": "inter_op_threads"}
_PARAMETERS: Final = (*_THREAD_PARAMETERS, "execution_mode")
# Messages whose every field is accepted at its default only.
_AT_DEFAULT: Final = ("model_transaction_policy", "response_cache")
_TOP_LEVEL: Final = (
    *_words(
        "name platform backend default_model_filename max_batch_size instance_group dynamic_batching "
        "version_policy parameters optimization input output"
    ),
    *_AT_DEFAULT,
)


# -------------------------------------------------------------------------------------------------
# parsed values


class Identifier(str):
    """A bare identifier in text format (an enum name such as ``KIND_CPU``, or ``true``).

    It compares equal to the plain string, but tells an enum value from a quoted string.
    """

    __slots__ = ()


class Message(dict[str, list[Any]]):
    """A parsed message: field name -> its values in order (a field set once has one value).

    Values are ``int``, ``float``, ``str`` (quoted strings), :class:`Identifier` or nested
    :class:`Message`. ``positions`` holds the (line, column) of each field's first occurrence and
    ``start`` where the message itself begins, for error messages.
    """

    __slots__ = ("positions", "start")

    def __init__(self, start: tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        self.start = start
        self.positions: dict[str, tuple[int, int]] = {}

    def add(self, name: str, values: list[Any], position: tuple[int, int]) -> None:
        self.setdefault(name, []).extend(values)
        self.positions.setdefault(name, position)


# -------------------------------------------------------------------------------------------------
# tokenizer

_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r\n\v\f]+|\#[^\n]*)
    |(?P<string>"(?:[^"\\\n]|\\[^\n])*"|'(?:[^'\\\n]|\\[^\n])*')
    |(?P<number>0[xX][0-9a-fA-F]+
        |(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[fF]?
        |[0-9]+[eE][+-]?[0-9]+[fF]?
        |[0-9]+[fF]?)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<symbol>[{}<>\[\]:,;./-])
    """,
    re.VERBOSE,
)
_NUMBER_TAIL = re.compile(r"[A-Za-z0-9_.]")
_ESCAPE = re.compile(r"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|(.))")
# \a \b \f \n \r \t \v \\ \' \" \? -> their byte
_SIMPLE_ESCAPES: Final = dict(zip("abfnrtv\\'\"?", b"\a\b\f\n\r\t\v\\'\"?", strict=True))
_FLOAT_WORDS: Final = {"inf": float("inf"), "infinity": float("inf"), "nan": float("nan")}


@dataclass(frozen=True)
class _Token:
    kind: str  # "string", "int", "float", "ident", "eof", or the symbol itself ("{", ":", ...)
    text: str
    value: Any
    line: int
    col: int

    def describe(self) -> str:
        return "the end of the file" if self.kind == "eof" else repr(self.text)


class _Source:
    """Text with line:column positions for errors."""

    def __init__(self, text: str, name: str) -> None:
        self.text = text
        self.name = name
        self._newlines = [i for i, char in enumerate(text) if char == "\n"]

    def position(self, offset: int) -> tuple[int, int]:
        line = bisect.bisect_left(self._newlines, offset)
        start = self._newlines[line - 1] + 1 if line else 0
        return line + 1, offset - start + 1

    def error(self, position: tuple[int, int], message: str) -> RepositoryError:
        return RepositoryError(f"{self.name}:{position[0]}:{position[1]}: {message}")


def _tokenize(source: _Source) -> list[_Token]:
    text = source.text
    tokens: list[_Token] = []
    offset = 0
    while offset < len(text):
        match = _TOKEN.match(text, offset)
        if match is None:
            char = text[offset]
            problem = "unterminated string" if char in "\"'" else f"unexpected character {char!r}"
            raise source.error(source.position(offset), f"{problem} — config.pbtxt is protobuf text format")
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(_make_token(source, kind, match.group(), offset))
        offset = match.end()
        if kind == "number" and offset < len(text) and _NUMBER_TAIL.match(text, offset):
            raise source.error(source.position(match.start()), f"malformed number {text[match.start() : offset + 1]!r}")
    line, col = source.position(len(text))
    tokens.append(_Token("eof", "", None, line, col))
    return tokens


def _make_token(source: _Source, kind: str, text: str, offset: int) -> _Token:
    line, col = source.position(offset)
    value: Any = text
    if kind == "string":
        value = _unescape(text[1:-1], source, (line, col))
    elif kind == "number":
        kind, value = _number(text, source, (line, col))
    elif kind == "symbol":
        kind = text
    return _Token(kind, text, value, line, col)


def _number(text: str, source: _Source, position: tuple[int, int]) -> tuple[str, int | float]:
    if text[:2] in ("0x", "0X"):
        return "int", int(text, 16)
    if re.fullmatch(r"[0-9]+", text):
        if len(text) > 1 and text[0] == "0":
            if not re.fullmatch(r"[0-7]+", text):
                raise source.error(position, f"{text!r} is not a valid octal number (a leading 0 means octal)")
            return "int", int(text, 8)
        return "int", int(text)
    return "float", float(text.rstrip("fF"))


def _unescape(body: str, source: _Source, position: tuple[int, int]) -> bytes:
    """The bytes of a string literal's body, with C-style escapes decoded."""
    out = bytearray()
    last = 0
    for match in _ESCAPE.finditer(body):
        out += body[last : match.start()].encode("utf-8")
        last = match.end()
        octal, hex2, hex4, hex8, simple = match.groups()
        if octal is not None:
            if int(octal, 8) > 0xFF:
                raise source.error(position, f"octal escape \\{octal} is larger than a byte")
            out.append(int(octal, 8))
        elif hex2 is not None:
            out.append(int(hex2, 16))
        elif hex4 is not None or hex8 is not None:
            code = int(hex4 or hex8, 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise source.error(position, f"escape {match.group()} is not a Unicode code point")
            out += chr(code).encode("utf-8")
        elif simple in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[simple])
        else:
            raise source.error(position, f"unknown escape sequence {match.group()!r} in a string")
    out += body[last:].encode("utf-8")
    return bytes(out)


# -------------------------------------------------------------------------------------------------
# parser


class _Parser:
    def __init__(self, source: _Source) -> None:
        self.source = source
        self.tokens = _tokenize(source)
        self.index = 0

    def _peek(self) -> _Token:
        return self.tokens[self.index]

    def _next(self) -> _Token:
        token = self.tokens[self.index]
        if token.kind != "eof":
            self.index += 1
        return token

    def _accept(self, kind: str) -> bool:
        if self._peek().kind == kind:
            self.index += 1
            return True
        return False

    def _fail(self, token: _Token, message: str) -> NoReturn:
        raise self.source.error((token.line, token.col), message)

    def parse(self) -> Message:
        return self._fields(Message(), closing="eof", opened=None, depth=0)

    def _fields(self, message: Message, closing: str, opened: _Token | None, depth: int) -> Message:
        while not self._accept(closing):
            token = self._peek()
            if token.kind in ("eof", "}", ">"):
                if opened is None:
                    self._fail(token, f"unexpected {token.describe()}: no message is open here")
                self._fail(
                    token,
                    f"expected {closing!r} to close the {opened.text!r} at {opened.line}:{opened.col}, "
                    f"found {token.describe()}",
                )
            self._field(message, depth)
            if not self._accept(","):
                self._accept(";")
        return message

    def _field(self, message: Message, depth: int) -> None:
        token = self._next()
        if token.kind == "[":
            self._fail(token, "extension and Any fields ([...]) are not part of Triton's model configuration")
        if token.kind != "ident":
            self._fail(token, f"expected a field name, found {token.describe()}")
        colon = self._accept(":")
        after = self._peek()
        if after.kind in ("{", "<"):
            values: list[Any] = [self._message(depth)]
        elif after.kind == "[":
            values = self._list(token.text, colon, depth)
        elif colon:
            values = [self._scalar()]
        else:
            self._fail(after, f"expected ':' or '{{' after field name '{token.text}', found {after.describe()}")
        message.add(token.text, values, (token.line, token.col))

    def _message(self, depth: int) -> Message:
        opened = self._next()
        if depth >= _MAX_DEPTH:
            self._fail(opened, f"messages are nested more than {_MAX_DEPTH} deep")
        closing = "}" if opened.kind == "{" else ">"
        return self._fields(Message((opened.line, opened.col)), closing=closing, opened=opened, depth=depth + 1)

    def _list(self, name: str, colon: bool, depth: int) -> list[Any]:
        self._next()  # "["
        values: list[Any] = []
        if self._accept("]"):
            return values
        while True:
            token = self._peek()
            if token.kind in ("{", "<"):
                values.append(self._message(depth))
            elif colon:
                values.append(self._scalar())
            else:
                self._fail(token, f"'{name} [...]' without ':' holds messages; write '{name}: [...]' for values")
            if self._accept("]"):
                break
            if not self._accept(","):
                self._fail(self._peek(), f"expected ',' or ']' in the list '{name}', found {self._peek().describe()}")
        if len({isinstance(v, Message) for v in values}) > 1:
            self._fail(token, f"the list '{name}' mixes messages and values")
        return values

    def _scalar(self) -> Any:
        token = self._next()
        if token.kind == "string":
            raw = token.value
            while self._peek().kind == "string":  # adjacent strings concatenate, as in C
                raw += self._next().value
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError as e:
                self._fail(token, f"the string is not valid UTF-8 ({e.reason}) — protobuf strings must be")
        if token.kind in ("int", "float"):
            return token.value
        if token.kind == "ident":
            return Identifier(token.text)
        if token.kind == "-":
            number = self._next()
            if number.kind in ("int", "float"):
                return -number.value
            if number.kind == "ident" and number.text.lower() in _FLOAT_WORDS:
                return -_FLOAT_WORDS[number.text.lower()]
            self._fail(number, f"expected a number after '-', found {number.describe()}")
        self._fail(token, f"expected a value, found {token.describe()}")


def parse_pbtxt(text: str, *, source: str = "config.pbtxt") -> Message:
    """Parse protobuf text format into nested :class:`Message` dicts, without a schema.

    Every field maps to the list of its values, in order: ``a: 1 a: 2``, ``a: [1, 2]`` and
    ``a [{...}]`` give lists alike, and a field set once gives a one-element list. Quoted strings
    are ``str`` (escapes decoded, adjacent strings joined), numbers ``int`` or ``float`` (decimal,
    octal with a leading 0, hex, ``1.5f``, negative), bare words :class:`Identifier`. Messages are
    written ``name {...}``, ``name: {...}`` or with ``<...>``; fields may end with ``,`` or ``;``;
    ``#`` starts a comment. Raises :class:`RepositoryError` ``source:line:column: problem``.
    """
    return _Parser(_Source(text, source)).parse()


# -------------------------------------------------------------------------------------------------
# the mapping to ModelConfig keys


@dataclass(frozen=True)
class DeclaredTensor:
    """An input or output as config.pbtxt declares it: KServe datatype (``"FP32"``) and dims.

    As in Triton, ``dims`` leave out the batch axis when the model's max_batch_size is above 0,
    and -1 is a dimension of any size.
    """

    name: str
    datatype: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class TritonConfig:
    """A config.pbtxt, mapped: ``settings`` are ModelConfig keys, inputs/outputs as declared."""

    settings: dict[str, Any]
    inputs: tuple[DeclaredTensor, ...]
    outputs: tuple[DeclaredTensor, ...]


@dataclass(frozen=True)
class _At:
    """Where a message sits: ``shown`` for messages (``instance_group[1]``), ``path`` for tables."""

    shown: str
    path: str

    def child(self, key: str, index: int | None = None) -> _At:
        prefix = f"{self.shown}." if self.shown else ""
        suffix = f"[{index}]" if index is not None else ""
        return _At(f"{prefix}{key}{suffix}", f"{self.path}.{key}" if self.path else key)

    def field(self, key: str) -> str:
        return f"{self.shown}.{key}" if self.shown else key


class _Reader:
    """Typed access to parsed messages, with errors that point at the field in the file."""

    def __init__(self, source: _Source) -> None:
        self.source = source

    def fail(self, message: Message, key: str | None, problem: str) -> NoReturn:
        position = message.positions.get(key, message.start) if key else message.start
        raise self.source.error(position, problem)

    def check_fields(self, message: Message, at: _At, handled: Iterable[str]) -> None:
        """Refuse every field that is neither handled, ignorable, nor at its default value."""
        handled = set(handled)
        for key in message:
            path = f"{at.path}.{key}" if at.path else key
            if key in handled:
                continue
            if path in IGNORED_FIELDS:
                logger.debug("%s: ignoring %s: %s", self.source.name, at.field(key), IGNORED_FIELDS[path])
            elif path in _DEFAULT_ONLY:
                default, fix = _DEFAULT_ONLY[path]
                value = self.boolean(message, key, at) if isinstance(default, bool) else self.integer(message, key, at)
                if value != default:
                    self.fail(message, key, f"{at.field(key)}: {fix}")
            elif path in _UNSUPPORTED:
                self.fail(message, key, f"{at.field(key)}: {_UNSUPPORTED[path]}")
            else:
                self._unknown(message, key, at)

    def _unknown(self, message: Message, key: str, at: _At) -> NoReturn:
        fields = _FIELDS[at.path]
        if key in fields:
            self.fail(message, key, f"{at.field(key)} is not supported by modelport — remove it")
        close = difflib.get_close_matches(key, fields, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        where = f"'{at.shown}'" if at.shown else "the model configuration"
        known = ", ".join(fields) or "none"
        self.fail(message, key, f"unknown field '{key}' in {where} — {hint}Triton's fields there: {known}")

    # single values ------------------------------------------------------------------------------
    def one(self, message: Message, key: str, at: _At) -> Any:
        """The value of a singular field, or None when it is absent."""
        values = message.get(key)
        if values is None:
            return None
        if len(values) != 1:
            self.fail(message, key, f"{at.field(key)} is given {len(values)} times, but it takes one value")
        return values[0]

    def message(self, message: Message, key: str, at: _At) -> Message | None:
        value = self.one(message, key, at)
        if value is not None and not isinstance(value, Message):
            self.fail(message, key, f"{at.field(key)} must be a message ({key} {{ ... }}), got {value!r}")
        return value

    def string(self, message: Message, key: str, at: _At) -> str | None:
        value = self.one(message, key, at)
        if value is not None and (not isinstance(value, str) or isinstance(value, Identifier)):
            self.fail(message, key, f'{at.field(key)} must be a quoted string ({key}: "..."), got {value!r}')
        return value

    def integer(self, message: Message, key: str, at: _At, *, minimum: int | None = None) -> int | None:
        value = self.one(message, key, at)
        return None if value is None else self._check_int(message, key, at, value, minimum)

    def integers(self, message: Message, key: str, at: _At, *, minimum: int | None = None) -> list[int]:
        """The values of a repeated integer field (``[]`` when absent)."""
        return [self._check_int(message, key, at, value, minimum) for value in message.get(key, [])]

    def _check_int(self, message: Message, key: str, at: _At, value: Any, minimum: int | None) -> int:
        if not isinstance(value, int):
            self.fail(message, key, f"{at.field(key)} must be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            self.fail(message, key, f"{at.field(key)} must be {minimum} or more, got {value}")
        return value

    def boolean(self, message: Message, key: str, at: _At) -> bool | None:
        value = self.one(message, key, at)
        if value is None:
            return None
        if isinstance(value, Identifier) and value in ("true", "True", "t", "false", "False", "f"):
            return value in ("true", "True", "t")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        self.fail(message, key, f"{at.field(key)} must be true or false, got {value!r}")

    def enum(self, message: Message, key: str, at: _At, names: Sequence[str]) -> str | None:
        value = self.one(message, key, at)
        if value is None:
            return None
        if isinstance(value, int) and 0 <= value < len(names):
            return names[value]
        if isinstance(value, Identifier) and value in names:
            return str(value)
        self.fail(message, key, f"{at.field(key)} must be one of {', '.join(names)}, got {value!r}")

    def messages(self, message: Message, key: str, at: _At) -> list[Message]:
        values = message.get(key, [])
        for value in values:
            if not isinstance(value, Message):
                self.fail(message, key, f"{at.field(key)} must hold messages ({key} {{ ... }}), got {value!r}")
        return values


def read_triton_config(path: Path) -> TritonConfig:
    """Read ``<model>/config.pbtxt`` into ModelConfig keys and the declared inputs and outputs.

    Raises :class:`RepositoryError` (the message starts with ``path``) for a syntax error, a field
    modelport does not support, or a value it cannot serve.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RepositoryError(f"{path}: cannot be read as UTF-8 text: {e}") from e
    source = _Source(text, str(path))
    root = _Parser(source).parse()
    reader = _Reader(source)
    top = _At("", "")
    reader.check_fields(root, top, handled=_TOP_LEVEL)
    settings: dict[str, Any] = {}
    _identity(root, reader, top, settings)
    _instances(root, reader, top, settings)
    _batching(root, reader, top, settings)
    _version_policy(root, reader, top, settings)
    _parameters(root, reader, top, settings)
    _optimization(root, reader, top, settings)
    max_batch_size = settings.get("max_batch_size", 0)
    for key in _AT_DEFAULT:
        if (message := reader.message(root, key, top)) is not None:
            reader.check_fields(message, top.child(key), handled=())
    inputs = _tensors(root, reader, top, "input", max_batch_size)
    outputs = _tensors(root, reader, top, "output", max_batch_size)
    logger.debug("%s: read %s", path, settings)
    return TritonConfig(settings=settings, inputs=inputs, outputs=outputs)


def _identity(root: Message, reader: _Reader, at: _At, settings: dict[str, Any]) -> None:
    """name, platform/backend, default_model_filename and max_batch_size."""
    name = reader.string(root, "name", at)
    if name:
        settings["name"] = name
    platform = reader.string(root, "platform", at)
    if platform is not None:
        if platform != "onnxruntime_onnx":
            reader.fail(
                root,
                "platform",
                f"modelport serves ONNX models with ONNX Runtime; platform '{platform}' is not supported — "
                'convert the model to ONNX and set platform: "onnxruntime_onnx"',
            )
        settings["platform"] = platform
    backend = reader.string(root, "backend", at)
    if backend is not None:
        if backend != "onnxruntime":
            reader.fail(
                root,
                "backend",
                f"modelport serves ONNX models with ONNX Runtime; backend '{backend}' is not supported — "
                'convert the model to ONNX and set backend: "onnxruntime"',
            )
        settings["platform"] = "onnxruntime_onnx"
    filename = reader.string(root, "default_model_filename", at)
    if filename not in (None, "", _MODEL_FILE):
        reader.fail(
            root,
            "default_model_filename",
            f"default_model_filename '{filename}': modelport loads <version>/{_MODEL_FILE} — rename the file "
            "and remove default_model_filename",
        )
    max_batch_size = reader.integer(root, "max_batch_size", at, minimum=0)
    if max_batch_size is not None:
        settings["max_batch_size"] = max_batch_size


def _instances(root: Message, reader: _Reader, at: _At, settings: dict[str, Any]) -> None:
    """instance_group -> instance_count (the sum of the groups' counts); KIND_GPU -> execution: cuda."""
    groups = reader.messages(root, "instance_group", at)
    total = 0
    kinds: set[str] = set()
    devices: set[int] = set()
    for index, group in enumerate(groups):
        here = at.child("instance_group", index)
        reader.check_fields(group, here, handled=("kind", "count", "gpus"))
        kind = reader.enum(group, "kind", here, _KINDS) or "KIND_AUTO"
        if kind == "KIND_MODEL":
            reader.fail(group, "kind", f"{here.field('kind')} KIND_MODEL is not supported — use kind: KIND_CPU")
        gpus = reader.integers(group, "gpus", here, minimum=0)
        if gpus and kind != "KIND_GPU":
            reader.fail(group, "gpus", f"{here.field('gpus')} only applies to kind: KIND_GPU")
        kinds.add("gpu" if kind == "KIND_GPU" else "cpu")
        devices.update(gpus)
        count = reader.integer(group, "count", here, minimum=1)
        total += 1 if count is None else count
    if len(kinds) > 1:
        reader.fail(
            root, "instance_group", f"{at.field('instance_group')} mixes GPU and CPU groups — one kind per model"
        )
    if len(devices) > 1:
        reader.fail(
            root, "instance_group", f"{at.field('instance_group')} names GPUs {sorted(devices)} — one GPU per model"
        )
    if groups:
        settings["instance_count"] = total
    if kinds == {"gpu"}:
        settings["execution"] = "cuda"
        if devices:
            settings["device_id"] = devices.pop()


def _batching(root: Message, reader: _Reader, at: _At, settings: dict[str, Any]) -> None:
    """dynamic_batching and its default queue policy."""
    batching = reader.message(root, "dynamic_batching", at)
    if batching is None:
        return
    here = at.child("dynamic_batching")
    reader.check_fields(
        batching, here, handled=("preferred_batch_size", "max_queue_delay_microseconds", "default_queue_policy")
    )
    delay_us = reader.integer(batching, "max_queue_delay_microseconds", here, minimum=0) or 0
    settings["dynamic_batching"] = {
        "max_queue_delay_ms": delay_us / 1000.0,
        "preferred_batch_sizes": reader.integers(batching, "preferred_batch_size", here, minimum=1),
    }
    policy = reader.message(batching, "default_queue_policy", here)
    if policy is None:
        return
    where = here.child("default_queue_policy")
    reader.check_fields(policy, where, handled=("timeout_action", "default_timeout_microseconds", "max_queue_size"))
    if reader.enum(policy, "timeout_action", where, _TIMEOUT_ACTIONS) == "DELAY":
        reader.fail(
            policy,
            "timeout_action",
            f"{where.field('timeout_action')} DELAY is not supported: modelport rejects a request that times "
            "out in the queue (504) — use timeout_action: REJECT",
        )
    timeout_us = reader.integer(policy, "default_timeout_microseconds", where, minimum=0)
    if timeout_us:
        settings["timeout_ms"] = timeout_us / 1000.0
    queue_size = reader.integer(policy, "max_queue_size", where, minimum=0)
    if queue_size:  # 0 is Triton's "unbounded"; modelport keeps its bounded default
        settings["max_queue_size"] = queue_size


def _version_policy(root: Message, reader: _Reader, at: _At, settings: dict[str, Any]) -> None:
    policy = reader.message(root, "version_policy", at)
    if policy is None:
        return
    here = at.child("version_policy")
    reader.check_fields(policy, here, handled=("latest", "all", "specific"))
    if len(policy) > 1:
        reader.fail(policy, None, f"version_policy sets {' and '.join(policy)}, but takes one of latest, all, specific")
    latest = reader.message(policy, "latest", here)
    if latest is not None:
        where = here.child("latest")
        reader.check_fields(latest, where, handled=("num_versions",))
        count = reader.integer(latest, "num_versions", where, minimum=1)
        settings["version_policy"] = {"kind": "latest", "num_versions": 1 if count is None else count}
    if (every := reader.message(policy, "all", here)) is not None:
        reader.check_fields(every, here.child("all"), handled=())
        settings["version_policy"] = {"kind": "all"}
    specific = reader.message(policy, "specific", here)
    if specific is not None:
        where = here.child("specific")
        reader.check_fields(specific, where, handled=("versions",))
        versions = reader.integers(specific, "versions", where, minimum=0)
        if not versions:
            reader.fail(specific, None, "version_policy.specific lists no versions — add versions: [1, ...]")
        settings["version_policy"] = {"kind": "specific", "versions": versions}


def _parameters(root: Message, reader: _Reader, at: _At, settings: dict[str, Any]) -> None:
    """The map ``parameters``: ONNX Runtime thread counts (and the default execution mode)."""
    seen: set[str] = set()
    for index, entry in enumerate(reader.messages(root, "parameters", at)):
        here = at.child("parameters", index)
        reader.check_fields(entry, here, handled=("key", "value"))
        key = reader.string(entry, "key", here)
        value = reader.message(entry, "value", here)
        if not key or value is None:
            reader.fail(
                entry, None, f'{here.shown} needs a key and a value: {{ key: "..." value: {{ string_value: "..." }} }}'
            )
        if key in seen:
            reader.fail(entry, "key", f"parameter '{key}' is given twice — keep one")
        seen.add(key)
        where = here.child("value")
        reader.check_fields(value, where, handled=("string_value",))
        text = reader.string(value, "string_value", where) or ""
        if key not in _PARAMETERS:
            reader.fail(
                entry,
                "key",
                f"parameter '{key}' is not supported — modelport reads {', '.join(_PARAMETERS)}; remove it",
            )
        if not re.fullmatch(r"[0-9]+", text.strip()):
            reader.fail(value, "string_value", f"parameter '{key}' must be a whole number as a string, got {text!r}")
        number = int(text)
        if key == "execution_mode" and number != 0:
            reader.fail(
                value,
                "string_value",
                f"parameter execution_mode '{text}': only sequential execution (\"0\") is supported — remove it",
            )
        if key in _THREAD_PARAMETERS and number > 0:  # 0: the runtime chooses (modelport budgets the cores)
            settings[_THREAD_PARAMETERS[key]] = number


def _optimization(root: Message, reader: _Reader, at: _At, settings: dict[str, Any]) -> None:
    optimization = reader.message(root, "optimization", at)
    if optimization is None:
        return
    here = at.child("optimization")
    reader.check_fields(optimization, here, handled=("graph",))
    graph = reader.message(optimization, "graph", here)
    if graph is None:
        return
    where = here.child("graph")
    reader.check_fields(graph, where, handled=("level",))
    level = reader.integer(graph, "level", where)
    level = 0 if level is None else level
    if level not in _GRAPH_LEVELS:
        levels = ", ".join(f"{number} ({name})" for number, name in _GRAPH_LEVELS.items())
        reader.fail(graph, "level", f"optimization.graph.level {level} is not one of ONNX Runtime's levels: {levels}")
    settings["graph_optimization"] = _GRAPH_LEVELS[level]


def _tensors(root: Message, reader: _Reader, at: _At, kind: str, max_batch_size: int) -> tuple[DeclaredTensor, ...]:
    """The declared inputs (or outputs): name, datatype and dims, each checked."""
    handled = ("name", "data_type", "dims", "format") if kind == "input" else ("name", "data_type", "dims")
    tensors: dict[str, DeclaredTensor] = {}
    for index, entry in enumerate(reader.messages(root, kind, at)):
        here = at.child(kind, index)
        reader.check_fields(entry, here, handled=handled)
        name = reader.string(entry, "name", here)
        if not name:
            reader.fail(entry, None, f'{here.shown} has no name — add name: "..."')
        if name in tensors:
            reader.fail(entry, "name", f"{kind} '{name}' is declared twice — keep one")
        data_type = reader.enum(entry, "data_type", here, _DATA_TYPES)
        dims = reader.integers(entry, "dims", here)
        if not dims:
            batch = " without the batch axis" if max_batch_size > 0 else ""
            reader.fail(entry, None, f"{kind} '{name}' has no dims — list its shape{batch}, e.g. dims: [3, 224, 224]")
        if any(d == 0 or d < -1 for d in dims):
            reader.fail(entry, "dims", f"{kind} '{name}' has dims {dims}; each must be 1 or more, or -1 (any size)")
        tensor_format = reader.enum(entry, "format", here, _FORMATS) if kind == "input" else None
        if tensor_format not in (None, "FORMAT_NONE") and len(dims) != 3:
            reader.fail(entry, "dims", f"{kind} '{name}' has {tensor_format}, which needs 3 dims (C, H, W), got {dims}")
        tensors[name] = DeclaredTensor(name, _datatype(entry, reader, here, data_type), tuple(dims))
    return tuple(tensors.values())


def _datatype(entry: Message, reader: _Reader, at: _At, data_type: str | None) -> str:
    """TYPE_FP32 -> "FP32", TYPE_STRING -> "BYTES"; refuse what the protocol cannot carry."""
    if data_type is None or data_type == "TYPE_INVALID":
        reader.fail(
            entry, "data_type" if data_type else None, f"{at.shown} needs a data_type, e.g. data_type: TYPE_FP32"
        )
    name = "BYTES" if data_type == "TYPE_STRING" else data_type.removeprefix("TYPE_")
    if name not in DATATYPES:
        reader.fail(
            entry,
            "data_type",
            f"{at.field('data_type')} {data_type} is not supported — the KServe v2 protocol "
            f"here carries {', '.join(_triton_type(d) for d in DATATYPES)}",
        )
    return name


def _triton_type(datatype: str) -> str:
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


# -------------------------------------------------------------------------------------------------
# declared tensors against the model


def check_declared(
    declared: Sequence[DeclaredTensor],
    specs: Sequence[TensorSpec],
    *,
    kind: str,
    max_batch_size: int,
    label: str,
) -> None:
    """Check the inputs (or outputs, ``kind``) a config declares against the model's.

    With Triton's semantics: when ``max_batch_size`` > 0, ``dims`` leave out the batch axis (the
    model's axis 0, which must be dynamic); -1 declares a dimension of any size, so it fits only
    a dynamic model axis; a dynamic (symbolic) model axis accepts any declared size. A config
    that declares no tensors of this kind declares nothing to check; one that declares some must
    name every tensor of the model. Raises :class:`RepositoryError` naming ``label`` (``model 'm'
    version 1``), the tensor, what was declared and what the model has.
    """
    if not declared:
        return
    by_name = {spec.name: spec for spec in specs}
    for tensor in declared:
        spec = by_name.get(tensor.name)
        if spec is None:
            raise RepositoryError(
                f"{label}: the config declares {kind} '{tensor.name}', but the model has no such {kind} — its "
                f"{kind}s are {', '.join(repr(n) for n in by_name) or 'none'}; fix the name"
            )
        _check_datatype(tensor, spec, kind, label)
        _check_dims(tensor, spec, kind, max_batch_size, label)
    missing = [name for name in by_name if name not in {t.name for t in declared}]
    if missing:
        raise RepositoryError(
            f"{label}: the config declares {kind}s {', '.join(repr(t.name) for t in declared)}, but the model also "
            f"has {', '.join(repr(n) for n in missing)} — declare every {kind} (modelport serves them all), or "
            f"remove the {kind} section"
        )


def _check_datatype(tensor: DeclaredTensor, spec: TensorSpec, kind: str, label: str) -> None:
    try:
        actual = datatype_of(spec.dtype)
    except ProtocolError as e:
        raise RepositoryError(
            f"{label}: {kind} '{spec.name}' has dtype {spec.dtype}, which the KServe v2 protocol cannot carry: {e}"
        ) from e
    if actual != tensor.datatype:
        raise RepositoryError(
            f"{label}: the config declares {kind} '{tensor.name}' as {_triton_type(tensor.datatype)}, but the "
            f"model's {kind} is {spec.dtype} — set data_type: {_triton_type(actual)}"
        )


def _check_dims(tensor: DeclaredTensor, spec: TensorSpec, kind: str, max_batch_size: int, label: str) -> None:
    if spec.shape is None:
        return  # unknown rank: nothing to compare
    shape = spec.shape
    batched = max_batch_size > 0
    declared = f"dims {list(tensor.dims)}"
    if batched:
        declared += f" plus the batch axis (max_batch_size {max_batch_size})"
    problem = (
        f"{label}: the config declares {kind} '{tensor.name}' with {declared}, but the model's {kind} has shape "
        f"{spec.shape_str()}"
    )
    if batched:
        if not shape or isinstance(shape[0], int):
            raise RepositoryError(
                f"{problem}, whose axis 0 is not a dynamic batch axis — export the model with a dynamic axis 0, "
                "or set max_batch_size: 0 and declare the full shape"
            )
        shape = shape[1:]
    if len(shape) != len(tensor.dims):
        fix = "leave the batch axis out of dims" if batched and len(tensor.dims) == len(shape) + 1 else "fix dims"
        raise RepositoryError(f"{problem} — the ranks differ; {fix}")
    for axis, (want, have) in enumerate(zip(tensor.dims, shape, strict=True)):
        if isinstance(have, int) and want != have:
            size = "any size (-1)" if want == -1 else f"size {want}"
            raise RepositoryError(
                f"{problem} — the config gives axis {axis + int(batched)} {size}, but the model fixes it at "
                f"{have}; declare {have}"
            )
