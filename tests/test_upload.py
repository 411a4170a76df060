"""Local files become tasks: provider uploads (sunoapi, kie), the receiver serving them
(every provider), the checks before anything is sent, and the simulator's fetch of
``uploadUrl``, all over real HTTP against the simulator."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import subprocess
import sys
import textwrap
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers import REQUEST, live, mp3_bytes, write_mp3

from addvocals_async import (
    APIError,
    AuthenticationError,
    LocalFileError,
    RequestValidationError,
    Stage,
    TaskFailedError,
    UploadUnavailableError,
)
from addvocals_async._audio import DEFAULT_MAX_AUDIO_BYTES, audio_type, check_audio_file
from addvocals_async.cli import main
from addvocals_async.cli._output import Progress, TransferBar, format_transfer

ARGS = {k: v for k, v in REQUEST.items() if k != "upload_url"}
"""The request without ``upload_url``: ``audio=`` stands in for it."""
ROOT = Path(__file__).resolve().parent.parent


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def uploads_sent(env: Any) -> int:
    return sum(1 for r in env.sim.requests if r.path.startswith("/api/file-"))


# ---------------------------------------------------------------- a local file, each way


@pytest.mark.parametrize(
    ("provider", "via", "route"),
    [
        ("apibox", "auto", "serve"),
        ("sunoapi", "auto", "upload"),
        ("sunoapi", "serve", "serve"),
        ("kie", "auto", "upload"),
        ("kie", "serve", "serve"),
    ],
)
async def test_a_local_mp3_becomes_a_finished_task(
    provider: str, via: str, route: str, tmp_path: Path
) -> None:
    beat = write_mp3(tmp_path / "beat.mp3", 60_000)
    async with live(provider) as env:
        task = await env.client.add_vocals(audio=beat, audio_via=via, **ARGS)
        result = await task.complete(timeout=10)
        assert result.stage is Stage.COMPLETE
        assert len(result.tracks) == 2
        sim_task = env.sim.tasks[task.task_id]
        # The API fetched exactly the file: the simulator hashed what it downloaded.
        assert sim_task.input_sha256 == sha256(beat)
        assert sim_task.input_size == 60_000
        upload_url = sim_task.request["uploadUrl"]
        if route == "upload":
            assert "/uploads/" in upload_url
            (record,) = env.sim.uploads.values()
            assert record.sha256 == sha256(beat)
            assert record.route == "stream"
            assert record.file_name == "beat.mp3"
        else:
            assert upload_url.startswith(env.receiver.url + "/files/")
            assert env.sim.uploads == {}
            assert env.receiver.stats.files_served == 1
            assert env.receiver.serving == 0  # the task moved on: no longer served


async def test_upload_answers_the_documented_fields(tmp_path: Path) -> None:
    beat = write_mp3(tmp_path / "beat.mp3", 30_000)
    async with live("sunoapi") as env:
        before = datetime.now(timezone.utc)
        uploaded = await env.client.upload(beat, "my beat.mp3")
        assert uploaded.file_name == "my beat.mp3"
        assert uploaded.size == 30_000
        assert uploaded.mime_type == "audio/mpeg"
        assert uploaded.url == uploaded.file_url
        assert uploaded.download_url
        assert uploaded.expires_at is not None
        assert uploaded.expires_at > before
        # The upload host serves what was uploaded, byte for byte.
        async with env.http.get(uploaded.file_url) as answer:
            assert answer.status == 200
            assert answer.headers["Content-Type"] == "audio/mpeg"
            assert await answer.read() == beat.read_bytes()
        (request,) = [r for r in env.sim.requests if r.path == "/api/file-stream-upload"]
        assert request.headers["Content-Type"].startswith("multipart/form-data")


async def test_retention_differs_by_provider(tmp_path: Path) -> None:
    """3 days on sunoapi, 24 hours on kie, on the simulator's scaled clock."""
    beat = write_mp3(tmp_path / "beat.mp3", 5_000)
    async with live("kie", speed=1000) as kie, live("sunoapi", speed=1000) as suno:
        now = datetime.now(timezone.utc)
        on_kie, on_suno = await kie.client.upload(beat), await suno.client.upload(beat)
        assert on_kie.expires_at is not None
        assert on_suno.expires_at is not None
        assert abs((on_kie.expires_at - now).total_seconds() - 86.4) < 2
        assert abs((on_suno.expires_at - now).total_seconds() - 259.2) < 2
    async with live("kie", speed=1e6) as kie, live("sunoapi", speed=1e6) as suno:
        on_kie, on_suno = await kie.client.upload(beat), await suno.client.upload(beat)
        await asyncio.sleep(0.12)  # kie's 24 h (0.09 s) are over, sunoapi's 3 days not
        async with kie.http.get(on_kie.file_url) as answer:
            assert answer.status == 404
        async with suno.http.get(on_suno.file_url) as answer:
            assert answer.status == 200


