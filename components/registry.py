"""The component registry: every building block is registered under a (kind, name).

A new component is one file under ``components/<kind>s/`` with one decorator::

    @register("mask", "dst", "MASH-VLM DST attention: spatial and temporal tokens never meet")
    class DSTMask(MaskScheme):
        @dataclass
        class Config:
            temporal: Literal["causal", "bidirectional"] = "causal"

Every module under the kind subpackages is imported on first lookup, so nothing else
in the code base changes when a component is added. A recipe may also name
``plugins: [my_package.my_module]`` to register components that live outside STZoo.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable

from components.errors import UserError

@dataclass(frozen=True)
class Kind:
    package: str  # the subpackage whose modules register this kind's components
    description: str


# Exactly the kinds that have components; a new kind is a subpackage and one line here.
KINDS: dict[str, Kind] = {
    "encoder": Kind("components.encoders", "pixels -> per-frame features (patch tokens, optional CLS)"),
    "projector": Kind("components.projectors", "vision feature dim -> LLM hidden size"),
    "compressor": Kind("components.compressors", "projected frame features -> visual tokens with kind/frame/row/col "
                                                  "metadata, and any extra loss terms"),
    "position": Kind("components.positions", "token metadata -> position ids and the rotary module of the LLM"),
    "mask": Kind("components.masks", "token metadata -> the attention mask of the LLM"),
    "llm": Kind("components.llms", "a Hugging Face causal LM with its tokenizer and tuning mode"),
}


class RegistryError(UserError, KeyError):
    """An unknown kind or name; the message lists what exists."""

    def __str__(self) -> str:  # KeyError quotes its message; we want a plain sentence.
        return str(self.args[0])


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    factory: Callable[..., Any]
    description: str

    @property
    def config_class(self) -> type | None:
        """The typed options of this component (a dataclass), or None if it takes none."""
        config = getattr(self.factory, "Config", None)
        return config if dataclasses.is_dataclass(config) else None


_ENTRIES: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
_discovered: set[str] = set()


def register(kind: str, name: str, description: str):
    """Class or function decorator that registers a component under ``kind`` and ``name``."""
    if kind not in KINDS:
        raise RegistryError(f"cannot register {name!r}: unknown component kind {kind!r}; kinds are {', '.join(KINDS)}")

    def decorate(factory):
        existing = _ENTRIES[kind].get(name)
        if existing is not None and existing.factory.__qualname__ != factory.__qualname__:
            raise RegistryError(
                f"{kind} {name!r} is registered twice: by {existing.factory.__module__} and by {factory.__module__}; "
                "rename one of them"
            )
        _ENTRIES[kind][name] = Entry(kind, name, factory, description.strip())
        factory.registry_kind = kind
        factory.registry_name = name
        return factory

    return decorate


def discover(kind: str | None = None) -> None:
    """Import every module of the kind subpackages so that their decorators run."""
    for each in [kind] if kind else list(KINDS):
        package_name = KINDS[each].package
        if package_name in _discovered:
            continue
        _discovered.add(package_name)
        package = importlib.import_module(package_name)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{package_name}.{module.name}")


def load_plugins(modules: list[str]) -> None:
    """Import modules named by a recipe's ``plugins:`` list (components living outside STZoo)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise RegistryError(f"plugin module {module!r} could not be imported ({error}); check the recipe's plugins list") from error


def names(kind: str) -> list[str]:
    _check_kind(kind)
    discover(kind)
    return sorted(_ENTRIES[kind])


def lookup(kind: str, name: str) -> Entry:
    """The entry for (kind, name); an unknown name raises an error listing the valid ones."""
    _check_kind(kind)
    discover(kind)
    entry = _ENTRIES[kind].get(name)
    if entry is None:
        valid = sorted(_ENTRIES[kind])
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RegistryError(f"unknown {kind} {name!r}{hint}; valid {kind} names: {', '.join(valid) or 'none registered'}")
    return entry


def catalogue() -> dict[str, list[dict[str, str]]]:
    """Every registered component, per kind, with its one-line description."""
    discover()
    return {
        kind: [{"name": e.name, "description": e.description} for _, e in sorted(_ENTRIES[kind].items())]
        for kind in KINDS
    }


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise RegistryError(f"unknown component kind {kind!r}; kinds are {', '.join(KINDS)}")
