"""Load generators: wrk (Debian package ``wrk``), pinned to a core of its own, for the real
figures; an in-process aiohttp sender for the quick smoke run (and when wrk is missing).

wrk sends one round's requests (a ``path<TAB>body`` line each, as ``_server`` writes them)
once, in order, over ``CONNECTIONS`` keep-alive connections, and reports its latency
percentiles; the server reports when the round's last callback was handled.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Sequence
from typing import Any

CONNECTIONS = 64

WRK_SCRIPT = r"""
local requests, count, sent, seen = {}, 0, 0, 0
local headers = {["Content-Type"] = "application/json"}
function init(args)
  for line in io.lines(args[1]) do
    local tab = line:find("\t", 1, true)
    count = count + 1
    requests[count] = wrk.format("POST", line:sub(1, tab - 1), headers, line:sub(tab + 1))
  end
end
function request()
  sent = sent % count + 1  -- past the end (a few in flight): repeats, answered as duplicates
  return requests[sent]
end
function response(status, headers, body)
  seen = seen + 1
  if seen >= count then wrk.thread:stop() end
end
function done(summary, latency, requests)
  io.write(string.format(
    '\n{"requests": %d, "p50_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, "errors": %d}\n',
    summary.requests, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, summary.errors.status + summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout))
end
"""


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def cores() -> list[int]:
    """The cores this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return list(range(os.cpu_count() or 1))


def pinned(command: Sequence[str], role: str) -> list[str]:
    """``command`` pinned with taskset when there are two cores or more: the load
    generator (``role="load"``) on the first, servers and clients on the second."""
    available = cores()
    if len(available) < 2 or shutil.which("taskset") is None:
        return list(command)
    core = available[0] if role == "load" else available[1]
    return ["taskset", "-c", str(core), *command]


class Wrk:
    """One wrk run over a jobs file, started now and stopped when the server is done."""

    def __init__(self) -> None:
        handle, self._script = tempfile.mkstemp(suffix=".lua")
        with os.fdopen(handle, "w") as script:
            script.write(WRK_SCRIPT)
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, base_url: str, jobs_file: str) -> None:
        command = [
            "wrk", "-t1", f"-c{CONNECTIONS}", "-d600s", "--timeout", "30s",
            "-s", self._script, base_url, "--", jobs_file,
        ]  # fmt: skip
        self.process = await asyncio.create_subprocess_exec(
            *pinned(command, "load"), stdout=asyncio.subprocess.PIPE
        )

    async def stop(self) -> dict[str, Any]:
        """Stop wrk (SIGINT: it prints its summary) and return its figures."""
        process = self.process
        assert process is not None
        assert process.stdout is not None
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        out = await asyncio.wait_for(process.stdout.read(), 30)
        await process.wait()
        lines = [line for line in out.decode().splitlines() if line.startswith('{"requests"')]
        assert lines, f"wrk printed no summary: {out.decode()[-500:]}"
        figures: dict[str, Any] = json.loads(lines[-1])
        assert figures["errors"] == 0, f"wrk saw errors: {figures}"
        return figures

    def close(self) -> None:
        os.unlink(self._script)


async def send_in_process(base_url: str, jobs: list[tuple[str, str]], connections: int) -> None:
    """The jobs in order over ``connections`` connections, from this process."""
    import aiohttp

    queue = iter(jobs)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:

        async def worker() -> None:
            for path, body in queue:
                async with session.post(base_url + path, data=body, headers=headers) as answer:
                    await answer.read()
                    assert answer.status == 200, answer.status

        await asyncio.gather(*(worker() for _ in range(connections)))
