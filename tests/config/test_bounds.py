"""Every number a recipe sets is bounded by what it means: the test walks the recipe schema and every
registered component's options, and tries a value just outside each field's range."""

from __future__ import annotations

import dataclasses
import types
import typing

import pytest

from components import registry
from components.config import RecipeError, Sources, convert_component
from tests.helpers import tiny_recipe
from zoo.config.recipe import Recipe, apply_overrides, recipe_from_dict

BOUNDS = ("ge", "gt", "le", "lt")


def is_numeric(tp) -> bool:
    options = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    return any(option in (int, float) for option in options) and bool not in options


def numeric_fields(cls, prefix: str = ""):
    """(dotted key, field, its type) for every int or float option of ``cls``, nested dataclasses included."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        tp = hints[field.name]
        if "component" in field.metadata:
            continue
        nested = [a for a in (typing.get_args(tp) or (tp,)) if dataclasses.is_dataclass(a)]
        if nested:
            yield from numeric_fields(nested[0], f"{prefix}{field.name}.")
        elif is_numeric(tp):
            yield f"{prefix}{field.name}", field, tp


def outside(field, tp):
    """A value just outside the field's range, of the field's own type."""
    integer = int in (typing.get_args(tp) or (tp,))
    step = 1 if integer else 0.5
    bound, value = next((k, v) for k, v in field.metadata.items() if k in BOUNDS)
    return {"ge": value - step, "gt": value, "le": value + step, "lt": value}[bound]


def component_configs():
    for kind in registry.KINDS:
        for name in registry.names(kind):
            config = registry.lookup(kind, name).config_class
            if config is not None and not name.startswith("test_"):
                yield kind, name, config


def nested(key: str, value) -> dict:
    head, _, rest = key.partition(".")
    return {head: nested(rest, value) if rest else value}


RECIPE_FIELDS = list(numeric_fields(Recipe))
COMPONENT_FIELDS = [(kind, name, key, field, tp) for kind, name, config in component_configs()
                    for key, field, tp in numeric_fields(config)]


def test_every_numeric_field_declares_its_range():
    unbounded = [key for key, field, _ in RECIPE_FIELDS if not set(BOUNDS) & set(field.metadata)]
    unbounded += [f"{kind} {name!r}: {key}" for kind, name, key, field, _ in COMPONENT_FIELDS
                  if not set(BOUNDS) & set(field.metadata) and "checked_at_build" not in field.metadata]
    assert not unbounded, unbounded
    assert len(RECIPE_FIELDS) > 30 and len(COMPONENT_FIELDS) > 20  # the walk reaches nested sections


@pytest.mark.parametrize("key", [key for key, _, _ in RECIPE_FIELDS])
def test_a_recipe_value_out_of_range_is_refused_naming_the_key(key):
    field, tp = next((f, t) for k, f, t in RECIPE_FIELDS if k == key)
    data = apply_overrides(tiny_recipe(), {key: outside(field, tp)}, Sources())
    with pytest.raises(RecipeError, match=rf"{key.replace('.', '[.]')}: .* is out of range; it must be"):
        recipe_from_dict(data)


@pytest.mark.parametrize("kind,name,key", [(k, n, key) for k, n, key, f, _ in COMPONENT_FIELDS if set(BOUNDS) & set(f.metadata)])
def test_a_component_option_out_of_range_is_refused_naming_the_key(kind, name, key):
    field, tp = next((f, t) for k, n, d, f, t in COMPONENT_FIELDS if (k, n, d) == (kind, name, key))
    with pytest.raises(RecipeError, match=rf"model[.]{kind}[.]{key.replace('.', '[.]')}: .* is out of range"):
        convert_component(kind, {"name": name, **nested(key, outside(field, tp))}, f"model.{kind}", Sources())


@pytest.mark.parametrize("encoder,layer", [("clip", 0), ("siglip", 9), ("timm", -9)])
def test_a_layer_outside_the_tower_is_refused_when_built(encoder, layer):
    from zoo.model.video_llm import build_model

    data = tiny_recipe(encoder=encoder)
    data["model"]["encoder"]["select_layer"] = layer
    with pytest.raises(RecipeError, match=f"select_layer {layer} is outside"):
        build_model(recipe_from_dict(data))


def test_the_reported_cases_are_refused():
    """grad_clip -1 used to reverse training (loss 5.53 -> 6.86 in 15 steps); max_steps -5 ended in an IndexError."""
    for override, shown, words in (("train.grad_clip=-1", "-1.0", "greater than 0"), ("train.max_steps=-5", "-5", "at least 1")):
        key = override.partition("=")[0]
        sources = Sources()
        data = apply_overrides(tiny_recipe(), [override], sources)
        with pytest.raises(RecipeError, match=f"^--set {key}: {key}: {shown} is out of range; it must be {words}$"):
            recipe_from_dict(data, sources)
