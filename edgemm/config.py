"""User-written configuration files: read with bounds, parsed safely, built into typed dataclasses.

Every user-written configuration (the model spec, device profiles' parts) goes through
:func:`build`: unknown keys and mistyped values are one-line errors naming the key, never
silently ignored (nanoGPT's config checker). Field types are read from the dataclass
annotations; only the small set of types configurations use is understood.

The files are read with :func:`read_text` (a size bound, regular files only) and YAML is parsed by
:func:`parse_yaml`, which bounds the document before building it: aliases let 450 bytes describe a
hundred million items, and deep nesting overflows the recursive composer.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Mapping

from edgemm.errors import InputError, quote

MAX_YAML_DEPTH = 100  # nested collections; PyYAML's composer recurses once per level


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
        raise InputError(f"{where} must be {names}, got {quote(value)}")
    if annotation is type(None):
        if value is None:
            return None
        raise InputError(f"{where} must be null, got {quote(value)}")
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where} must be a list, got {quote(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise InputError(f"{where} must be a list of {len(args)} values, got {quote(value)}")
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
                raise InputError(f"{where} must be a finite number, got {quote(value)}")
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif annotation is Any:
        return value
    raise InputError(f"{where} must be {_name(annotation)}, got {quote(value)}")


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
        raise InputError(f"{where} must be a mapping, got {quote(data)}")
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


def read_text(path: Path, what: str, max_bytes: int) -> str:
    """A user-given UTF-8 file of at most `max_bytes`; a device, FIFO or directory is refused unread."""
    path = Path(path)
    try:
        if not path.is_file():  # /dev/zero or a FIFO would never end
            raise InputError(f"{path}: {'not a regular file' if path.exists() else f'no such {what}'}")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)  # the size read, not stat()'s: the file may grow meanwhile
    except OSError as e:
        raise InputError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    if len(data) > max_bytes:
        raise InputError(f"{path}: too large for a {what} (more than {max_bytes} bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: the {what} is not UTF-8 text ({e.reason} at byte {e.start})") from None


class _TooLarge(Exception):
    pass


def _bounded_loader(max_nodes: int):
    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader that counts the nodes the document expands to (an alias counts as the whole node it
        names, every time it is used) and the nesting depth, and stops at the first node over a bound."""

        def __init__(self, stream):
            super().__init__(stream)
            self._sizes: dict[int, int] = {}  # id(node) -> the nodes it expands to; nodes live until the end
            self._depth = 0

        def compose_node(self, parent, index):
            if self._depth >= MAX_YAML_DEPTH:
                raise _TooLarge(f"line {self.peek_event().start_mark.line + 1}: nested deeper than "
                                f"{MAX_YAML_DEPTH} levels")
            alias = self.check_event(yaml.AliasEvent)
            self._depth += 1
            try:
                node = super().compose_node(parent, index)
            finally:
                self._depth -= 1
            where = f"line {node.start_mark.line + 1}"
            if alias:  # counted when it was built, unless it is still being built: a recursive structure
                if id(node) not in self._sizes:
                    raise _TooLarge(f"{where}: an alias refers to a collection that contains it")
                return node
            children = node.value if isinstance(node, yaml.SequenceNode) else (
                [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
            size = 1 + sum(self._sizes[id(c)] for c in children)
            if size > max_nodes:
                raise _TooLarge(f"{where}: the document expands to more than {max_nodes} values "
                                "(aliases count each time they are used)")
            self._sizes[id(node)] = size
            return node

    return Loader


def parse_yaml(text: str, where: str, max_nodes: int) -> Any:
    """One YAML document as plain data (SafeLoader: data, never code), bounded before it is built."""
    import yaml

    try:
        loader = _bounded_loader(max_nodes)(text)  # what yaml.load does, with a SafeLoader: data, never code
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except _TooLarge as e:
        raise InputError(f"{where}: {e}") from None
    except yaml.YAMLError as e:  # the reader checks the text when it is made: inside the try too
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError(f"{where}:{line} not valid YAML ({problem[:120]})") from None