async def test_small_bytes_go_as_base64_and_larger_ones_streamed() -> None:
    small, large = mp3_bytes(2_000), mp3_bytes(1024 * 1024 + 1)
    async with live("kie") as env:
        first = await env.client.upload(small, "small.mp3")
        second = await env.client.upload(large)
        records = {r.file_name: r for r in env.sim.uploads.values()}
        assert records["small.mp3"].route == "base64"
        assert records["small.mp3"].sha256 == hashlib.sha256(small).hexdigest()
        assert records[second.file_name].route == "stream"
        assert second.file_name.endswith(".mp3")
        assert first.size == 2_000
        base64_request = next(r for r in env.sim.requests if r.path == "/api/file-base64-upload")
        assert base64_request.headers["Content-Type"].startswith("application/json")


async def test_a_binary_file_object_is_streamed_from_where_it_stands(tmp_path: Path) -> None:
    beat = write_mp3(tmp_path / "beat.wav.mp3", 20_000)
    sent: list[tuple[int, int | None]] = []
    async with live("sunoapi") as env:
        with open(beat, "rb") as file:  # noqa: ASYNC230 - a file object is what is tested
            uploaded = await env.client.upload(
                file, progress=lambda done, total: sent.append((done, total))
            )
        assert uploaded.file_name == "beat.wav.mp3"
        (record,) = env.sim.uploads.values()
        assert record.sha256 == sha256(beat)
        assert sent[-1] == (20_000, 20_000)


async def test_upload_from_url_makes_the_host_fetch_it(tmp_path: Path) -> None:
    beat = write_mp3(tmp_path / "beat.mp3", 12_345)
    async with live("kie") as env:
        served = env.receiver.serve_file(beat)
        uploaded = await env.client.upload_from_url(served, file_name="fetched.mp3")
        (record,) = env.sim.uploads.values()
        assert record.route == "url"
        assert record.sha256 == sha256(beat)
        assert uploaded.file_name == "fetched.mp3"
        assert uploaded.size == 12_345


