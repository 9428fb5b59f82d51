"""Configuration shared by the daemons: a TOML file, `PLANE_*` environment
variables, then command-line flags, each overriding the one before.

Settings are msgspec Structs that forbid unknown keys, so a typo in the file is
an error naming the key and the file. Environment variables are looser: a
`PLANE_*` variable meant for another process (the drone's `PLANE_IP` seen by
the controller) is ignored rather than refused.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from shared import wire

T = TypeVar("T")

ENV_PREFIX = "PLANE_"


class ConfigError(Exception):
    """Configuration that cannot be used; the message says where and why."""


def parse_listen(value: str, *, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` or `[v6]:PORT` → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{value!r} is not HOST:PORT")
    host = host.strip("[]") or default_host
    return host, int(port)


def _set_path(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        child = target.get(key)
        if not isinstance(child, dict):
            child = target[key] = {}
        target = child
    target[path[-1]] = value


def _field_kinds(cls: Any) -> dict[str, Any]:
    """Field name → msgspec type info, for a Struct class."""
    info = msgspec.inspect.type_info(cls)
    if not isinstance(info, msgspec.inspect.StructType):
        return {}
    return {f.encode_name: f.type for f in info.fields}


def _unwrap(kind: Any) -> Any:
    if isinstance(kind, msgspec.inspect.UnionType):
        others = [t for t in kind.types if not isinstance(t, msgspec.inspect.NoneType)]
        return others[0] if len(others) == 1 else kind
    return kind


def _env_value(kind: Any, raw: str) -> Any:
    """An environment string as the field wants it: lists are comma-separated."""
    kind = _unwrap(kind)
    if isinstance(kind, msgspec.inspect.ListType | msgspec.inspect.SetType):
        return [part.strip() for part in raw.split(",") if part.strip()]
    if isinstance(kind, msgspec.inspect.DictType):
        try:
            return msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise ConfigError(f"expected a JSON object, got {raw!r}") from None
    return raw


def _resolve(cls: Any, path: tuple[str, ...]) -> Any | None:
    """The type info of a dotted field path inside `cls`, or None if no such field."""
    kind: Any = msgspec.inspect.type_info(cls)
    for key in path:
        kind = _unwrap(kind)
        if not isinstance(kind, msgspec.inspect.StructType):
            return None
        fields = {f.encode_name: f.type for f in kind.fields}
        if key not in fields:
            return None
        kind = fields[key]
    return kind


def env_overrides(
    cls: Any, environ: Mapping[str, str], aliases: Mapping[str, tuple[str, ...]]
) -> dict[str, Any]:
    """`PLANE_A__B=v` → `{"a": {"b": v}}` for the keys that `cls` knows."""
    result: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == f"{ENV_PREFIX}CONFIG":
            continue
        key = name[len(ENV_PREFIX) :].lower()
        path = aliases.get(key, tuple(key.split("__")))
        kind = _resolve(cls, path)
        if kind is None:
            continue
        try:
            _set_path(result, path, _env_value(kind, raw))
        except ConfigError as exc:
            raise ConfigError(f"environment {name}: {exc}") from None
    return result


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None


def load(
    cls: type[T],
    *,
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    aliases: Mapping[str, tuple[str, ...]] | None = None,
) -> T:
    """Build settings of type `cls` from file, environment and flags.

    `flags` maps dotted paths (`"nats.servers"`) to values; None means unset.
    `aliases` maps a short environment name (`"nats"`) to a field path.
    """
    environ = os.environ if environ is None else environ
    aliases = aliases or {}
    path = path or environ.get(f"{ENV_PREFIX}CONFIG") or None
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        data = read_toml(Path(path))
        source = f"config file {path}"
        _check_known(cls, data, source)
    data = _merge(data, env_overrides(cls, environ, aliases))
    for dotted, value in (flags or {}).items():
        if value is not None:
            _set_path(data, tuple(dotted.split(".")), value)
    try:
        return msgspec.convert(data, cls, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {wire.describe_validation_error(str(exc))}") from None


def _check_known(cls: Any, data: Mapping[str, Any], source: str, prefix: str = "") -> None:
    """Name the first unknown key with its full dotted path."""
    kinds = _field_kinds(cls)
    for key, value in data.items():
        if key not in kinds:
            known = ", ".join(sorted(kinds)) or "none"
            raise ConfigError(f"{source}: unknown key `{prefix}{key}` (known keys: {known})")
        inner = _unwrap(kinds[key])
        if isinstance(inner, msgspec.inspect.StructType) and isinstance(value, Mapping):
            _check_known(inner.cls, value, source, f"{prefix}{key}.")


def _default_text(field: msgspec.inspect.Field) -> str:
    if field.default is not msgspec.NODEFAULT:
        value = field.default
    elif field.default_factory is not msgspec.NODEFAULT:
        value = field.default_factory()
    else:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    return msgspec.json.encode(value).decode()


def reference(cls: Any, prefix: str = "") -> list[str]:
    """Every setting of `cls` as `key = default  (PLANE_ENV)`, for `--help` and docs.

    Generated from the Structs themselves, so the list cannot fall behind the code.
    """
    info = _unwrap(msgspec.inspect.type_info(cls))
    if not isinstance(info, msgspec.inspect.StructType):
        return []
    lines: list[str] = []
    for field in info.fields:
        key = f"{prefix}{field.encode_name}"
        inner = _unwrap(field.type)
        if isinstance(inner, msgspec.inspect.StructType):
            lines.extend(reference(inner.cls, f"{key}."))
            continue
        env = ENV_PREFIX + key.replace(".", "__").upper()
        lines.append(f"{key} = {_default_text(field)}  ({env})")
    return lines
