"""Fuzz: hostile requests over real HTTP against a started receiver (apibox and kie
modes), and garbage API answers to every client call from a fake API on loopback."""

from __future__ import annotations

import asyncio
import gc
import json
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import yarl
from aiohttp import web

from addvocals_async import (
    AddVocalsClient,
    AddVocalsError,
    CallbackReceiver,
    PollPolicy,
    RetryPolicy,
    Track,
    sign_webhook,
)

from ._common import ErrorWatch, Row, callback_json, dumps, post_head, raw_request, rss_bytes

SECRET = "reliability-fuzz-secret-0123456789"
HMAC_KEY = "reliability-fuzz-hmac-key"
MEMORY_BOUND = 64 * 1024 * 1024  # RSS growth allowed after the warm-up tenth

_ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63,
    -(2**64),
    1e308,
    -0.0,
    "",
    "x" * 5000,
    "\ud800",
    "\udfff\ud800",
    "²",
    "1" * 5000,
    [],
    {},
    [None],
    {"": None},
    [[[]]],
    "\n\r\x00",
    "../../etc/passwd",
    3.14,
    "NaN",
    "Infinity",
]


def _wrong_types(rng: random.Random, task_id: str) -> bytes:
    """A genuine-shaped callback with one field, at any depth, of a wrong type."""
    body = callback_json(task_id, rng.choice(["text", "first", "complete", "error"]))
    paths: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in node:
                paths.append((node, key))
                walk(node[key])
        elif isinstance(node, list):
            for index in range(len(node)):
                paths.append((node, index))
                walk(node[index])

    walk(body)
    for _ in range(rng.randint(1, 3)):
        container, key = rng.choice(paths)
        container[key] = rng.choice(_ODD_VALUES)
    return dumps(body)


def _deep(rng: random.Random) -> bytes:
    depth = rng.choice([100, 1000, 10_000, 100_000])
    if rng.random() < 0.5:
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def _huge_number(rng: random.Random, task_id: str) -> bytes:
    number = rng.choice(["1e400", "-1e400", "9" * 5000, "1" + "0" * 100_000, "NaN", "Infinity"])
    field = rng.choice(["code", "duration", "createTime", "task_id"])
    if field == "code":
        return f'{{"code": {number}, "msg": "x", "data": {{"task_id": "{task_id}"}}}}'.encode()
    body = json.dumps(callback_json(task_id)).replace('"duration": 181.5', f'"{field}": {number}')
    return body.encode()


def _surrogates(rng: random.Random, task_id: str) -> bytes:
    lone = rng.choice(["\\ud800", "\\udfff", "\\ud83d", "\\u0000"])
    body = json.dumps(callback_json(task_id))
    where = rng.choice(['"task_id": "', '"callbackType": "', '"title": "', '"msg": "'])
    return body.replace(where, where + lone, 1).encode()


def _random_bytes(rng: random.Random) -> bytes:
    return rng.randbytes(rng.choice([0, 1, 7, 100, 4096, 70_000]))


def _absurd_head(rng: random.Random, path: str, length: int) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        extra = f"X-Junk: {'a' * rng.choice([9000, 100_000])}\r\n"
    elif kind == 1:
        extra = "".join(f"X-H{i}: v\r\n" for i in range(rng.choice([200, 2000])))
    elif kind == 2:
        return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n".encode()
    elif kind == 3:
        return (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
            f"Content-Length: {length + 7}\r\n\r\n".encode()
        )
    elif kind == 4:
        extra = "X-Webhook-Timestamp: ²³\r\nX-Webhook-Signature: \xff\xfe\r\n"
    else:
        query = "q=" * 5000
        head = f"POST {path}?{query} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n"
        return head.encode("latin-1")
    return post_head(path, length, extra)


def _chunked(body: bytes) -> bytes:
    out = bytearray()
    for start in range(0, len(body), 4096):
        piece = body[start : start + 4096]
        out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    return bytes(out + b"0\r\n\r\n")


