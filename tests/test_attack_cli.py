"""The CLI refuses a combination that could only fail later, at the API's end."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
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
