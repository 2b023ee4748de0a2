"""Typed validation of plain dicts (parsed YAML) against dataclasses.

Supported annotations: bool, int, float, str, Any, Literal[...], X | None, unions,
list[X], tuple[X, ...], dict[str, X], nested dataclasses, and ComponentSpec (a
component chosen by name whose options are the registered component's Config).
Bounds come from field metadata: ``field(default=16, metadata={"ge": 1})``.

Every error is one sentence that names the dotted key and the file (or --set
override) that set it.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from components import registry
from components.errors import UserError

_MISSING = dataclasses.MISSING
FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class RecipeError(UserError, ValueError):
    """A recipe that cannot be used, with the key and the file that set it."""


class NumbersLoader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-6`` (no dot) as a string; YAML 1.2 and every researcher read a number. Free-form
    mappings (an HF config's ``rms_norm_eps``) have no type to convert it back, so the loader reads it right."""


NumbersLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def load_yaml(text: str):
    """``yaml.safe_load`` with YAML 1.2's reading of exponent-only floats (``1e-6``)."""
    return yaml.load(text, Loader=NumbersLoader)


def bounded(default, **bounds):
    """A dataclass field with numeric bounds (ge, gt, le, lt) checked on validation."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=bounds)
    return field(default=default, metadata=bounds)


def bounded_at_build(default, reason: str):
    """A numeric field whose range depends on the built model (a layer index against the tower's
    depth); ``reason`` says what bounds it, and the component checks it when it is built."""
    return field(default=default, metadata={"checked_at_build": reason})


def component(kind: str, default: str | None = None):
    """A dataclass field holding a component of ``kind``; ``default`` is a registered name."""
    if default is None:
        return field(metadata={"component": kind})
    return field(default_factory=lambda: convert_component(kind, default, "", Sources()), metadata={"component": kind})


@dataclass
class ComponentSpec:
    """A component of a recipe: its registered name and its validated options."""

    kind: str
    name: str
    options: Any = None

    def to_dict(self) -> dict:
        data = {"name": self.name}
        if self.options is not None:
            data.update(to_plain(self.options))
        return data


class Sources:
    """Which file or override set each dotted key, for error messages."""

    def __init__(self, default: str = "<recipe>"):
        self.default = default
        self.by_key: dict[str, str] = {}

    def record(self, key: str, source: str) -> None:
        self.by_key[key] = source

    def of(self, key: str) -> str:
        while key:
            if key in self.by_key:
                return self.by_key[key]
            key = key.rpartition(".")[0]
        return self.default


def validate(cls: type, data: Any, path: str = "", sources: Sources | None = None):
    """``data`` checked and converted into an instance of dataclass ``cls``."""
    return _convert(cls, data, path, sources or Sources())


def _fail(sources: Sources, path: str, message: str) -> typing.NoReturn:
    where = sources.of(path)
    key = path or "<top level>"
    raise RecipeError(f"{where}: {key}: {message}")


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, getattr(tp, "__name__", str(tp)))


def _describe(value) -> str:
    text = repr(value)
    return f"{text[:60]}..." if len(text) > 60 else text


def _convert(tp, value, path: str, sources: Sources):
    if tp is Any:
        return value
    if tp is dict:
        tp = dict[str, Any]
    elif tp is list:
        tp = list[Any]
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            _fail(sources, path, f"{_describe(value)} is not allowed{hint}; expected {_type_name(tp)}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            _fail(sources, path, f"must be set; expected {_type_name(tp)}")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, path, sources)
            except RecipeError as error:
                errors.append((option, str(error)))
        # A mapping failed the one mapping option (or a list the one list option): that option's own error names
        # the inner key, where "is not A | B" would not.
        same_shape = [message for option, message in errors if _same_shape(option, value)]
        if len(errors) == 1 or len(same_shape) == 1:
            raise RecipeError(errors[0][1] if len(errors) == 1 else same_shape[0])
        _fail(sources, path, f"{_describe(value)} is not {_type_name(tp)}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            _fail(sources, path, f"{_describe(value)} is not {_type_name(tp)}")
        item_type = typing.get_args(tp)[0] if typing.get_args(tp) else Any
        items = [_convert(item_type, v, f"{path}[{i}]", sources) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            _fail(sources, path, f"{_describe(value)} is not a mapping")
        value_type = typing.get_args(tp)[1] if typing.get_args(tp) else Any
        return {str(k): _convert(value_type, v, f"{path}.{k}", sources) for k, v in value.items()}
    if tp is ComponentSpec:
        raise TypeError("ComponentSpec fields need field(metadata={'component': KIND})")
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, value, path, sources)
    return _convert_scalar(tp, value, path, sources)


def _same_shape(tp, value) -> bool:
    """Whether ``value`` is a mapping where ``tp`` takes one, or a list where it takes a list."""
    origin = typing.get_origin(tp) or tp
    if isinstance(value, dict):
        return origin is dict or dataclasses.is_dataclass(tp)
    if isinstance(value, (list, tuple)):
        return origin in (list, tuple)
    return False


def _convert_scalar(tp, value, path: str, sources: Sources):
    """bool, int, float (YAML's '1e-3' text included) and str, each strictly: true is not 1."""
    if tp is bool:
        if not isinstance(value, bool):
            _fail(sources, path, f"{_describe(value)} is not true/false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(sources, path, f"{_describe(value)} is not an integer")
        return value
    if tp is float:
        if isinstance(value, str) and FLOAT_TEXT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(sources, path, f"{_describe(value)} is not a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            _fail(sources, path, f"{_describe(value)} is not a string")
        return value
    raise TypeError(f"unsupported annotation {tp!r} at {path}")


def _check_bounds(value, metadata, path: str, sources: Sources) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    checks = {
        "ge": (lambda v, b: v >= b, "at least"),
        "gt": (lambda v, b: v > b, "greater than"),
        "le": (lambda v, b: v <= b, "at most"),
        "lt": (lambda v, b: v < b, "less than"),
    }
    for key, (ok, words) in checks.items():
        if key in metadata and not ok(value, metadata[key]):
            _fail(sources, path, f"{value} is out of range; it must be {words} {metadata[key]}")


def _convert_dataclass(cls, value, path: str, sources: Sources, owner: str | None = None):
    if value is None:
        value = {}
    if not isinstance(value, dict):
        _fail(sources, path, f"{_describe(value)} is not a mapping of {cls.__name__} options")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in value if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        owner = owner or cls.__name__
        _fail(sources, _join(path, key), f"unknown key{hint}; {owner} takes: {', '.join(fields) or 'no options'}")
    kwargs = {}
    for name, f in fields.items():
        key_path = _join(path, name)
        if name not in value:
            if f.default is _MISSING and f.default_factory is _MISSING:
                _fail(sources, key_path, "is required but missing")
            continue
        raw = value[name]
        if "component" in f.metadata:
            kwargs[name] = convert_component(f.metadata["component"], raw, key_path, sources, optional=_is_optional(hints[name]))
        else:
            kwargs[name] = _convert(hints[name], raw, key_path, sources)
            _check_bounds(kwargs[name], f.metadata, key_path, sources)
    return cls(**kwargs)


def _is_optional(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def convert_component(kind: str, raw, path: str, sources: Sources, optional: bool = False) -> ComponentSpec | None:
    """A component node: ``name`` or ``{name: ..., option: ...}`` validated against the registered Config."""
    if raw is None and optional:
        return None
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict) or "name" not in raw:
        _fail(sources, path, f"a {kind} is given as a name or as a mapping with a 'name' key, got {_describe(raw)}")
    name = raw["name"]
    try:
        entry = registry.lookup(kind, name)
    except registry.RegistryError as error:
        _fail(sources, _join(path, "name"), str(error))
    options = {k: v for k, v in raw.items() if k != "name"}
    config_class = entry.config_class
    if config_class is None:
        if options:
            _fail(sources, _join(path, next(iter(options))), f"unknown key; {kind} {name!r} takes no options")
        return ComponentSpec(kind, name, None)
    try:
        converted = _convert_dataclass(config_class, options, path, sources, owner=f"{kind} {name!r}")
    except RecipeError as error:
        message = str(error)
        if "unknown key" in message:
            message += f" (to swap the whole component use --set {path}={name} so the old options are dropped)"
        raise RecipeError(message) from None
    return ComponentSpec(kind, name, converted)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)


def to_plain(obj):
    """Dataclasses (and ComponentSpecs) back to plain dicts/lists for YAML dumps and MLflow params."""
    if isinstance(obj, ComponentSpec):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj
