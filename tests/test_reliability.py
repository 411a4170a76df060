"""The reliability harness (``make reliability``) with small counts: each figure's
outcome, asserted as the full run asserts it."""

from __future__ import annotations

import pytest

from reliability import QUICK, Row, exhaustion, forgery, fuzz, restart, soak

pytestmark = pytest.mark.slow


def unmet(rows: list[Row]) -> list[Row]:
    return [row for row in rows if not row.met]


async def test_soak() -> None:
    assert unmet(await soak.run(QUICK.soak)) == []


async def test_fuzz_answers_no_server_error_and_holds_memory() -> None:
    rows = await fuzz.fuzz_receiver(QUICK.fuzz)
    assert unmet([r for r in rows if "ERROR logs" not in r.tried]) == []


async def test_fuzz_logs_no_error() -> None:
    """aiohttp logs each malformed request at ERROR with a traceback; the receiver routes
    its server log through the rejection summary instead."""
    rows = await fuzz.fuzz_receiver(QUICK.fuzz // 3)
    assert unmet([r for r in rows if "ERROR logs" in r.tried]) == []


async def test_garbage_answers_are_typed() -> None:
    assert unmet(await fuzz.garbage_answers(QUICK.garbage)) == []


async def test_forgery_and_replay() -> None:
    assert unmet(await forgery.run(QUICK.forgery)) == []


async def test_connection_exhaustion() -> None:
    rows = await exhaustion.connections(
        QUICK.attack_seconds, half_open=QUICK.half_open, slow=QUICK.slow
    )
    assert unmet(rows) == []


async def test_many_waiters() -> None:
    assert unmet(await exhaustion.waiters(QUICK.waiters)) == []


async def test_orphan_memory() -> None:
    assert unmet(await exhaustion.orphans(QUICK.orphan_tasks)) == []


async def test_restart() -> None:
    assert unmet(await restart.run(QUICK.restart)) == []
