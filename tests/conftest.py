"""Suite-wide guard: nothing here may reach a real provider's host. And the real Redis the
Redis tests share."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from addvocals_async.testing.redis_server import RedisServer, RedisServerError


@pytest.fixture(autouse=True)
def _no_real_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client made without ``base_url`` would talk to the provider's real host; here it
    talks to a closed port on loopback instead, so a forgotten ``base_url`` fails loudly."""
    monkeypatch.setenv("ADDVOCALS_BASE_URL", "http://127.0.0.1:9")


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