async def fuzz_receiver(n: int, *, seed: int = 7, concurrency: int = 64) -> list[Row]:
    """``n`` hostile requests, half to an apibox-mode receiver, half to a kie-mode one."""
    rng = random.Random(seed)
    statuses: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    watch = ErrorWatch()
    started = time.monotonic()
    with watch.installed():
        async with (
            CallbackReceiver(secret=SECRET, max_body_size=256 * 1024) as apibox,
            CallbackReceiver(
                secret=SECRET + "-kie", webhook_hmac_key=HMAC_KEY, max_body_size=256 * 1024
            ) as kie,
        ):
            # Tokens: handed out by the receiver, minted under its secret by another
            # instance (genuine but never handed out), and invalid ones.
            def tokens(receiver: CallbackReceiver) -> list[str]:
                return [yarl.URL(receiver.new_callback_url().url).name for _ in range(64)]

            minted = {
                r: tokens(
                    CallbackReceiver(
                        secret=SECRET if r is apibox else SECRET + "-kie",
                        public_url="http://127.0.0.1/addvocals",
                    )
                )
                for r in (apibox, kie)
            }
            valid = {r: tokens(r) for r in (apibox, kie)}
            sent = 0
            rss_warm = 0

            def request(i: int) -> tuple[CallbackReceiver, bytes, bytes, int | None, str]:
                receiver = apibox if i % 2 == 0 else kie
                which = rng.random()
                if which < 0.5:
                    token = rng.choice(valid[receiver])
                elif which < 0.75:
                    token = rng.choice(minted[receiver])
                else:
                    token = rng.choice(
                        [
                            rng.randbytes(20).hex(),
                            rng.choice(valid[receiver])[:-1] + "A",
                            "." * 10,
                            "%ff%fe" * 5,
                            "a" * 3000,
                        ]
                    )
                path = f"{yarl.URL(receiver.url).path}/cb/{token}"
                task_id = rng.choice([rng.randbytes(16).hex(), "t" * 32, "\\ud800x"])
                kind = rng.choice(
                    ["bytes", "deep", "huge", "surrogate", "types", "chunked", "head", "cut"]
                )
                cut: int | None = None
                if kind == "bytes":
                    body = _random_bytes(rng)
                elif kind == "deep":
                    body = _deep(rng)
                elif kind == "huge":
                    body = _huge_number(rng, task_id)
                elif kind == "surrogate":
                    body = _surrogates(rng, task_id)
                else:
                    body = _wrong_types(rng, task_id)
                extra = ""
                if receiver is kie:
                    stamp = int(time.time()) + rng.choice([0, 0, -400, 10**6])
                    extra = (
                        f"X-Webhook-Timestamp: {stamp}\r\n"
                        f"X-Webhook-Signature: {sign_webhook(task_id, stamp, HMAC_KEY)}\r\n"
                    )
                if kind == "chunked":
                    head, body = post_head(path, None, extra), _chunked(body)
                elif kind == "head":
                    head = _absurd_head(rng, path, len(body))
                elif kind == "cut":
                    head = post_head(path, len(body) + 10, extra)
                    cut = rng.randrange(0, len(body) + 1)
                else:
                    head = post_head(path, len(body), extra)
                return receiver, head, body, cut, kind

            async def worker(count: int) -> None:
                nonlocal sent, rss_warm
                for _ in range(count):
                    receiver, head, body, cut, kind = request(sent)
                    sent += 1
                    if sent == n // 10:
                        gc.collect()
                        rss_warm = rss_bytes()
                    assert receiver._bound_url is not None
                    url = receiver._bound_url
                    try:
                        status = await raw_request(
                            "127.0.0.1", url.port or 80, head, body, timeout=15, cut_after=cut
                        )
                    except (OSError, asyncio.TimeoutError) as exc:
                        statuses[f"client {type(exc).__name__}"] += 1
                        continue
                    kinds[kind] += 1
                    if cut is not None:
                        statuses["cut"] += 1
                    elif status is None:
                        statuses["no answer"] += 1
                    else:
                        statuses[f"{status // 100}xx"] += 1

            share, rest = divmod(n, concurrency)
            await asyncio.gather(
                *(worker(share + (1 if k < rest else 0)) for k in range(concurrency))
            )
            await asyncio.sleep(0.5)  # let cut connections be noticed
            gc.collect()
            rss_end = rss_bytes()
            stats = (apibox.stats, kie.stats)
    elapsed = time.monotonic() - started
    server_errors = statuses["5xx"]
    growth = rss_end - rss_warm
    answered = ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
    return [
        Row(
            "Fuzz",
            f"hostile requests, apibox+kie, 8 kinds × 3 token kinds ({elapsed:.0f} s)",
            sent,
            f"{answered}; accepted {stats[0].accepted + stats[1].accepted}, "
            f"orphaned {stats[0].orphaned + stats[1].orphaned}",
            "0 × 5xx",
            server_errors == 0 and sent >= n,
        ),
        Row(
            "Fuzz",
            "loop exceptions + ERROR logs (aiohttp, addvocals_async) during the fuzz",
            sent,
            watch.describe(),
            "0",
            watch.total == 0,
        ),
        Row(
            "Fuzz",
            "receiver process memory, after warm-up (1/10) → end",
            sent,
            f"RSS {rss_warm / 2**20:.0f} → {rss_end / 2**20:.0f} MiB ({growth / 2**20:+.1f})",
            f"growth ≤ {MEMORY_BOUND // 2**20} MiB",
            growth <= MEMORY_BOUND,
        ),
    ]