async def test_upload_progress_reports_every_byte(tmp_path: Path) -> None:
    beat = write_mp3(tmp_path / "beat.mp3", 700_000)
    seen: list[tuple[int, int | None]] = []
    async with live("sunoapi") as env:
        await env.client.upload(beat, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (700_000, 700_000)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert len(seen) > 1


# ---------------------------------------------------------------- errors


async def test_apibox_has_no_upload_api_and_says_what_to_do(tmp_path: Path) -> None:
    beat = write_mp3(tmp_path / "beat.mp3")
    async with live("apibox") as env:
        with pytest.raises(UploadUnavailableError) as caught:
            await env.client.upload(beat)
        assert "serve_file" in str(caught.value)
        assert "audio=Path" in str(caught.value)
        with pytest.raises(UploadUnavailableError):
            await env.client.add_vocals(audio=beat, audio_via="upload", **ARGS)
        with pytest.raises(UploadUnavailableError):
            await env.client.upload_from_url("https://cdn.example.org/a.mp3")
        assert env.sim.requests == []


def _not_audio(path: Path) -> None:
    path.write_bytes(b"<html>not audio</html>")


def _missing(path: Path) -> None:
    pass


def _folder(path: Path) -> None:
    path.mkdir()


def _empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_not_audio, "does not look like audio"),
        (_missing, "no such file"),
        (_folder, "is a folder"),
        (_empty, "is empty"),
    ],
    ids=["not-audio", "missing", "folder", "empty"],
)
async def test_a_bad_local_file_is_refused_before_anything_is_sent(
    tmp_path: Path, make: Any, reason: str
) -> None:
    path = tmp_path / "beat.mp3"
    make(path)
    async with live("sunoapi") as env:
        for attempt in (
            env.client.upload(path),
            env.client.add_vocals(audio=path, **ARGS),
            env.client.add_vocals(audio=path, audio_via="serve", **ARGS),
        ):
            with pytest.raises(LocalFileError) as caught:
                await attempt
            assert reason in str(caught.value)
            assert str(path) in str(caught.value)
        with pytest.raises(LocalFileError):
            env.receiver.serve_file(path)
        assert env.sim.requests == []


def test_the_default_size_limit_reads_as_documented(tmp_path: Path) -> None:
    """The README says 100 MiB; the refusal said "over the 104.9 MB limit"."""
    big = write_mp3(tmp_path / "big.mp3")
    with big.open("r+b") as file:
        file.truncate(DEFAULT_MAX_AUDIO_BYTES + (1 << 20))  # sparse: nothing is written
    with pytest.raises(LocalFileError, match=r"is 101 MiB, over the 100 MiB limit"):
        check_audio_file(big)


async def test_the_size_limit_is_checked_before_sending(tmp_path: Path) -> None:
    beat = write_mp3(tmp_path / "beat.mp3", 50_000)
    async with live("kie") as env:
        with pytest.raises(LocalFileError, match="over the 10000 bytes limit"):
            await env.client.upload(beat, max_bytes=10_000)
        with pytest.raises(LocalFileError, match="over"):
            await env.client.upload(beat.read_bytes(), max_bytes=10_000)
        assert env.sim.requests == []


async def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    beat = write_mp3(tmp_path / "beat.mp3")
    async with live("sunoapi") as env:
        client = env.client
        with pytest.raises(RequestValidationError, match="not both"):
            await client.add_vocals(audio=beat, **REQUEST)
        with pytest.raises(RequestValidationError, match="upload_url="):
            await client.add_vocals(audio="https://cdn.example.org/a.mp3", **ARGS)
        with pytest.raises(RequestValidationError, match="audio_via"):
            await client.add_vocals(audio=beat, audio_via="carrier pigeon", **ARGS)
        with pytest.raises(RequestValidationError, match="file_name"):
            await client.upload(beat, "../etc/passwd")
        with pytest.raises(RequestValidationError, match="binary"):
            await client.upload(io.StringIO("text"))  # type: ignore[arg-type]
        with pytest.raises(RequestValidationError, match="title"):  # before uploading
            await client.add_vocals(audio=beat, **{**ARGS, "title": ""})
        assert env.sim.requests == []


async def test_serving_needs_a_receiver(tmp_path: Path) -> None:
    beat = write_mp3(tmp_path / "beat.mp3")
    async with live("apibox") as env:
        from helpers import client_for

        async with client_for(env.sim) as polling_client:
            with pytest.raises(RequestValidationError, match="needs a receiver"):
                await polling_client.add_vocals(audio=beat, **ARGS)


async def test_uploads_are_retried_on_transient_errors_only(tmp_path: Path) -> None:
    beat = write_mp3(tmp_path / "beat.mp3", 8_000)
    async with live("sunoapi") as env:
        env.sim.fail_uploads(500)
        env.sim.fail_uploads(405)
        uploaded = await env.client.upload(beat)  # free: retried until it lands
        assert uploads_sent(env) == 3
        (record,) = env.sim.uploads.values()
        assert record.sha256 == sha256(beat)  # the file went whole on the third try
        assert uploaded.size == 8_000
        env.sim.fail_uploads(401)
        with pytest.raises(AuthenticationError):
            await env.client.upload(beat)
        assert uploads_sent(env) == 4
        env.sim.fail_uploads(400)
        with pytest.raises(APIError) as caught:
            await env.client.upload(beat)
        assert caught.value.code == 400


