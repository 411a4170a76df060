"""Suite-wide fixtures: the testing switch, no real provider host, a fake API for answers
the simulator cannot give, a simulator of each provider, and the real Redis the Redis
tests share."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
from helpers import NO_DETAILS_LIMIT, FakeApi

from addvocals_async import set_testing
from addvocals_async.testing import Simulator
from addvocals_async.testing.redis_server import RedisServer, RedisServerError


@pytest.fixture(scope="session", autouse=True)
def _testing_switch() -> Iterator[None]:
    """No test waits through a real poll interval or backoff: retries keep their attempts
    but never wait, poll timings shrink a hundredfold. Child processes (the CLI, the
    examples) get the same through ``ADDVOCALS_TESTING``; see ``helpers.child_env``."""
    with set_testing(True):
        yield


@pytest.fixture(autouse=True)
def _real_timing(request: pytest.FixtureRequest) -> Iterator[None]:
    """``@pytest.mark.real_timing`` turns the testing switch off for one test."""
    if request.node.get_closest_marker("real_timing") is None:
        yield
        return
    with set_testing(False):
        yield


@pytest.fixture(autouse=True)
def _no_real_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client made without ``base_url`` would talk to the provider's real host; here it
    talks to a closed port on loopback instead, so a forgotten ``base_url`` fails loudly."""
    monkeypatch.setenv("ADDVOCALS_BASE_URL", "http://127.0.0.1:9")


# ---------------------------------------------------------------- a fake API


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeApi]:
    """Start fake APIs with ``await fake_api(routes)``; they stop when the test ends."""
    api = FakeApi()
    yield api
    api.ended.set()
    for runner in api.runners:
        await runner.cleanup()


# ---------------------------------------------------------------- a simulator of each provider


@pytest.fixture(params=["apibox", "sunoapi", "kie"])
def provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def sim(provider: str) -> AsyncIterator[Simulator]:
    """The simulator of each provider in turn (speed 1000, seed 1, no rate limits).
    Modules that need another simulator define their own ``sim`` fixture."""
    async with Simulator(
        provider=provider, speed=1000, seed=1, rate_limit=None, details_rate_limit=NO_DETAILS_LIMIT
    ) as simulator:
        yield simulator


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real ``redis-server`` for the whole session: a free loopback port, persistence
    off, a temporary directory. Without one the Redis tests skip, saying why, except
    under CI (``CI`` set), where they fail: CI must run them."""
    server = RedisServer()
    try:
        server.start()
    except RedisServerError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and redis-server could not start: {exc}")
        pytest.skip(f"no Redis for these tests: {exc} (`make test` installs it)")
    yield server
    server.close()


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of this test's own, so tests sharing the session's Redis never meet."""
    return f"test-{secrets.token_hex(6)}:"