# ------------------------------------------------------------------ garbage API answers

_GARBAGE_BODIES: list[Callable[[random.Random], bytes]] = [
    lambda r: r.randbytes(r.choice([0, 1, 50, 5000])),
    lambda r: b"",
    lambda r: b"null",
    lambda r: b"[]",
    lambda r: b'"just a string"',
    lambda r: b"<html><body>502 Bad Gateway</body></html>",
    lambda r: b'{"code": "\xc2\xb2", "msg": "x", "data": null}',
    lambda r: b'{"code": ' + b"9" * 5000 + b', "data": {}}',
    lambda r: b'{"code": 200, "msg": "ok", "data": Infinity}',
    lambda r: b'{"code": 200, "msg": "ok", "data": NaN}',
    lambda r: b'{"code": 200, "msg": "ok", "data": 1e400}',
    lambda r: b'{"code": 200, "msg": "ok", "data": -5}',
    lambda r: b'{"code": 200, "msg": "ok", "data": "12"}',
    lambda r: b'{"code": 200, "msg": "ok", "data": {"taskId": "\\ud800"}}',
    lambda r: b'{"code": 200, "msg": "ok", "data": {"taskId": 12}}',
    lambda r: b'{"code": 200, "msg": "ok", "data": {"taskId": ""}}',
    lambda r: b'{"code": 200, "msg": "ok", "data": {"taskId": ["a"]}}',
    lambda r: b'{"code": 200, "msg": "ok", "data": {"taskId": "abc", "status": 7}}',
    lambda r: b'{"code": 200, "data": {"taskId": "t", "status": "SUCCESS", "response": 5}}',
    lambda r: (
        b'{"code": 200, "data": {"taskId": "t", "status": "SUCCESS", '
        b'"response": {"sunoData": [1, "x", {"id": 5, "createTime": "\\ud800", "duration": "x"}]}}}'
    ),
    lambda r: (
        b'{"code": 200, "data": {"taskId": "t", "status": "SUCCESS", '
        b'"response": {"sunoData": [{"id": "a", "audioUrl": "javascript:x", '
        b'"createTime": 1e400}]}}}'
    ),
    lambda r: b'{"code": 200, "data": {"taskId": "t", "status": "FIRST_SUCCESS", "param": "{{{"}}',
    lambda r: b'{"code": 200, "data": {"taskId": "t", "status": "\\u0000", "errorCode": "x"}}',
    lambda r: b'{"code": 429, "msg": ' + b'"x' * 1 + b'"}',
    lambda r: b'{"code": 455}',
    lambda r: b'{"code": -1, "msg": null}',
    lambda r: b'{"code": 200.5, "msg": {}}',
    lambda r: b"[" * 50_000 + b"]" * 50_000,
    lambda r: b'{"code": 200, "data": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    lambda r: b'{"code": 200, "msg": "ok", "data": {"taskId": "abc"',  # truncated
    lambda r: json.dumps({"code": r.choice([200, 400, 500, 413, 0]), "data": r.random()}).encode(),
    lambda r: b" " * r.choice([10, 5_000_000]),
]

_STATUSES = [200, 200, 200, 201, 204, 301, 400, 401, 402, 404, 413, 429, 430, 455, 500, 502, 503]
_TYPES = ["application/json", "text/html", "text/plain", "audio/mpeg", "application/xml", None]


def _garbage_app(seed: int) -> web.Application:
    rng = random.Random(seed)

    async def answer(request: web.Request) -> web.StreamResponse:
        behaviour = rng.random()
        body = rng.choice(_GARBAGE_BODIES)(rng)
        status = rng.choice(_STATUSES)
        content_type = rng.choice(_TYPES)
        if behaviour < 0.05:  # a connection that breaks mid-body
            response = web.StreamResponse(status=200, headers={"Content-Length": "100000"})
            await response.prepare(request)
            await response.write(body[:50])
            if request.transport is not None:
                request.transport.close()
            return response
        if behaviour < 0.08:  # claims gzip, is not
            return web.Response(
                status=200,
                body=b"not gzip at all",
                headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
            )
        if behaviour < 0.09:  # a redirect to itself
            raise web.HTTPFound(location=str(request.url))
        if behaviour < 0.095:  # slower than the client's request timeout
            await asyncio.sleep(0.6)
        headers = {"Content-Type": content_type} if content_type else {}
        if rng.random() < 0.05:
            headers["Retry-After"] = rng.choice(["-1", "1e400", "soon", "99999999999"])
        return web.Response(status=status, body=body, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


async def garbage_answers(n: int, *, seed: int = 11, concurrency: int = 32) -> list[Row]:
    """``n`` client calls, spread over every kind, each answered with garbage."""
    rng = random.Random(seed)
    untyped: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    watch = ErrorWatch()
    runner = web.AppRunner(_garbage_app(seed), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}"
    served_before = 0
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory() as folder, watch.installed():
            async with AddVocalsClient(
                "garbage-key",
                base_url=base,
                callback_url="https://hooks.example.org/cb",
                throttle=False,  # answers are garbage, not rate limits
                retry=RetryPolicy.no_wait(attempts=3),
                poll=PollPolicy.fast(),
                request_timeout=0.5,
            ) as client:
                names = ["add_vocals", "get_details", "get_credits", "task poll", "download"]

                async def call(i: int) -> None:
                    name = names[i % len(names)]
                    calls[name] += 1
                    try:
                        if name == "add_vocals":
                            await client.add_vocals(
                                upload_url="https://cdn.example.org/i.mp3",
                                prompt="p",
                                title="t",
                                style="s",
                                negative_tags="n",
                            )
                        elif name == "get_details":
                            await client.get_details(f"task-{i}")
                        elif name == "get_credits":
                            await client.get_credits()
                        elif name == "task poll":
                            task = client.task(f"task-{i}")
                            if rng.random() < 0.1:
                                await task.complete(timeout=0.3)
                            else:
                                await task.refresh()
                        else:
                            track = Track(id=f"tr-{i}", audio_url=f"{base}/files/{i}.mp3")
                            await client.download(track, folder, overwrite=True)
                        outcomes["answered"] += 1
                    except AddVocalsError as exc:
                        outcomes[type(exc).__name__] += 1
                    except Exception as exc:  # the figure: nothing may land here
                        untyped[f"{name}: {type(exc).__name__}: {str(exc)[:80]}"] += 1

                queue = iter(range(n))

                async def worker() -> None:
                    for i in queue:
                        await call(i)

                await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await runner.cleanup()
    elapsed = time.monotonic() - started
    total = sum(calls.values())
    first = f"; e.g. {next(iter(untyped))}" if untyped else ""
    spread = ", ".join(f"{k} {v}" for k, v in calls.items())
    del served_before
    return [
        Row(
            "Fuzz",
            f"garbage API answers to every client call ({spread}; {elapsed:.0f} s)",
            total,
            f"untyped {sum(untyped.values())}{first}; typed "
            f"{sum(v for k, v in outcomes.items() if k != 'answered')}, "
            f"answered {outcomes['answered']}; loop exc/ERROR logs {watch.total}",
            "0 untyped",
            not untyped and total >= n,
        )
    ]
