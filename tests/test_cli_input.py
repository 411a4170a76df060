"""The command line refuses input that would silently switch a safety off (issue 10,
item 11): NaN, infinite, negative or zero deadlines, ports bind() cannot take, weights
that are no number, a blank API key. Each is exit 2 and one line naming the option, not
exit 1 with a raw ``ValueError`` or ``OverflowError``. A local file-system error is exit 7,
not 6 ("network").

``cli.main`` runs in-process: argparse's refusals raise ``SystemExit(2)`` after printing
the usage and one ``error:`` line; everything else returns its exit code.
"""

from __future__ import annotations

import asyncio
import errno
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from addvocals_async import (
    AddVocalsClient,
    APIConnectionError,
    APITimeoutError,
    PollPolicy,
    RetryPolicy,
    TaskTimeoutError,
)
from addvocals_async.cli import build_parser, main
from addvocals_async.cli._output import EXIT_FILES, exit_code
from addvocals_async.testing import Simulator

REQUEST = [
    "--upload-url", "https://cdn.example.org/a.mp3", "--prompt", "Warm", "--title", "T",
    "--style", "Soul", "--negative-tags", "Metal", "--callback-url", "http://127.0.0.1:9/cb",
]  # fmt: skip


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """The exit code and stderr of ``addvocals argv``, as the console script gives them."""
    capsys.readouterr()
    try:
        code = main(argv, out=io.StringIO())
    except SystemExit as exited:
        code = exited.code if isinstance(exited.code, int) else 1
    return code, capsys.readouterr().err


