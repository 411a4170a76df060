"""The mechanisms behind the performance goals (issue 13), each checked without timing
anything: `make bench` measures the figures."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import json
import math
import subprocess
import sys
from typing import Any

import pytest
from helpers import REQUEST, SECRET, client_for, live
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import JSON_VALUES

from addvocals_async import (
    CallbackEvent,
    CallbackReceiver,
    PollPolicy,
    Stage,
    TaskDetails,
    TaskRegistry,
    TaskResult,
    TaskState,
    VocalTask,
    _convert,
    _tasks,
)
from addvocals_async._convert import NOT_JSON, parse_json
from addvocals_async._providers import get_provider


def test_importing_the_package_leaves_the_heavy_parts_unimported() -> None:
    """``import addvocals_async`` costs little more than ``import aiohttp``: aiohttp's
    server side (with its argument parser), the receiver's connection guard, the CLI, the
    simulator, cattrs (the converter is built on first use), sqlite3 (the pending
    store's, opened with its first write), and the modules of the receiver, the file
    server, the pending store, the uploader, the downloader and the local-file checks
    (imported when first named) wait until they are used."""
    probe = "import json, sys; import addvocals_async; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(json.loads(done.stdout))
    assert "aiohttp" in loaded  # the client side: the package's reason to exist
    for heavy in (
        "aiohttp.web",
        "addvocals_async.cli",
        "addvocals_async.testing",
        "addvocals_async._guard",
        "cattrs",
        "sqlite3",
        "argparse",
        "addvocals_async._receiver",
        "addvocals_async._serving",
        "addvocals_async._pending",
        "addvocals_async._upload",
        "addvocals_async._download",
        "addvocals_async._audio",
        "orjson",  # the speed extra's parser: imported by the first parse
        "attrs",  # the package uses attrs as `attr`, which aiohttp imports anyway
    ):
        assert heavy not in loaded, heavy


def test_a_receiver_that_never_serves_does_not_import_aiohttp_web() -> None:
    """A worker behind a receiver tier signs URLs and awaits tasks; it never serves."""
    probe = (
        "import sys; from addvocals_async import CallbackReceiver; "
        "rx = CallbackReceiver(public_url='https://hooks.example.org/av', secret=b'k' * 32); "
        "rx.new_callback_url(); "
        "print('aiohttp.web' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


def _garbage() -> list[str]:
    """The objects ``gc.collect()`` found unreachable (reference cycles), by type."""
    found = gc.collect()
    kinds = [f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage]
    gc.garbage.clear()
    assert found == len(kinds)
    return kinds


@pytest.mark.parametrize("with_receiver", [True, False])
async def test_a_submit_leaves_no_reference_cycles(with_receiver: bool) -> None:
    """A submit's objects are freed by reference counting the moment they are done with:
    none waits in a reference cycle for the garbage collector (whose full passes made the
    p99 tails, and took 14-17 % of submit CPU when the retry wrapper left 51 objects per
    submit in cycles)."""
    async with live(speed=0.001, rate_limit=None) as env:
        client = env.client if with_receiver else client_for(env.sim, throttle=False)
        async with client:
            for _ in range(3):  # sessions, connections, caches: made once
                await client.add_vocals(**REQUEST)
            gc.collect()
            gc.disable()
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                tasks = [await client.add_vocals(**REQUEST) for _ in range(30)]
                del tasks
                left = _garbage()
            finally:
                gc.set_debug(0)
                gc.enable()
    assert left == []


# ---------------------------------------------------------------- orjson (the speed extra)

needs_orjson = pytest.mark.skipif(
    importlib.util.find_spec("orjson") is None, reason="the speed extra is not installed"
)


@needs_orjson
def test_callbacks_are_parsed_by_orjson_when_it_is_installed() -> None:
    import orjson as fast

    assert parse_json(b'{"a": 1}') == {"a": 1}  # the first parse imports orjson
    assert _convert._fast_loads is fast.loads


def test_without_orjson_parse_json_uses_the_standard_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first parse looks for orjson; without it, that parse and the next are the
    standard library's."""
    monkeypatch.setitem(sys.modules, "orjson", None)  # import orjson: ImportError
    monkeypatch.setattr(_convert, "_fast_loads", _convert._first_fast_loads)
    monkeypatch.setattr(_convert, "_FastJSONError", _convert._FastJSONError)  # restored after
    assert parse_json(b'{"a": [1, 2]}') == {"a": [1, 2]}
    assert _convert._fast_loads is None
    assert parse_json(b"[NaN]") is not NOT_JSON
    assert parse_json(b"{") is NOT_JSON


@needs_orjson
@settings(max_examples=150, deadline=None)
@given(
    value=JSON_VALUES,
    ascii_only=st.booleans(),
    indent=st.sampled_from([None, 1]),
)
def test_parse_json_reads_what_the_standard_library_reads(
    value: Any, ascii_only: bool, indent: int | None
) -> None:
    """orjson parses first; the result is the standard library's for any JSON text."""
    text = json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    assert _same(parse_json(text.encode()), json.loads(text))
    assert _same(parse_json(text), json.loads(text))


@needs_orjson
@pytest.mark.parametrize(
    "raw",
    [
        b"[NaN, Infinity, -Infinity]",  # the standard library's extensions
        b'"\\ud800"',  # a lone surrogate escape
        b"\xef\xbb\xbf{}",  # a byte order mark
        b"[" * 1100 + b"]" * 1100,  # deeper than orjson's limit
        b"[" * 100_000 + b"]" * 100_000,  # deeper than any: not JSON to either
        b"{",
        b"\xff",
        b"",
    ],
)
def test_what_orjson_refuses_is_read_as_the_standard_library_reads_it(raw: bytes) -> None:
    try:
        expected: Any = json.loads(raw)
    except (ValueError, RecursionError):
        expected = NOT_JSON
    assert _same(parse_json(raw), expected)


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN included, and of the same types all the way down (1 is not 1.0)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


# ---------------------------------------------------------------- waiting


class _NoPolls:
    """A details source never asked: callbacks come within the grace period."""

    can_poll = True

    async def details(self, task_id: str, *, attempts: int | None = None) -> TaskDetails:
        raise AssertionError("polled")


async def _awaited(n: int) -> tuple[list[asyncio.Task[TaskResult]], TaskRegistry]:
    rx = CallbackReceiver(public_url="https://hooks.example.org/av", secret=SECRET)
    registry = TaskRegistry(rx.backend, get_provider("apibox"))
    waits = []
    for i in range(n):
        fresh = rx.new_callback_url()
        state = await registry.bind(registry.expect(fresh.ref), f"{i:032x}")
        task = VocalTask(state, _NoPolls(), PollPolicy())
        waits.append(asyncio.ensure_future(task.complete()))
    await asyncio.sleep(0)  # every one is waiting now
    return waits, registry


def _timers() -> int:
    return sum(isinstance(o, asyncio.TimerHandle) for o in gc.get_objects())


async def test_awaited_tasks_share_one_deadline_timer() -> None:
    """A wait is an await on a future of its own; its deadline is an entry in one heap
    per event loop behind one timer, not a timer per waiter (nor per task)."""
    before = _timers()
    waits, _ = await _awaited(300)
    assert _timers() - before <= 2
    for wait in waits:
        wait.cancel()
    await asyncio.gather(*waits, return_exceptions=True)


async def test_deadlines_wake_in_order_whatever_order_they_came_in() -> None:
    """A later deadline first, then an earlier one: the shared timer is set earlier;
    more waiters than one batch all wake; a change wakes a waiter before its deadline."""
    profile = get_provider("apibox")
    late, soon = TaskState("a" * 32, profile), TaskState("b" * 32, profile)
    crowd = [TaskState(f"{i:032x}", profile) for i in range(300)]
    sleeping = asyncio.ensure_future(late.wait_changed(60))
    await asyncio.wait_for(soon.wait_changed(0.01), 5)
    await asyncio.wait_for(asyncio.gather(*(s.wait_changed(0.01) for s in crowd)), 5)
    assert not sleeping.done()
    late.request_poll()  # a change
    await asyncio.wait_for(sleeping, 5)


async def test_deadlines_of_waiters_woken_early_do_not_pile_up() -> None:
    """A waiter woken by a change leaves its deadline in the shared buckets until its
    time; when such slots are most of them, they go all at once."""
    state = TaskState("c" * 32, get_provider("apibox"))
    for _ in range(3000):
        waiter = asyncio.ensure_future(state.wait_changed(60))
        await asyncio.sleep(0)
        state.request_poll()
        await waiter
    assert len(_tasks._deadlines[asyncio.get_running_loop()]) < 600


async def test_a_wait_for_a_stage_sleeps_through_the_stages_before_it() -> None:
    """``complete()`` is not woken by ``text`` and ``first``: one wake-up per awaited
    task, as a bare handler resolving one future makes; any change wakes the others."""
    state = TaskState("d" * 32, get_provider("apibox"))
    for_complete = state.add_waiter(60, Stage.COMPLETE.rank)
    for_text = state.add_waiter(60, Stage.TEXT.rank)
    for_any = state.add_waiter(60)

    def event(kind: str) -> CallbackEvent:
        return CallbackEvent(task_id="d" * 32, callback_type=kind, code=200, msg="ok")

    assert state.apply(event("text"))
    await asyncio.sleep(0)
    assert for_text.done()
    assert for_any.done()
    assert not for_complete.done()
    assert state.apply(event("first"))
    assert not for_complete.done()
    state.request_poll()  # not a stage: wakes every waiter
    assert for_complete.done()
    for waiter in (for_complete, for_text, for_any):
        state.drop_waiter(waiter)
    for_complete = state.add_waiter(60, Stage.COMPLETE.rank)
    assert state.apply(event("complete"))
    assert for_complete.done()
    state.drop_waiter(for_complete)


async def test_waiters_of_one_stage_share_one_result_object() -> None:
    """Waking many waiters of a task allocates nothing that outlives them: each gets the
    same ``TaskResult``. A new one per waiter (90,000 objects surviving the wake) brought
    on a full garbage collection that stalled the loop 135-175 ms in `make reliability`."""
    async with live() as env:
        task = await env.client.add_vocals(**REQUEST)
        results = await asyncio.gather(*(task.complete(timeout=5) for _ in range(50)))
        assert all(result is results[0] for result in results)
        assert (await task.complete()) is results[0]  # and later waits get it too
