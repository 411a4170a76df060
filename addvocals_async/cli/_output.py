"""What the command line shows: stage words, the progress line, results as text or JSON,
following a task, downloading its tracks, and how an error becomes one line and an exit
code.

Exit codes:

    0  done                       4  the task failed
    1  unexpected error           5  a wait timed out
    2  invalid input or usage     6  network trouble (API unreachable, connection lost)
    3  the API refused            7  local files (cannot create or write --out: a
                                     missing or read-only folder, a full disk; a --file
                                     that is missing, too large or not audio)
                                  130 interrupted (Ctrl-C)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs

from .. import (
    AddVocalsClient,
    AddVocalsError,
    APIConnectionError,
    APIError,
    DeliveryUnavailableError,
    LocalFileError,
    NotFoundError,
    ReceiverClosedError,
    RequestValidationError,
    Stage,
    TaskFailedError,
    TaskResult,
    TaskTimeoutError,
    Track,
    UploadUnavailableError,
    VocalTask,
)

__all__ = [
    "EXIT_API",
    "EXIT_ERROR",
    "EXIT_FAILED",
    "EXIT_FILES",
    "EXIT_INTERRUPTED",
    "EXIT_NETWORK",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "FOLLOWING",
    "STAGE_WORDS",
    "CLIError",
    "Progress",
    "TransferBar",
    "describe",
    "download_tracks",
    "emit",
    "exit_code",
    "follow",
    "format_transfer",
    "local_files",
    "ticker_line",
    "track_json",
]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_API, EXIT_FAILED, EXIT_TIMEOUT, EXIT_NETWORK = range(7)
EXIT_FILES = 7
"""The local file system refused (``--out`` cannot be made or written): not the network."""
EXIT_INTERRUPTED = 130

FOLLOWING = "following (re-attached by id)"
"""The first line of ``addvocals wait``: it did not submit the task."""

STAGE_WORDS = {
    Stage.PENDING: "submitted",
    Stage.TEXT: "lyrics written",
    Stage.FIRST: "first track ready",
    Stage.COMPLETE: "complete",
    Stage.FAILED: "failed",
}


class CLIError(Exception):
    """A problem the user can fix, shown as one line with an exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


@contextlib.contextmanager
def local_files(where: Path) -> Iterator[None]:
    """Turn a file-system error while writing into ``where`` into one line and exit code 7,
    so that a missing, read-only or full folder is not reported as network trouble."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, AddVocalsError) or _refuses_overwrite(exc):
            raise
        raise CLIError(_local_error_line(exc, where), EXIT_FILES) from exc


def _refuses_overwrite(exc: BaseException) -> bool:
    """The SDK's own refusal to replace a file (no errno): a choice, shown with its option."""
    return isinstance(exc, FileExistsError) and exc.errno is None


def _local_error_line(exc: OSError, where: Path | None) -> str:
    name = where if where is not None else exc.filename
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        reason = "a file is in the way of a folder"
    else:
        reason = exc.strerror or str(exc) or type(exc).__name__
    return f"cannot write {name}: {reason} (a local file problem, not the network)"


# ---------------------------------------------------------------- progress


class Progress:
    """Shows a task's stages as they arrive: one redrawn line on a terminal, plain lines
    elsewhere (pipes, CI logs)."""

    def __init__(self, stream: TextIO, *, quiet: bool = False) -> None:
        self.stream = stream
        self.live = stream.isatty() and not quiet
        self.quiet = quiet
        self.started = time.monotonic()
        self._last = ""

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.started:5.1f}s"

    def stage(self, task_id: str, stage: Stage) -> None:
        self.line(f"[{self.elapsed()}] {task_id}: {STAGE_WORDS.get(stage, stage.value)}")

    def line(self, text: str) -> None:
        if self.quiet:
            return
        if self.live and self._last:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        self.stream.flush()
        self._last = ""

    def redraw(self, text: str) -> None:
        """A transient status line (terminal only)."""
        if self.live:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
            self._last = text

    def done(self) -> None:
        if self.live and self._last:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._last = ""


def _size(count: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count:.0f} B"