def error_line(err: str) -> str:
    """The one line that says what is wrong (after argparse's usage, if any)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1, err
    assert errors[0] == lines[-1], err
    return errors[0]


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    # A key, so that the old code got as far as using a bad value (exit 1, raw errors).
    monkeypatch.setenv("ADDVOCALS_API_KEY", "test-key")


BAD_NUMBERS = [
    (["wait", "abc", "--timeout", "-1"], "--timeout"),
    (["wait", "abc", "--timeout", "nan"], "--timeout"),
    (["wait", "abc", "--timeout", "0"], "--timeout"),
    (["submit", *REQUEST, "--wait", "--timeout", "inf"], "--timeout"),
    (["submit", *REQUEST, "--wait", "--timeout", "NaN"], "--timeout"),
    (["wait", "abc", "--receiver-port", "99999"], "--receiver-port"),
    (["wait", "abc", "--receiver-port", "-1"], "--receiver-port"),
    (["submit", *REQUEST, "--wait", "--receiver-port", "65536"], "--receiver-port"),
    (["serve", "--port", "99999", "--secret", "s" * 32, "--host", "127.0.0.1"], "--port"),
    (["serve", "--port", "-5", "--secret", "s" * 32, "--host", "127.0.0.1"], "--port"),
    (["wait", "abc", "--poll-interval", "nan"], "--poll-interval"),
    (["wait", "abc", "--poll-interval", "inf"], "--poll-interval"),
    (["wait", "abc", "--poll-interval", "0.1"], "--poll-interval"),
    (["credits", "--request-timeout", "nan"], "--request-timeout"),
    (["credits", "--request-timeout", "-1"], "--request-timeout"),
    (["status", "abc", "--request-timeout", "0"], "--request-timeout"),
    (["download", "abc", "--request-timeout", "inf"], "--request-timeout"),
    (["wait", "abc", "--request-timeout", "1e400"], "--request-timeout"),
    (["submit", *REQUEST, "--style-weight", "nan"], "--style-weight"),
    (["submit", *REQUEST, "--audio-weight", "inf"], "--audio-weight"),
    (["submit", *REQUEST, "--weirdness-constraint", "-1e400"], "--weirdness-constraint"),
    (["submit", *REQUEST, "--variety", "1.5"], "--variety"),
    (["demo", "--speed", "0"], "--speed"),
    (["demo", "--speed", "nan"], "--speed"),
    (["demo", "--speed", "inf"], "--speed"),
    (["simulate", "--port", "99999"], "--port"),
    (["simulate", "--speed", "inf"], "--speed"),
    (["simulate", "--speed", "-1"], "--speed"),
]


@pytest.mark.parametrize(
    ("argv", "option"),
    BAD_NUMBERS,
    ids=[f"{a[0]}{option}={a[a.index(option) + 1]}" for a, option in BAD_NUMBERS],
)
def test_a_number_that_would_disable_a_safety_is_invalid_input(
    argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if argv[0] == "wait" and option != "--timeout":
        argv = [*argv, "--timeout", "1"]  # where a bad value were taken, it would end soon
    code, err = run(argv, capsys)
    assert code == 2, err
    line = error_line(err)
    assert option in line
    assert "ValueError" not in err
    assert "OverflowError" not in err


def test_a_blank_api_key_is_refused_not_taken(capsys: pytest.CaptureFixture[str]) -> None:
    for blank in ("   ", "", "\t"):
        code, err = run(["credits", "--api-key", blank], capsys)
        assert code == 2, err
        line = error_line(err)
        assert "--api-key" in line
        assert "blank" in line


def test_a_blank_api_key_variable_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ADDVOCALS_API_KEY", "   ")
    code, err = run(["credits"], capsys)
    assert code == 2, err
    line = error_line(err)
    assert "ADDVOCALS_API_KEY" in line
    assert "blank" in line


def test_good_values_at_the_edges_still_parse() -> None:
    parser = build_parser()
    args = parser.parse_args(["wait", "abc", "--timeout", "0.5", "--receiver-port", "0",
                              "--poll-interval", "0.5", "--request-timeout", "1e-3"])  # fmt: skip
    assert (args.timeout, args.receiver_port, args.poll_interval) == (0.5, 0, 0.5)
    assert parser.parse_args(["serve", "--port", "65535"]).port == 65535
    args = parser.parse_args(["submit", *REQUEST, "--style-weight", "0", "--audio-weight", "1"])
    assert (args.style_weight, args.audio_weight) == (0.0, 1.0)
    assert parser.parse_args(["credits", "--api-key", " k "]).api_key == " k "


# ---------------------------------------------------------------- local files: exit 7


@pytest.fixture
async def finished_task() -> AsyncIterator[tuple[Simulator, str]]:
    async with Simulator(speed=1000, seed=5, rate_limit=None, details_rate_limit=None) as sim:
        sim.script("lost_all")
        async with AddVocalsClient(
            sim.api_key,
            base_url=sim.base_url,
            callback_url="http://127.0.0.1:9/cb",
            retry=RetryPolicy.no_wait(),
            poll=PollPolicy.fast(),
        ) as client:
            task = await client.add_vocals(
                upload_url="https://cdn.example.org/a.mp3",
                prompt="Warm",
                title="T",
                style="Soul",
                negative_tags="Metal",
            )
            await task.complete(timeout=10)
        yield sim, task.task_id


@pytest.mark.parametrize("where", ["file-in-the-way", "/proc/x", "/proc/self"])
async def test_a_local_file_error_is_exit_7_not_network(
    where: str,
    finished_task: tuple[Simulator, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if where == "file-in-the-way":
        (tmp_path / "blocker").write_text("a file, not a folder")
        out = str(tmp_path / "blocker" / "tracks")  # mkdir fails: NotADirectoryError
    else:
        out = where  # /proc/x cannot be made; /proc/self exists but takes no new files
        if not Path("/proc/self").is_dir():
            pytest.skip("needs Linux's /proc")
    sim, task_id = finished_task
    argv = ["download", task_id, "--out", out, "--base-url", sim.base_url,
            "--api-key", sim.api_key]  # fmt: skip
    code, err = await asyncio.to_thread(run, argv, capsys)
    assert code == EXIT_FILES == 7, err
    line = error_line(err)
    assert f"cannot write {out}" in line
    assert "local file problem" in line
    if where == "file-in-the-way":
        assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def test_exit_codes_tell_local_files_from_the_network() -> None:
    assert exit_code(PermissionError(errno.EACCES, "Permission denied", "/ro/x.mp3")) == 7
    assert exit_code(OSError(errno.ENOSPC, "No space left on device", "/full/x")) == 7
    assert exit_code(OSError(errno.EADDRINUSE, "address already in use")) == 6  # a bind
    assert exit_code(APIConnectionError("down")) == 6
    assert exit_code(APITimeoutError("slow")) == 6
    assert exit_code(TaskTimeoutError("t", "complete")) == 5  # a TimeoutError, so an OSError
    assert exit_code(FileExistsError("x.mp3 exists; pass overwrite=True")) == 2  # the SDK's


def test_the_exit_code_list_names_7() -> None:
    epilog = build_parser().epilog or ""
    assert "7 local files" in epilog
    assert "6 network" in epilog


@pytest.mark.parametrize(
    ("argv", "debug"),
    [
        (["--debug", "credits"], True),
        (["credits", "--debug"], True),
        (["wait", "abc", "--debug"], True),
        (["simulate", "--debug"], True),
        (["credits"], False),
    ],
)
def test_debug_is_taken_before_or_after_the_command(argv: list[str], debug: bool) -> None:
    """People add ``--debug`` at the end of the line that failed; argparse alone refused it
    there ("unrecognized arguments")."""
    assert build_parser().parse_args(argv).debug is debug


def test_a_file_over_the_limit_names_what_the_command_line_can_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The SDK says "pass max_bytes=", which the command line has no option for."""
    big = tmp_path / "big.mp3"
    with big.open("wb") as file:
        file.write(b"ID3\x04\x00\x00\x00\x00\x00\x00")
        file.truncate(101 << 20)  # sparse
    argv = ["upload", str(big), "--provider", "kie", "--api-key", "k",
            "--base-url", "http://127.0.0.1:9"]  # fmt: skip
    code, err = run(argv, capsys)
    assert code == EXIT_FILES, err
    line = error_line(err)
    assert "over the 100 MiB limit" in line
    assert "max_bytes" not in line
    assert "--upload-url" in line
