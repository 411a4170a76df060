"""The CLI against hostile inputs: a combination that could only fail later at the API's
end, and a server message that tries to drive the terminal."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from aiohttp import web
from helpers import SECRET, write_mp3

from addvocals_async.cli import main
from addvocals_async.testing.redis_server import RedisServer


@pytest.mark.parametrize("provider", ["apibox", "kie"])
def test_submit_redis_never_serves_a_file_from_a_worker(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    provider: str,
    redis_server: RedisServer,
    redis_prefix: str,
) -> None:
    """``submit --redis --file`` served the file from this worker under the receiver
    tier's URL, where no process has it: the API's fetch would get 403 and the task
    fail. It is now a usage error naming the way that works."""
    beat = write_mp3(tmp_path / "beat.mp3")
    argv = [
        "submit", "--provider", provider, "--api-key", "sk-test",
        "--base-url", "http://127.0.0.1:9", "--prompt", "Warm", "--title", "T",
        "--style", "Soul", "--negative-tags", "Metal", "--file", str(beat), "--serve-file",
        "--wait", "--redis", redis_server.url, "--redis-prefix", redis_prefix,
        "--public-url", "https://tier.example.org/addvocals", "--receiver-secret", SECRET,
    ]  # fmt: skip
    capsys.readouterr()
    try:
        code = main(argv, out=io.StringIO())
    except SystemExit as exited:
        code = exited.code if isinstance(exited.code, int) else 1
    err = capsys.readouterr().err
    assert code == 2, err
    assert "--redis: the receiver tier cannot serve a file of this machine" in err
    assert "Traceback" not in err


async def test_an_error_message_from_a_server_cannot_drive_the_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The upload host's (or the API's) ``msg`` went to stderr as is: an escape sequence
    retitled the terminal or cleared it, a newline forged a line of output."""

    async def hostile(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"code": 400, "msg": "bad \x1b]0;pwned\x07\x1b[2J\nok: done"})

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", hostile)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        argv = [
            "upload", "--provider", "kie", "--api-key", "sk-test",
            "--base-url", f"http://127.0.0.1:{runner.addresses[0][1]}",
            "https://cdn.example.org/beat.mp3",
        ]  # fmt: skip
        capsys.readouterr()
        # main() runs its own event loop: in a thread, as the console script would.
        code = await asyncio.to_thread(main, argv, out=io.StringIO())
    finally:
        await runner.cleanup()
    err = capsys.readouterr().err
    assert code != 0
    assert "\x1b" not in err
    assert "\x07" not in err
    assert err.count("\n") == 1, err
    assert "pwned" in err  # shown, escaped