# ---------------------------------------------------------------- the simulator fetches uploadUrl


async def test_an_unreachable_upload_url_fails_the_task_the_providers_way() -> None:
    dead = "http://127.0.0.1:9/instrumental.mp3"  # loopback, nothing listens
    for provider in ("apibox", "sunoapi"):
        async with live(provider) as env:
            task = await env.client.add_vocals(**{**REQUEST, "upload_url": dead})
            with pytest.raises(TaskFailedError) as caught:
                await task.complete(timeout=10)
            assert caught.value.code == 451
            assert "could not be downloaded" in str(caught.value)
            assert env.sim.tasks[task.task_id].input_error
    async with live("kie") as env:
        with pytest.raises(APIError) as raised:
            await env.client.add_vocals(**{**REQUEST, "upload_url": dead})
        assert raised.value.code == 451
        assert "uploadUrl" in raised.value.msg
        assert env.sim.tasks == {}


async def test_an_upload_url_that_is_not_audio_fails_the_task(tmp_path: Path) -> None:
    async with live("sunoapi") as env:
        uploaded = await env.client.upload_from_url(
            env.receiver.serve_file(write_mp3(tmp_path / "a.mp3"))
        )
        page = uploaded.file_url.replace("/uploads/", "/uploads/nothing-")
        task = await env.client.add_vocals(**{**REQUEST, "upload_url": page})
        with pytest.raises(TaskFailedError, match="451"):
            await task.complete(timeout=10)
        assert "HTTP 404" in (env.sim.tasks[task.task_id].input_error or "")


async def test_only_loopback_upload_urls_are_fetched() -> None:
    async with live("kie") as env:
        task = await env.client.add_vocals(**REQUEST)  # https://cdn.example.org/...
        await task.complete(timeout=10)
        sim_task = env.sim.tasks[task.task_id]
        assert sim_task.input_size is None
        assert sim_task.input_error is None
    async with live("kie", fetch_upload_url=False) as env:
        task = await env.client.add_vocals(**{**REQUEST, "upload_url": "http://127.0.0.1:9/a.mp3"})
        await task.complete(timeout=10)  # not fetched: the dead URL goes unnoticed


def test_sniffing_knows_the_five_formats() -> None:
    assert audio_type(b"ID3\x04") == "audio/mpeg"
    assert audio_type(b"\xff\xfb\x90\x64") == "audio/mpeg"
    assert audio_type(b"\xff\xf1\x50\x80") == "audio/aac"
    assert audio_type(b"RIFF\x24\x00\x00\x00WAVEfmt ") == "audio/wav"
    assert audio_type(b"fLaC\x00\x00\x00\x22") == "audio/flac"
    assert audio_type(b"OggS\x00\x02") == "audio/ogg"
    assert audio_type(b"\x00\x00\x00\x20ftypM4A ") == "audio/mp4"
    for not_audio in (b"", b"<html>", b"{}", b"RIFF\x24\x00\x00\x00AVI ", b"\xff\xd8\xff\xe0"):
        assert audio_type(not_audio) is None


# ---------------------------------------------------------------- flat memory


async def _upload_peak(path: Path) -> int:
    """Peak traced memory of uploading ``path`` (client and simulator in this process)."""
    async with live("kie") as env:
        await env.client.upload(mp3_bytes(50_000))  # warm up: sessions, parsers, pools
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base, _ = tracemalloc.get_traced_memory()
            uploaded = await env.client.upload(path)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert uploaded.size == path.stat().st_size
        record = next(r for r in env.sim.uploads.values() if r.file_id == uploaded.file_id)
        assert record.sha256 == sha256(path)
    return peak - base


