"""Strict construction of frozen, typed dataclasses from parsed YAML/JSON mappings.

Every user-written configuration (the model spec, device profiles' parts) goes through
:func:`build`: unknown keys and mistyped values are one-line errors naming the key, never
silently ignored (nanoGPT's config checker). Field types are read from the dataclass
annotations; only the small set of types configurations use is understood.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Mapping

from edgemm.errors import InputError


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """`value` as `annotation` (bool, int, float, str, None, unions, tuple[X, ...], tuple[X, Y])."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(annotation):
            try:
                return _coerce(value, option, where)
            except InputError as e:
                errors.append(str(e))
        names = " or ".join(_name(a) for a in typing.get_args(annotation))
        raise InputError(f"{where} must be {names}, got {_describe(value)}")
    if annotation is type(None):
        if value is None:
            return None
        raise InputError(f"{where} must be null, got {_describe(value)}")
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where} must be a list, got {_describe(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise InputError(f"{where} must be a list of {len(args)} values, got {_describe(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise InputError(f"{where} must be a finite number, got {_describe(value)}")
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif annotation is Any:
        return value
    raise InputError(f"{where} must be {_name(annotation)}, got {_describe(value)}")


def _name(annotation: Any) -> str:
    if annotation is type(None):
        return "null"
    if typing.get_origin(annotation) is tuple:
        return "a list"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(annotation, str(annotation))


def build(cls: type, data: Any, where: str, **fixed: Any):
    """`cls(**data)` with every key checked against the dataclass fields and their types.

    `fixed` values are passed as they are (e.g. the input's name) and may not appear in `data`.
    """
    if not isinstance(data, Mapping):
        raise InputError(f"{where} must be a mapping, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in fixed}
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(fields))})")
    kwargs = {name: _coerce(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    try:
        return cls(**kwargs, **fixed)
    except InputError as e:
        raise InputError(f"{where}: {e}") from None


def to_dict(obj) -> dict:
    """A dataclass as plain JSON/YAML values (tuples become lists)."""

    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v

    return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}


def require(condition: bool, message: str) -> None:
    """Validation inside `__post_init__`: raises a one-line InputError."""
    if not condition:
        raise InputError(message)
