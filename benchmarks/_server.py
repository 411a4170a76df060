"""The servers of the HTTP benchmarks, in-process (the quick smoke run) or as a process of
their own, pinned to a core (``python -m benchmarks._server KIND SCENARIO N ROUNDS PENDING
JOBS_PREFIX``).

KIND is ``bare`` (the baseline: a plain aiohttp application whose handler reads the body,
parses the JSON, finds the task's future by ``data.task_id`` and resolves it: what you
would write instead of this SDK), ``receiver`` (the SDK's embedded receiver, standard
library only), ``receiver_speed`` (the receiver with the ``speed`` extra: orjson, uvloop)
or ``receiver_redis`` (over a ``RedisBackend`` at ``$ADDVOCALS_BENCH_REDIS``).

SCENARIO is ``pending`` (one ``first`` callback per task; nobody awaits: the receiver's
own throughput) or ``awaited`` (``text``, ``first`` and ``complete`` per task, every task
awaited by a coroutine of its own: ``await task.complete()``, or an ``await`` on the
bare handler's future). Each of ROUNDS rounds has its own N tasks; PENDING more tasks are
registered and never called back (a large live heap, as in production).

As a process it writes each round's requests to ``JOBS_PREFIX.<round>`` (``path<TAB>body``
lines, for wrk), prints ``ready URL``, then for each ``go`` line on stdin prints the
round's figures as a JSON line once the round's last callback was handled (``pending``)
or its last waiter resumed (``awaited``).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import secrets
import sys
import time
from typing import Any

KINDS = ("bare", "receiver", "receiver_speed", "receiver_redis")
SCENARIOS = ("pending", "awaited")


def callback_body(task_id: str, callback_type: str = "first") -> str:
    """A callback as the API sends it (~1.4 KB for ``first`` with two tracks)."""
    track = {
        "id": "3433e3c3-7ccb-4e6a-8454-33cb20e33908", "title": "Harbour Lanterns",
        "model_name": "chirp-v4-5", "audio_url": "https://files.example.org/av/3433e3c3.mp3",
        "source_audio_url": "https://origin.example.com/3433e3c3.mp3",
        "stream_audio_url": "https://stream.example.org/3433e3c3",
        "source_stream_audio_url": "https://origin.example.com/s/3433e3c3",
        "image_url": "https://img.example.org/3433e3c3.jpeg",
        "source_image_url": "https://origin.example.com/i/3433e3c3.jpeg",
        "prompt": "[Verse] Lanterns on the water, slow and gold", "tags": "neo soul, breathy",
        "createTime": 1767268905123, "duration": 174.62,
    }  # fmt: skip
    partial = {**track, "audio_url": "", "duration": None}
    tracks = {"text": [], "first": [track, partial], "complete": [track, track]}[callback_type]
    return json.dumps(
        {
            "code": 200,
            "msg": f"{callback_type} callback",
            "data": {"callbackType": callback_type, "task_id": task_id, "data": tracks},
        }
    )


class BenchServer:
    """One server under load, with its tasks prepared round by round."""

    def __init__(self, kind: str, scenario: str, n: int, rounds: int, pending: int) -> None:
        assert kind in KINDS, kind
        assert scenario in SCENARIOS, scenario
        self.kind, self.scenario, self.n, self.rounds = kind, scenario, n, rounds
        self.pending = pending
        self.url = ""
        self.jobs: list[list[tuple[str, str]]] = []  # per round: (path, body)
        self.resumed = 0  # waiters that resumed (awaited), callbacks handled (bare, pending)
        self._receiver: Any = None
        self._runner: Any = None
        self._waits: list[asyncio.Task[None]] = []

    def handled(self) -> int:
        if self.scenario == "pending" and self._receiver is not None:
            return int(self._receiver.stats.accepted)
        return self.resumed

    async def start(self) -> None:
        if self.kind == "bare":
            await self._start_bare()
        else:
            await self._start_receiver()
        gc.collect()
        gc.freeze()  # what was set up is not the load's garbage

    async def _start_bare(self) -> None:
        from aiohttp import web

        loop = asyncio.get_running_loop()
        waiting: dict[str, asyncio.Future[Any]] = {}
        awaited = self.scenario == "awaited"

        async def dispatching(request: web.Request) -> web.Response:
            body = json.loads(await request.read())
            data = body["data"]
            future = waiting.get(data["task_id"])
            if future is not None and not future.done():
                if not awaited:
                    self.resumed += 1
                    future.set_result(body)
                elif data["callbackType"] == "complete":
                    future.set_result(body)
            return web.json_response({"status": "received"})

        async def wait(future: asyncio.Future[Any]) -> None:
            await future
            self.resumed += 1

        app = web.Application()
        app.router.add_post("/addvocals/cb/{token}", dispatching)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self._runner = runner
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        for r in range(self.rounds + 1):
            ids = [
                secrets.token_hex(16) for _ in range(self.n if r < self.rounds else self.pending)
            ]
            for task_id in ids:
                waiting[task_id] = future = loop.create_future()
                if awaited and r < self.rounds:
                    self._waits.append(asyncio.ensure_future(wait(future)))
            if r < self.rounds:
                self.jobs.append(self._round_jobs(ids, lambda i: f"/addvocals/cb/t{i}"))

    async def _start_receiver(self) -> None:
        from addvocals_async import CallbackReceiver, PollPolicy, TaskRegistry, VocalTask
        from addvocals_async._providers import get_provider

        backend = None
        if self.kind == "receiver_redis":
            from addvocals_async.redis import RedisBackend

            prefix = f"bench-{secrets.token_hex(4)}:"
            backend = RedisBackend(os.environ["ADDVOCALS_BENCH_REDIS"], prefix=prefix)
        receiver = CallbackReceiver(secret=secrets.token_bytes(32), backend=backend)
        await receiver.start()
        self._receiver = receiver
        self.url = receiver.url.removesuffix("/addvocals")
        registry = TaskRegistry(receiver.backend, get_provider("apibox"))
        # Callbacks come in time: no poll is due, however long a later round waits.
        policy = PollPolicy(grace=86_400.0, default_timeout=86_400.0)

        async def wait(task: VocalTask) -> None:
            await task.complete()
            self.resumed += 1

        for r in range(self.rounds + 1):
            count = self.n if r < self.rounds else self.pending
            ids, paths = [], []
            for _ in range(count):
                task_id = secrets.token_hex(16)
                fresh = receiver.new_callback_url()
                state = await registry.bind(registry.expect(fresh.ref), task_id)
                ids.append(task_id)
                paths.append(fresh.url.removeprefix(self.url))
                if self.scenario == "awaited" and r < self.rounds:
                    task = VocalTask(state, _NoPolls(), policy)
                    self._waits.append(asyncio.ensure_future(wait(task)))
            if r < self.rounds:
                self.jobs.append(self._round_jobs(ids, paths.__getitem__))

    def _round_jobs(self, ids: list[str], path: Any) -> list[tuple[str, str]]:
        if self.scenario == "pending":
            return [(path(i), callback_body(task_id)) for i, task_id in enumerate(ids)]
        return [
            (path(i), callback_body(task_id, stage))
            for stage in ("text", "first", "complete")
            for i, task_id in enumerate(ids)
        ]

    async def measure(self, round_no: int, load: Any = None) -> dict[str, float]:
        """Wait for round ``round_no``'s callbacks (sent by ``load``, a coroutine, or by an
        outside load generator); its wall time from the first to the last."""
        target = self.n * (round_no + 1)
        before = self.handled()
        cpu = time.process_time()
        sending = asyncio.ensure_future(load) if load is not None else None
        # Polled every millisecond, the same for every kind: a hook in the receiver's hot
        # path would change what is measured.
        while self.handled() == before:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        first = time.perf_counter()
        while self.handled() < target:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - first
        if sending is not None:
            await sending
        callbacks = len(self.jobs[round_no])
        return {
            "callbacks": callbacks,
            "seconds": elapsed,
            "per_s": callbacks / elapsed if elapsed else float("inf"),
            "cpu_s": time.process_time() - cpu,
        }

    async def aclose(self) -> None:
        for wait in self._waits:
            wait.cancel()
        if self._receiver is not None:
            await self._receiver.aclose()
        if self._runner is not None:
            await self._runner.cleanup()


class _NoPolls:
    """A details source that is never asked: callbacks arrive within the grace period."""

    can_poll = True

    async def details(self, task_id: str, *, attempts: int | None = None) -> Any:
        raise AssertionError("a benchmark task polled")


def write_jobs(jobs: list[tuple[str, str]], path: str) -> None:
    with open(path, "w") as handle:
        handle.writelines(f"{p}\t{body}\n" for p, body in jobs)


async def main(kind: str, scenario: str, n: int, rounds: int, pending: int, prefix: str) -> None:
    server = BenchServer(kind, scenario, n, rounds, pending)
    await server.start()
    for r, jobs in enumerate(server.jobs):
        write_jobs(jobs, f"{prefix}.{r}")
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ready", server.url, flush=True)
    for r in range(rounds):
        if not (await reader.readline()).strip():
            break
        print(json.dumps(await server.measure(r)), flush=True)
    await server.aclose()


if __name__ == "__main__":
    kind, scenario, n, rounds, pending, prefix = sys.argv[1:]
    run = main(kind, scenario, int(n), int(rounds), int(pending), prefix)
    if kind == "receiver_speed":
        import uvloop

        uvloop.run(run)
    else:
        sys.modules["orjson"] = None  # type: ignore[assignment]  # the standard library alone
        asyncio.run(run)
