"""Encoding and decoding of wire messages, with errors a client can act on.

Decoders are built once per type and reused. Every decode failure becomes an
`InvalidMessage` whose text names the offending field, e.g.
`executable.image: expected a string, got an integer`.
"""

from __future__ import annotations

import functools
import re
from typing import Any, TypeVar, overload

import msgspec

from shared import ids

T = TypeVar("T")

MAX_MESSAGE_BYTES = 1 << 20

_encoder = msgspec.json.Encoder()
_PATH_RE = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
# "field: reason", as the __post_init__ checks of shared.protocol raise it
_OWN_FIELD_RE = re.compile(r"(?P<field>[a-z_][a-z0-9_.]*): (?P<reason>.*)", re.S)
# msgspec quotes a failed pattern with repr()
_PATTERN_TEXTS = {repr(pattern): meaning for pattern, meaning in ids.PATTERN_MEANINGS.items()}
_TYPE_WORDS = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "object": "an object",
    "array": "an array",
    "null": "null",
    "datetime": "an RFC 3339 time",
}


class InvalidMessage(ValueError):
    """A payload that is not valid JSON or does not fit the expected message."""


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


@functools.cache
def _decoder(kind: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(kind)


@overload
def decode(kind: type[T], data: bytes | str) -> T: ...
@overload
def decode(kind: Any, data: bytes | str) -> Any: ...


def decode(kind: Any, data: bytes | str) -> Any:
    """Decode `data` as `kind`, raising `InvalidMessage` with a field-naming reason."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(f"message is {len(data)} bytes, more than {MAX_MESSAGE_BYTES}")
    try:
        result = _decoder(kind).decode(data)
    except msgspec.ValidationError as exc:
        raise InvalidMessage(describe_validation_error(str(exc))) from None
    except msgspec.DecodeError as exc:
        reason = str(exc).removeprefix("JSON is malformed: ")
        raise InvalidMessage(f"invalid JSON: {reason}") from None
    return result


@overload
def convert(kind: type[T], value: Any) -> T: ...
@overload
def convert(kind: Any, value: Any) -> Any: ...


def convert(kind: Any, value: Any) -> Any:
    """Like `decode` for already-parsed builtins (dicts, lists, strings)."""
    try:
        result = msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        raise InvalidMessage(describe_validation_error(str(exc))) from None
    return result


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _words(match: re.Match[str]) -> str:
    return _TYPE_WORDS.get(match.group(1), f"`{match.group(1)}`")


def _dotted(path: str) -> str:
    """`$.executable.env['A']` style paths → `executable.env.A`."""
    path = path.replace("[...]", ".*")
    path = re.sub(r"\[(\d+)\]", r".\1", path)
    path = re.sub(r"\[['\"]?([^'\"\]]*)['\"]?\]", r".\1", path)
    return path.lstrip(".")


def describe_validation_error(text: str) -> str:
    """Rewrite a msgspec validation message as `field: reason`."""
    match = _PATH_RE.match(text)
    what = match.group("what") if match else text
    path = _dotted(match.group("path") or "") if match else ""
    missing = re.match(r"Object missing required field `([^`]+)`", what)
    own = _OWN_FIELD_RE.match(what)
    meaning = next((m for p, m in _PATTERN_TEXTS.items() if p in what), None)
    if missing:
        path = f"{path}.{missing.group(1)}" if path else missing.group(1)
        what = "missing required field"
    elif own:
        # A check of our own named the field inside the object at `path`.
        path = f"{path}.{own.group('field')}" if path else own.group("field")
        what = own.group("reason")
    elif meaning is not None:
        what = meaning
    else:
        what = re.sub(r"`(\w+)`", _words, what)
        what = _lower_first(what)
    return f"{path}: {what}" if path else what