async def test_a_file_is_streamed_not_read_whole(tmp_path: Path) -> None:
    """8 MB through client and simulator together: read whole, the peak would pass 8 MB."""
    beat = write_mp3(tmp_path / "beat.mp3", 8 * 1024 * 1024)
    growth = await _upload_peak(beat)
    assert growth < 2 * 1024 * 1024, f"{growth / 1e6:.1f} MB"


_RSS_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os, sys, threading, time
    from pathlib import Path
    sys.path.insert(0, "tests")
    from helpers import REQUEST, live, mp3_bytes
    from addvocals_async import set_testing

    ARGS = {k: v for k, v in REQUEST.items() if k != "upload_url"}

    PAGE = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * PAGE

    async def main() -> None:
        path, whole = Path(sys.argv[1]), sys.argv[2] == "whole"
        async with live("sunoapi") as env:
            await env.client.upload(mp3_bytes(50_000))
            peak, stop = [rss()], threading.Event()
            base = peak[0]

            def sample() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], rss())
                    time.sleep(0.002)

            sampler = threading.Thread(target=sample)
            sampler.start()
            try:
                if whole:
                    uploaded = await env.client.upload(path.read_bytes())
                    task = await env.client.add_vocals(upload_url=uploaded.url, **ARGS)
                else:
                    task = await env.client.add_vocals(audio=path, **ARGS)
                await task.complete(timeout=30)
            finally:
                stop.set()
                sampler.join()
            fetched = env.sim.tasks[task.task_id].input_size
        print(json.dumps({"growth": peak[0] - base, "size": fetched}))

    set_testing(True)
    asyncio.run(main())
    """
)


async def _rss_growth(path: Path, how: str) -> dict[str, int]:
    """Peak RSS growth, sampled every 2 ms, of a process submitting ``path`` on sunoapi
    until the task completes: the upload, and the simulator (in the same process) writing
    it to disk and fetching it back as the API would."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _RSS_SCRIPT, str(path), how],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["size"] == path.stat().st_size
    return figures


@pytest.mark.slow
async def test_a_50_mb_upload_keeps_memory_flat(tmp_path: Path) -> None:
    """A 50 MB instrumental becomes a finished task with under 10 MB of peak RSS growth (the
    goal). The same file read into memory first shows that the measure sees such a read."""
    beat = write_mp3(tmp_path / "big.mp3", 50 * 1024 * 1024)
    streamed = await _rss_growth(beat, "path")
    print(f"50 MB file to a finished task: peak RSS grew {streamed['growth'] / 1e6:.1f} MB")
    assert streamed["growth"] < 10 * 1024 * 1024
    whole = await _rss_growth(beat, "whole")
    print(f"50 MB as bytes: peak RSS grew {whole['growth'] / 1e6:.1f} MB")
    assert whole["growth"] > 50 * 1024 * 1024


# ---------------------------------------------------------------- the command line


