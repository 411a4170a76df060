"""No public signature uses a private type: every class of this package named in the
annotations of a public function, method or property is importable from a public module."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterator
from typing import Any

import addvocals_async
import addvocals_async.aiohttp
import addvocals_async.testing
from addvocals_async._providers import Outcome

PUBLIC_MODULES = (addvocals_async, addvocals_async.aiohttp, addvocals_async.testing)


def public_objects() -> Iterator[tuple[str, Any]]:
    for module in PUBLIC_MODULES:
        for name in module.__all__:
            yield f"{module.__name__}.{name}", getattr(module, name)


def annotated(obj: Any) -> Iterator[tuple[str, Callable[..., Any]]]:
    """The functions whose annotations users meet: the object itself, or a class's
    constructor, public methods and properties."""
    if inspect.isclass(obj):
        if "__init__" in vars(obj):
            yield "__init__", obj.__init__
        for name, member in vars(obj).items():
            if name.startswith("_"):
                continue
            if isinstance(member, property) and member.fget is not None:
                yield name, member.fget
            elif isinstance(member, (classmethod, staticmethod)):
                yield name, member.__func__
            elif inspect.isfunction(member):
                yield name, member
    elif inspect.isfunction(obj):
        yield "", obj


def classes_in(hint: Any) -> Iterator[type]:
    if isinstance(hint, type):
        yield hint
    for arg in typing.get_args(hint):
        yield from classes_in(arg)
    origin = typing.get_origin(hint)
    if isinstance(origin, type):
        yield origin


def is_public(cls: type) -> bool:
    return any(getattr(module, cls.__name__, None) is cls for module in PUBLIC_MODULES)


def test_public_signatures_name_only_public_types() -> None:
    private = set()
    checked = 0
    for where, obj in public_objects():
        for member, func in annotated(obj):
            hints = typing.get_type_hints(func)
            checked += 1
            for hint in hints.values():
                for cls in classes_in(hint):
                    if cls.__module__.startswith("addvocals_async") and not is_public(cls):
                        private.add(f"{where}.{member}: {cls.__module__}.{cls.__qualname__}")
    assert checked > 50  # the walk really looked at the surface
    assert sorted(private) == []


def test_the_check_sees_a_private_type() -> None:
    def leaky(outcome: Outcome) -> None: ...

    found = {cls for hint in typing.get_type_hints(leaky).values() for cls in classes_in(hint)}
    assert Outcome in found
    assert not is_public(Outcome)