def format_transfer(name: str, done: int, total: int | None, seconds: float) -> str:
    """One progress line of an upload or download: a bar and percentage when the total
    is known, the bytes, the rate and the time left."""
    rate = done / seconds if seconds > 0 else 0.0
    speed = f"{_size(rate)}/s" if rate else "-"
    if not total:
        return f"{name} {_size(done)}  {speed}"
    width = 24
    share = min(1.0, done / total)
    bar = "#" * int(width * share) + "-" * (width - int(width * share))
    left = (total - done) / rate if rate and done < total else 0.0
    eta = f"ETA {left:.0f}s" if done < total and rate else ("done" if done >= total else "ETA ?")
    return f"{name} [{bar}] {share * 100:3.0f}%  {_size(done)}/{_size(total)}  {speed}  {eta}"


class TransferBar:
    """``progress(done, total)`` for ``client.upload`` and ``client.download``: a bar with
    bytes, rate and ETA, redrawn at most ten times a second, on a terminal only (quiet in
    pipes and logs)."""

    def __init__(self, progress: Progress, name: str) -> None:
        self.progress = progress
        self.name = name
        self.started = time.monotonic()
        self._drawn = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if not self.progress.live or (now - self._drawn < 0.1 and done != total):
            return
        self._drawn = now
        self.progress.redraw(format_transfer(self.name, done, total, now - self.started))


# ---------------------------------------------------------------- results


def track_json(track: Track) -> dict[str, Any]:
    data = attrs.asdict(track)
    data["create_time"] = track.create_time.isoformat() if track.create_time else None
    return data


def _result_json(result: TaskResult) -> dict[str, Any]:
    return {
        "task_id": result.task_id,
        "stage": result.stage.value,
        "source": result.source,
        "tracks": [track_json(t) for t in result.tracks],
    }


def _print_result(result: TaskResult, out: TextIO) -> None:
    out.write(f"task {result.task_id}: {STAGE_WORDS[result.stage]}\n")
    for track in result.tracks:
        length = f"{track.duration:.1f}s" if track.duration is not None else "?"
        out.write(f"  {track.id}  {length:>7}  {track.audio_url or track.stream_audio_url}\n")


def emit(result: TaskResult, out: TextIO, *, as_json: bool) -> None:
    """A finished task's result on ``out``: one JSON line, or a line per track."""
    if as_json:
        out.write(json.dumps(_result_json(result)) + "\n")
    else:
        _print_result(result, out)


# ---------------------------------------------------------------- following, downloading


async def follow(
    task: VocalTask,
    progress: Progress,
    timeout: float | None,
    *,
    note: str | None = None,
    reattached: bool = False,
) -> TaskResult:
    """Show each stage as it arrives, with the lyrics once a track carries them; ``note``,
    a line after the first, says how the stages will arrive when that is slow (polling).
    ``reattached``: a task submitted earlier (``wait``), not just now."""
    lyrics_shown = False
    if reattached:
        progress.line(f"[{progress.elapsed()}] {task.task_id}: {FOLLOWING}")
    else:
        progress.stage(task.task_id, Stage.PENDING)
    if note:
        progress.line(note)
    ticker = asyncio.ensure_future(_tick(task, progress))
    try:
        async for event in task.events(timeout=timeout):
            stage = event.stage
            if stage is None:
                continue
            progress.stage(task.task_id, stage)
            if not lyrics_shown:
                lyrics = next((t.prompt for t in event.tracks if t.prompt), None)
                if lyrics:
                    progress.line("  lyrics: " + lyrics.replace("\n", "\n          "))
                    lyrics_shown = True
        return await task.complete(timeout=0)
    finally:
        ticker.cancel()
        progress.done()


def ticker_line(task: VocalTask, elapsed: str) -> str:
    """The transient status line: the stage in the permanent lines' words, and how the
    result is awaited (callbacks, or polls and when the next one is)."""
    stage = STAGE_WORDS.get(task.stage, task.stage.value)
    next_poll = task.next_poll_in
    if next_poll is None:
        how = "waiting for callbacks"
    elif next_poll < 0.5:
        how = "polling the API now"
    else:
        how = f"polling the API, next poll in {next_poll:.0f} s"
    return f"[{elapsed}] {task.task_id}: {stage}; {how}"


async def _tick(task: VocalTask, progress: Progress) -> None:
    while True:
        progress.redraw(ticker_line(task, progress.elapsed()))
        await asyncio.sleep(0.5)


