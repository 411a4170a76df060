"""The public surface is exactly what __all__ says, no public signature names a private
type, and the benchmarks still run."""

from __future__ import annotations

import inspect
import subprocess
import sys
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp.web

import addvocals_async
import addvocals_async.aiohttp
import addvocals_async.starlette
import addvocals_async.testing
from addvocals_async._providers import Outcome

ROOT = Path(__file__).resolve().parent.parent

CONTRACT = {
    # DESIGN.md's public names, which other code relies on.
    "AddVocalsClient", "CallbackReceiver", "VocalTask", "Track", "AddVocalsRequest",
    "TaskDetails", "CallbackEvent", "Stage",
    "AddVocalsError", "RequestValidationError", "APIError", "InvalidParametersError",
    "AuthenticationError", "NotFoundError", "RateLimitError", "PromptTooLongError",
    "InsufficientCreditsError", "MaintenanceError", "ServerError", "APIConnectionError",
    "APITimeoutError", "TaskFailedError", "TaskTimeoutError", "WebhookVerificationError",
    "ReceiverClosedError",
}  # fmt: skip


def test_all_is_exactly_the_public_names() -> None:
    # pytest's assertion rewriting adds "@py_builtins" and the like: not identifiers.
    # dir(), not vars(): the receiver's, the pending store's, the uploader's and the
    # downloader's names are imported when first named (the package's __getattr__).
    public = {n for n in dir(addvocals_async) if n.isidentifier() and not n.startswith("_")}
    # submodules, importable, not re-exported
    modules = {"aiohttp", "cli", "redis", "starlette", "testing"}
    assert set(addvocals_async.__all__) | {"__version__"} >= CONTRACT
    assert public - modules == set(addvocals_async.__all__) - {"__version__"}
    for name in addvocals_async.__all__:
        assert hasattr(addvocals_async, name), name
    assert not hasattr(addvocals_async, "NoSuchName")  # the lazy lookup knows its names


def test_testing_exports_resolve() -> None:
    for name in addvocals_async.testing.__all__:
        assert hasattr(addvocals_async.testing, name), name


def test_the_error_tree_matches_the_contract() -> None:
    a = addvocals_async
    assert issubclass(a.RequestValidationError, ValueError)
    assert issubclass(a.WebhookVerificationError, ValueError)
    assert issubclass(a.TaskTimeoutError, TimeoutError)
    assert issubclass(a.APITimeoutError, a.APIConnectionError)
    for name in ("InvalidParametersError", "AuthenticationError", "NotFoundError",
                 "RateLimitError", "PromptTooLongError", "InsufficientCreditsError",
                 "MaintenanceError", "ServerError"):  # fmt: skip
        assert issubclass(getattr(a, name), a.APIError), name
    for name in ("RequestValidationError", "APIError", "APIConnectionError",
                 "TaskFailedError", "TaskTimeoutError", "WebhookVerificationError",
                 "ReceiverClosedError"):  # fmt: skip
        assert issubclass(getattr(a, name), a.AddVocalsError), name


def test_the_benchmarks_run() -> None:
    """A smoke run on tiny inputs: the benchmarks must not rot. It asserts that they finish
    and print every row of the table, never a timing (that is what `make bench` is for)."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for row in ("import addvocals_async", "receiver, 1.4 KB callbacks",
                "callbacks, every task awaited", "submits, 64 in flight",
                "submits with a receiver", "memory per awaited task",
                "memory per pending task", "dispatch time"):  # fmt: skip
        assert f"| {row}" in done.stdout, row


PUBLIC_MODULES = (
    addvocals_async,
    addvocals_async.aiohttp,
    addvocals_async.starlette,
    addvocals_async.testing,
)


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


TYPE_CHECKING_NAMES: dict[str, Any] = {
    "web": aiohttp.web,
    **{name: getattr(addvocals_async, name) for name in addvocals_async.__all__},
}


def test_public_signatures_name_only_public_types() -> None:
    private = set()
    checked = 0
    for where, obj in public_objects():
        for member, func in annotated(obj):
            # aiohttp.web, and the public types whose modules load when first used (the
            # receiver, the pending store, the uploader), are imported under TYPE_CHECKING
            # only where signatures name them: resolve their names as a type checker does.
            hints = typing.get_type_hints(func, localns=TYPE_CHECKING_NAMES)
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


def test_the_plugin_and_the_cli_do_not_import_the_simulator() -> None:
    """pytest loads the plugin in every session of every project with the SDK installed,
    and every CLI command parses its options first: neither runs a simulator, so neither
    pays for one."""
    code = (
        "import sys, addvocals_async.testing.pytest_plugin, addvocals_async.cli\n"
        "print('addvocals_async.testing._simulator' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.strip() == "False"
