"""The public surface is exactly what __all__ says, and the benchmarks still run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import addvocals_async
import addvocals_async.testing

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
    public = {n for n in vars(addvocals_async) if n.isidentifier() and not n.startswith("_")}
    modules = {"aiohttp", "cli", "redis", "testing"}  # submodules, importable, not re-exported
    assert set(addvocals_async.__all__) | {"__version__"} >= CONTRACT
    assert public - modules == set(addvocals_async.__all__) - {"__version__"}
    for name in addvocals_async.__all__:
        assert hasattr(addvocals_async, name), name


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
    and report every ratio, never a timing (that is what `make bench` is for)."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for key in ("ratio", "memory_ratio", "dispatch_ratio"):
        assert f'"{key}"' in done.stdout