async def download_tracks(
    client: AddVocalsClient,
    tracks: Sequence[Track],
    dest: Path,
    *,
    overwrite: bool,
    images: bool = False,
    skip_existing: bool = False,
    stream: TextIO,
    announce: bool = True,
) -> list[Path]:
    """Download every track (and, if asked, its cover) into ``dest`` with a progress line.

    ``announce``: a permanent "saved PATH" line per file (off when the caller prints the
    paths itself on the same terminal). ``skip_existing``: a file already there is kept
    and counted as written, so a re-run finishes what an interrupted one started."""
    progress = Progress(stream)
    written: list[Path] = []
    for track in tracks:
        kinds = ["audio", "image"] if images and track.image_url else ["audio"]
        for kind in kinds:
            name = f"{track.id} {kind}"

            report = TransferBar(progress, name)

            try:
                with local_files(dest):
                    path = await client.download(
                        track, dest, kind=kind, overwrite=overwrite, progress=report
                    )
                    size = path.stat().st_size
            except FileExistsError as exc:
                if not (skip_existing and _refuses_overwrite(exc) and exc.filename):
                    raise
                path = Path(exc.filename)
                progress.done()
                if announce:
                    progress.line(f"kept {path} (exists)")
                written.append(path)
                continue
            if announce:
                progress.line(f"saved {path} ({size} bytes)")
            else:
                progress.done()
            written.append(path)
    return written


# ---------------------------------------------------------------- errors


def exit_code(exc: BaseException) -> int:
    """The exit code that says what went wrong (see the table above)."""
    if isinstance(exc, LocalFileError):
        return EXIT_FILES
    if isinstance(exc, UploadUnavailableError):
        return EXIT_USAGE
    if isinstance(exc, (RequestValidationError, CLIError)):
        return exc.code if isinstance(exc, CLIError) else EXIT_USAGE
    if isinstance(exc, TaskFailedError):
        return EXIT_FAILED
    if isinstance(exc, TaskTimeoutError):
        return EXIT_TIMEOUT
    if _refuses_overwrite(exc):
        return EXIT_USAGE  # a download refusing to overwrite: the user's call, not the network
    if isinstance(exc, (APIConnectionError, ReceiverClosedError, DeliveryUnavailableError)):
        return EXIT_NETWORK
    if isinstance(exc, OSError) and not isinstance(exc, AddVocalsError):
        # A path names a file-system error (mkdir, open); one without is a socket's (bind).
        return EXIT_FILES if exc.filename is not None else EXIT_NETWORK
    if isinstance(exc, APIError):
        return EXIT_API
    return EXIT_ERROR


def describe(exc: BaseException) -> str:
    """The error as the one line a person reads, with the option that fixes it if any."""
    if isinstance(exc, TaskTimeoutError):
        after = f" after {exc.timeout:g} s" if exc.timeout is not None else ""
        return (
            f"task {exc.task_id} is not complete{after} (it may still finish); "
            f"resume with: addvocals wait {exc.task_id}"
        )
    if isinstance(exc, UploadUnavailableError):
        return (
            f"the {exc.provider} provider has no upload API: serve the file from here with "
            "addvocals submit --file FILE --serve-file --wait --receiver-port PORT ... (and "
            "--public-url URL when the API cannot reach this machine)"
        )
    if isinstance(exc, LocalFileError) and "max_bytes=" in exc.reason:
        # The SDK's hint names a keyword the command line does not have.
        reason = exc.reason.split(" (", 1)[0]
        return (
            f"{exc.path}: {reason} (an MP3 of it is smaller; or host it yourself and pass "
            "--upload-url, which the API may still refuse)"
        )
    if _refuses_overwrite(exc):
        # The SDK's refusal to overwrite: "<path> exists; pass overwrite=True ..."
        what = str(exc.args[0]).split(";")[0] if exc.args else "the file exists"
        return f"{what}; pass --overwrite to replace it"
    if isinstance(exc, RequestValidationError) and exc.field == "model":
        rule = exc.rule.split(";")[0]
        return f"--model {exc.value}: {rule}; pass --allow-unknown-model to send it anyway"
    if isinstance(exc, RequestValidationError) and exc.field == "callback_url" and not exc.value:
        return (
            "the API needs a callback URL: pass --callback-url URL, or --wait with "
            "--receiver-port PORT (and --public-url URL when the API cannot reach this machine)"
        )
    if isinstance(exc, NotFoundError) and exc.task_id is None:
        # No task named: the host has no such route, as when --provider does not match it.
        return (
            f"{exc} (this host has no such route: check that --provider, apibox, sunoapi or "
            "kie, matches --base-url)"
        )
    if (
        isinstance(exc, OSError)
        and exc.filename is not None
        and not isinstance(exc, AddVocalsError)
    ):
        return _local_error_line(exc, None)
    if isinstance(exc, (AddVocalsError, CLIError, OSError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
