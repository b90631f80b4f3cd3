"""Typed, validated sections of a YAML file, with pydantic's errors as one line each.

`section` makes a frozen dataclass with strict types and constrained fields
(pydantic's, when it is installed); `parse_dataclass` validates a YAML
mapping into one and turns pydantic's report into one line naming the key's
full path and what is accepted. Without pydantic (a bare GPU machine's
Python) the types still import, as plain dataclasses, for code that builds
them itself; only validation needs pydantic.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
from typing import (
    Annotated,
    Any,
    Literal,
    TypeVar,
    Union,
    cast,
    dataclass_transform,
    get_args,
    get_origin,
    get_type_hints,
)

from cnnlab.errors import ConfigError

try:
    import pydantic
    import pydantic.dataclasses
    from pydantic import Field
except ImportError:  # the engine alone on a bare machine: the types, unvalidated
    pydantic = None  # type: ignore[assignment]

    def Field(**constraints: Any) -> Any:  # type: ignore[no-redef]  # noqa: N802  (stands in for pydantic.Field)
        return None


T = TypeVar("T")

# YAML's own types, exactly: a number is a number (1 counts as 1.0), "1" is a string and true is no integer;
# unknown keys are errors, not silently ignored.
SECTION_CONFIG = pydantic.ConfigDict(extra="forbid", strict=True) if pydantic is not None else None


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field, Field))
def section(cls: type[T]) -> type[T]:
    """A frozen dataclass of one params.yaml section: pydantic's, validated strictly, when pydantic is installed."""
    if pydantic is not None:
        return cast(type[T], pydantic.dataclasses.dataclass(frozen=True, config=SECTION_CONFIG)(cls))
    return dataclasses.dataclass(frozen=True)(cls)


PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, lt=1)]  # in [0, 1)
Name = Annotated[str, Field(min_length=1)]


@functools.cache
def _adapter(cls: type) -> Any:
    return pydantic.TypeAdapter(cls, config=None if hasattr(cls, "__pydantic_config__") else SECTION_CONFIG)


def parse_dataclass(cls: type[T], data: Any, where: str) -> T:
    """Build `cls` from a YAML value; `where` is its key path in params.yaml.

    Without pydantic (a bare GPU machine running the bench or a stage from the source tree) the value is
    built into the same types unvalidated: params.yaml is trusted there, having been validated where it
    was written.
    """
    if pydantic is None:
        return cast(T, _construct(cls, {} if data is None else data))
    try:
        # Validated as JSON: YAML's mappings, lists and scalars are JSON's, and pydantic's strict JSON mode
        # accepts a mapping for a nested section and a list for a tuple, and nothing looser.
        text = json.dumps({} if data is None else data, default=str)
        return cast(T, _adapter(cast(type, cls)).validate_json(text))
    except pydantic.ValidationError as error:
        raise ConfigError(_one_line(error, cls, data, where)) from None


def _construct(tp: Any, value: Any) -> Any:
    """`value` (from YAML) as type `tp`, nested dataclasses, tuples and mappings included, checking nothing."""
    tp = _strip(tp)
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        hints = get_type_hints(tp, include_extras=True)
        return cast(Any, tp)(**{key: _construct(hints[key], item) for key, item in value.items() if key in hints})
    if origin in (Union, types.UnionType):
        options = [o for o in get_args(tp) if dataclasses.is_dataclass(_strip(o))]
        return _construct(options[0], value) if options and isinstance(value, dict) else value
    if origin is tuple and isinstance(value, list):
        return tuple(_construct(get_args(tp)[0], item) for item in value)
    if origin is dict and isinstance(value, dict):
        return {key: _construct(get_args(tp)[1], item) for key, item in value.items()}
    return value


def _one_line(error: Any, cls: type, data: Any, where: str) -> str:
    """pydantic's ValidationError as one line: the first problem, at its params.yaml key path."""
    located = [(_locate(cls, data, e["loc"]), e) for e in error.errors(include_url=False)]
    if len(located) > 1:  # every branch of a union failed, or several keys did: one line about one of them
        shallow = min(located, key=lambda item: len(item[0][0]))
        deep = max(located, key=lambda item: len(item[0][0]))
        if len(deep[0][0]) == len(shallow[0][0]):
            path, tp, value, _ = located[0][0]
            return f"{where}{path}: {value!r} is not accepted; use {_describe(tp)}"
        located = [deep]  # the user wrote one branch's mapping: what is wrong inside it
    (path, tp, value, parent), first = located[0]
    name, kind, message = where + path, first["type"], first["msg"]
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        return f"{name}: unknown key; accepted keys: {', '.join(_field_names(parent))}"
    if kind in ("missing", "missing_argument", "missing_keyword_only_argument"):
        return f"{name}: required key is missing"
    if kind == "literal_error":
        return f"{name}: {value!r} is not accepted; use {_describe(tp)}"
    if kind == "value_error":
        return f"{name}: {message.removeprefix('Value error, ')}"
    if kind.endswith(("_type", "_parsing")):
        return f"{name}: expected {_describe(tp)}, got {value!r}"
    requirement = message.replace("Input should", "it must").replace("String should", "it must")
    return f"{name}: {value!r} is not accepted; {requirement}"


def _locate(cls: type, data: Any, loc: tuple[Any, ...]) -> tuple[str, Any, Any, Any]:
    """The params.yaml path of an error location (pydantic adds union branch names to it), the type
    expected there, the value found there and the type holding it."""
    path, tp, value, parent = "", cls, data, cls
    for item in loc:
        tp = _strip(tp)
        if dataclasses.is_dataclass(tp) and isinstance(item, str) and item in _field_names(tp):
            parent, tp = tp, get_type_hints(tp, include_extras=True)[item]
            path += f".{item}"
            value = value.get(item) if isinstance(value, dict) else None
        elif get_origin(tp) in (Union, types.UnionType):
            options = [o for o in get_args(tp) if getattr(_strip(o), "__name__", None) == item]
            if options:  # a union branch: same path, that branch's type
                tp = options[0]
        elif get_origin(tp) is dict and isinstance(item, str):
            tp, path = get_args(tp)[1], path + f".{item}"
            value = value.get(item) if isinstance(value, dict) else None
        elif get_origin(tp) is tuple and isinstance(item, int):
            tp, path = get_args(tp)[0], path + f"[{item}]"
            value = value[item] if isinstance(value, list) and item < len(value) else None
        elif dataclasses.is_dataclass(tp) and isinstance(item, str):  # an unknown key
            parent, path, value = tp, path + f".{item}", value.get(item) if isinstance(value, dict) else None
            tp = Any
    return path, _strip(tp), value, parent


def _strip(tp: Any) -> Any:
    """The type inside Annotated[...]."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _field_names(cls: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init] if dataclasses.is_dataclass(cls) else []


def _describe(tp: Any) -> str:
    """What a user may write for type `tp`, in params.yaml terms."""
    tp = _strip(tp)
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(map(repr, get_args(tp)))
    if get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_describe(option) for option in get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a mapping with keys " + ", ".join(_field_names(tp))
    if get_origin(tp) is tuple:
        return "a list"
    if get_origin(tp) is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))
