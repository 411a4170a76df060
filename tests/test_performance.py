"""The mechanisms behind the performance goals (issue 13), each checked without timing
anything: `make bench` measures the figures."""

from __future__ import annotations

import gc
import importlib.util
import json
import math
import subprocess
import sys
from typing import Any

import pytest
from helpers import REQUEST, client_for, live
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import JSON_VALUES

from addvocals_async import _convert
from addvocals_async._convert import NOT_JSON, parse_json


def test_importing_the_package_leaves_the_heavy_parts_unimported() -> None:
    """``import addvocals_async`` costs little more than ``import aiohttp``: aiohttp's
    server side (with its argument parser), the receiver's connection guard, the CLI, the
    simulator, cattrs (the converter is built on first use) and sqlite3 (the pending
    store's, opened with its first write) wait until they are used."""
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

    assert _convert._fast_loads is fast.loads


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