async def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``addvocals ARGS`` through ``cli.main`` in a worker thread (its own event loop);
    stderr is a pipe here, as in a CI log."""
    capsys.readouterr()
    buffer = io.StringIO()
    code = await asyncio.to_thread(main, list(args), out=buffer)
    return code, buffer.getvalue(), capsys.readouterr().err


def cli_request() -> list[str]:
    return [a for k, v in ARGS.items() for a in (f"--{k.replace('_', '-')}", v)]


async def test_cli_upload_prints_the_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    beat = write_mp3(tmp_path / "beat.mp3", 40_000)
    async with live("kie") as env:
        api = ["--provider", "kie", "--base-url", env.sim.base_url, "--api-key", env.sim.api_key]
        code, out, err = await run_main(capsys, "upload", str(beat), *api)
        assert code == 0, err
        url = out.strip()
        async with env.http.get(url) as answer:
            assert await answer.read() == beat.read_bytes()
        assert "expires" in err
        assert "\r" not in err  # no progress bar in a pipe
        code, out, err = await run_main(
            capsys, "upload", str(beat), "--json", "--name", "x.mp3", *api
        )
        record = json.loads(out)
        assert record["size"] == 40_000
        assert record["url"].endswith("/x.mp3")
        assert err == ""
        code, out, err = await run_main(capsys, "upload", str(tmp_path / "nope.mp3"), *api)
        assert code == 7
        assert "no such file" in err
        assert out == ""


async def test_cli_upload_on_apibox_names_the_other_way(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    beat = write_mp3(tmp_path / "beat.mp3")
    async with live("apibox") as env:
        api = ["--base-url", env.sim.base_url, "--api-key", env.sim.api_key]
        code, _, err = await run_main(capsys, "upload", str(beat), *api)
        assert code == 2
        # The options belong to submit, not upload: the line names the command.
        assert "addvocals submit --file FILE --serve-file --wait" in err
        code, _, err = await run_main(capsys, "submit", "--file", str(beat), *cli_request(), *api)
        assert code == 2
        assert "--wait" in err
        assert "--receiver-port" in err
        assert env.sim.requests == []
        code, out, err = await run_main(
            capsys, "submit", "--file", str(beat), *cli_request(), *api,
            "--wait", "--receiver-port", "0", "--json",
        )  # fmt: skip
        assert code == 0, err
        task_id = json.loads(out.splitlines()[0])["task_id"]
        assert env.sim.tasks[task_id].input_sha256 == sha256(beat)
        assert "/files/" in env.sim.tasks[task_id].request["uploadUrl"]


async def test_cli_submit_file_uploads_on_kie(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    beat = write_mp3(tmp_path / "beat.mp3", 30_000)
    async with live("kie") as env:
        api = ["--provider", "kie", "--base-url", env.sim.base_url, "--api-key", env.sim.api_key]
        code, out, err = await run_main(
            capsys, "submit", "--file", str(beat), *cli_request(), *api, "--callback-url",
            "https://hooks.example.com/cb",
        )  # fmt: skip
        assert code == 0, err
        task_id = out.splitlines()[0].removeprefix("task id: ")
        assert env.sim.tasks[task_id].input_sha256 == sha256(beat)
        assert "/uploads/" in env.sim.tasks[task_id].request["uploadUrl"]
        bad = tmp_path / "notes.txt"
        bad.write_text("not a song")
        code, _, err = await run_main(
            capsys, "submit", "--file", str(bad), *cli_request(), *api, "--callback-url",
            "https://hooks.example.com/cb",
        )  # fmt: skip
        assert code == 7
        assert "does not look like audio" in err


def test_the_transfer_line_has_bytes_rate_and_eta() -> None:
    line = format_transfer("beat.mp3", 2_500_000, 10_000_000, 2.0)
    assert "[######------------------]" in line
    assert " 25%" in line
    assert "2.5 MB/10.0 MB" in line
    assert "1.2 MB/s" in line
    assert "ETA 6s" in line
    assert "done" in format_transfer("beat.mp3", 10, 10, 1.0)
    assert format_transfer("x", 2048, None, 1.0) == "x 2.0 kB  2.0 kB/s"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_an_upload_draws_its_bar_on_a_terminal_only(tmp_path: Path) -> None:
    beat = write_mp3(tmp_path / "beat.mp3", 300_000)
    terminal, pipe = _Terminal(), io.StringIO()
    async with live("sunoapi") as env:
        for stream in (terminal, pipe):
            await env.client.upload(beat, progress=TransferBar(Progress(stream), "beat.mp3"))
    assert "\r\x1b[K" in terminal.getvalue()
    assert "300.0 kB/300.0 kB" in terminal.getvalue()
    assert "100%" in terminal.getvalue()
    assert pipe.getvalue() == ""


@pytest.mark.parametrize(
    ("command", "needles"),
    [("submit", ["--file", "--upload", "--serve-file"]), ("upload", ["PATH_OR_URL", "24 hours"])],
)
def test_help_describes_files(
    command: str, needles: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    for needle in needles:
        assert needle in text
