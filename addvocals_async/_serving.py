"""Local files served by the receiver, for the API to fetch as ``uploadUrl``.

``receiver.serve_file(path)`` registers one file and returns a URL ending in
``/files/<token>``. The token is the callback tokens' scheme (a random reference and its
HMAC under the receiver's secret, cut to 128 bits) keyed in a domain of its own, so a
callback token opens no file and a file token posts no callback. A request is answered:

1. the token's MAC, in constant time: a forged one is refused (403) with no lookup;
2. the table of files registered in this process: a token it does not hold (another
   receiver's, a restarted one's, a revoked or expired one) is refused (403) the same way;
3. only then is the file opened, by the path given to ``serve_file``: nothing in a
   request ever reaches the file system.

Files are served with ``GET`` and ``HEAD``, one byte range (``206``, or ``416`` when it
lies past the end; several ranges get the whole file), the MIME type its first bytes say
and its exact length. The kernel copies the file to the socket (``sendfile``) 64 KB at a
time, and a fetcher that takes nothing for the receiver's ``receive_timeout`` is cut off,
so a stalled reader holds no connection, descriptor or buffer for long; at most
``MAX_SENDS`` files are sent at once (then ``503``, ``Retry-After``). A file rewritten
since ``serve_file`` is served only while it still passes its checks (size limit, audio
signature); one that shrinks mid-answer ends the connection. Serving ends when the file
expires, or when the task it was registered for reports ``first``, ``complete`` or a
failure: by then the API has fetched it. Every answer is logged on
``addvocals_async.receiver``, request text escaped.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import attrs

from ._audio import SNIFF_BYTES, audio_type, check_audio_file, check_max_bytes
from ._errors import RequestValidationError
from ._signing import FILE_TOKEN_DOMAIN, Secret, TokenSigner

if TYPE_CHECKING:  # aiohttp's server side loads when a file is first served
    from aiohttp import web

__all__ = [
    "DEFAULT_SERVE_SECONDS",
    "MAX_SENDS",
    "UNSATISFIABLE",
    "FileServer",
    "ServedFile",
    "parse_range",
]

log = logging.getLogger("addvocals_async.receiver")

DEFAULT_SERVE_SECONDS = 3600.0
"""How long a served file stays fetchable unless ``expires_in=`` says otherwise. The API
fetches the instrumental within moments of the submit; an hour covers a queue and the
sender's retries, and the file stops being served as soon as its task reports ``first``."""

_SEGMENT = 64 * 1024
"""Bytes handed to ``loop.sendfile`` at a time: the kernel copies the file to the socket
(no buffer of ours), and each segment must go within the stall limit, so a fetcher that
stops reading lets go of its connection and file instead of holding them for ever."""
_DIRECTORY_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
_WALK = os.open in os.supports_dir_fd and hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_DIRECTORY")


def _open_exactly(path: Path) -> int:
    """Open ``path`` (resolved by ``serve_file``: no symlink in it) one component at a
    time, following no symlink anywhere: a folder on the way swapped for a symlink since
    (which ``O_NOFOLLOW`` on the last component alone would follow) is refused."""
    if not _WALK or not path.is_absolute():  # pragma: no cover - Windows
        return os.open(path, _OPEN_FLAGS)
    parts = path.parts
    folder = os.open(parts[0], os.O_RDONLY)
    try:
        for part in parts[1:-1]:
            inner = os.open(part, _DIRECTORY_FLAGS, dir_fd=folder)
            os.close(folder)
            folder = inner
        return os.open(parts[-1], _OPEN_FLAGS, dir_fd=folder)
    finally:
        os.close(folder)


MAX_SENDS = 64
"""Files sent at once by one receiver; more fetches are answered 503 with Retry-After
without opening anything. Each send holds a descriptor besides its connection's, which
the connection limit does not count: without a cap, a few hundred downloads exhaust the
process's descriptors and the receiver can accept no callback. The API fetches each file
once; 64 at a time fill any uplink."""
_BUSY = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})
"""``open`` failures that say "not now" (out of descriptors or memory), not "gone": 503."""
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
"""Opening never blocks (a FIFO put in the file's place) nor follows a symlink put there
since ``serve_file`` resolved the path; ``fstat`` then insists on a regular file."""
_MAX_FILES = 10_000
"""Files registered at once; expired ones are swept when a new one is registered."""

UNSATISFIABLE: Literal["unsatisfiable"] = "unsatisfiable"
_RANGE = re.compile(r"\s*bytes\s*=\s*([0-9]*)\s*-\s*([0-9]*)\s*", re.ASCII)


def parse_range(header: str | None, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """The one byte range a ``Range`` header asks of a ``size``-byte file, as ``(first,
    last)`` inclusive; ``None`` to send the whole file (no header, a malformed one, or
    several ranges, which a server may ignore); ``UNSATISFIABLE`` when the range lies
    wholly past the end (answered 416)."""
    if header is None or len(header) > 200:
        return None
    match = _RANGE.fullmatch(header)
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text and not last_text:
        return None
    if len(first_text) > 18 or len(last_text) > 18:
        return None  # no file is that large; a number of a thousand digits is no range
    if not first_text:  # a suffix: the last N bytes
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            return UNSATISFIABLE
        return (max(0, size - suffix), size - 1)
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None  # invalid: ignored, as RFC 9110 says
    if first >= size:
        return UNSATISFIABLE
    last = int(last_text) if last_text else size - 1
    return (first, min(last, size - 1))


@attrs.frozen
class ServedFile:
    """One file registered for serving: its path, what its checks found, until when
    (``time.monotonic()``), and the callback reference of the task it is for, if any."""

    ref: str
    path: Path
    size: int
    mime_type: str
    expires_at: float
    task_ref: str | None = None
    max_bytes: int | None = None


Refusal = Callable[[str, str], None]
"""``refused(kind, detail)``: how the receiver logs a refused request, summed up in floods."""


class FileServer:
    """The table of served files and the answer to a ``GET``/``HEAD`` of one."""

    def __init__(self, secret: Secret, refused: Refusal, *, stall_timeout: float = 10.0) -> None:
        self._signer = TokenSigner(secret, domain=FILE_TOKEN_DOMAIN)
        self.stall_timeout = stall_timeout
        """How long a download may go without taking the next 64 KB before it is cut off."""
        self.max_sends = MAX_SENDS
        self._sending = 0
        self._busy_told = False
        self._files: dict[str, ServedFile] = {}
        self._refused = refused
        self.served = 0
        self.rejected = 0

    def __repr__(self) -> str:
        return f"FileServer(files={len(self._files)}, secret=***)"

    def __len__(self) -> int:
        return len(self._files)

    def register(
        self,
        path: str | os.PathLike[str],
        *,
        expires_in: float = DEFAULT_SERVE_SECONDS,
        task_ref: str | None = None,
        max_bytes: int | None = None,
    ) -> str:
        """Check ``path`` (``check_audio_file``) and register it; returns the URL token."""
        if (
            isinstance(expires_in, bool)
            or not isinstance(expires_in, (int, float))
            or not 0 < expires_in < float("inf")
        ):
            raise RequestValidationError(
                "expires_in", expires_in, "must be a positive, finite number of seconds"
            )
        audio = check_audio_file(path, max_bytes=max_bytes)
        now = time.monotonic()
        if len(self._files) >= _MAX_FILES:
            self._sweep(now)
        ref, token = self._signer.new_token()
        self._files[ref] = ServedFile(
            ref=ref,
            path=audio.path.resolve(),
            size=audio.size,
            mime_type=audio.mime_type,
            expires_at=now + expires_in,
            task_ref=task_ref,
            max_bytes=max_bytes,
        )
        log.info(
            "serving %s (%d bytes, %s) for %.0f s as file %s",
            ascii(audio.path.name),
            audio.size,
            audio.mime_type,
            expires_in,
            ref,
        )
        return token

    def _sweep(self, now: float) -> None:
        for ref in [r for r, f in self._files.items() if f.expires_at <= now]:
            del self._files[ref]
        if len(self._files) >= _MAX_FILES:
            raise RequestValidationError(
                "path", None, f"{_MAX_FILES} files are served already; stop serving some first"
            )

    def revoke(self, token: str) -> bool:
        """Stop serving the file of ``token``; False when it was not served."""
        ref = self._signer.check(token)
        return ref is not None and self._files.pop(ref, None) is not None

    def task_moved_on(self, task_ref: str) -> None:
        """The task registered under ``task_ref`` reported ``first``, ``complete`` or a
        failure: the API has its input, so its files are no longer served."""
        for ref in [r for r, f in self._files.items() if f.task_ref == task_ref]:
            served = self._files.pop(ref)
            log.info("stopped serving file %s: its task has moved on", served.ref)

    def lookup(self, token: str) -> ServedFile | None:
        """The file a token opens now, or ``None``; touches no file."""
        ref = self._signer.check(token)  # constant time, no lookup
        if ref is None:
            return None
        served = self._files.get(ref)
        if served is None:
            return None
        if time.monotonic() >= served.expires_at:
            del self._files[ref]
            return None
        return served

    async def respond(self, request: web.BaseRequest, token: str) -> web.StreamResponse:
        """Answer a request for ``token``'s file."""
        from aiohttp import web

        method = request.method
        if method not in ("GET", "HEAD"):
            self.rejected += 1
            return web.json_response(
                {"status": "rejected", "reason": "method not allowed"},
                status=405,
                headers={"Allow": "GET, HEAD"},
            )
        served = self.lookup(token)
        if served is None:
            self.rejected += 1
            self._refused(
                "invalid or expired file link",
                "forged, expired, no longer needed by its task, or served by another process",
            )
            return web.json_response(
                {"status": "rejected", "reason": "invalid or expired file link"}, status=403
            )
        if self._sending >= self.max_sends:
            return self._busy(request, served, f"{self._sending} files are being sent already")
        self._sending += 1
        try:
            return await self._send(request, served)
        finally:
            self._sending -= 1

    async def _send(self, request: web.BaseRequest, served: ServedFile) -> web.StreamResponse:
        from aiohttp import web

        loop = asyncio.get_running_loop()
        try:
            fd = await loop.run_in_executor(None, _open_exactly, served.path)
        except OSError as exc:
            if exc.errno in _BUSY:
                return self._busy(request, served, exc.strerror or "out of resources")
            return self._gone(request, served, exc.strerror or "cannot be opened")
        try:
            info = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        if not stat.S_ISREG(info.st_mode):  # a folder or FIFO put in its place
            os.close(fd)
            return self._gone(request, served, "is no longer a regular file")
        # A file object over the descriptor, for loop.sendfile; closing it closes the fd.
        file = os.fdopen(fd, "rb", buffering=0)
        try:
            size = info.st_size
            # What serve_file checked must still hold: the file may have been rewritten since.
            if size > check_max_bytes(served.max_bytes):
                return self._gone(request, served, "has grown past the size limit")
            head = await loop.run_in_executor(None, os.pread, fd, SNIFF_BYTES, 0)
            if size and audio_type(head) is None:
                return self._gone(request, served, "no longer looks like audio")
            wanted = parse_range(request.headers.get("Range"), size)
            headers = {
                "Accept-Ranges": "bytes",
                "Cache-Control": "no-store",
                "Content-Type": served.mime_type,
            }
            if wanted == UNSATISFIABLE:
                headers["Content-Range"] = f"bytes */{size}"
                self._log(request, served, 416, 0)
                return web.Response(status=416, headers=headers)
            if wanted is None:
                status, first, last = 200, 0, size - 1
            else:
                status, (first, last) = 206, wanted
                headers["Content-Range"] = f"bytes {first}-{last}/{size}"
            length = last - first + 1
            response = web.StreamResponse(status=status, headers=headers)
            response.content_length = length
            await response.prepare(request)
            # Logged as it starts: the fetcher may have every byte before this coroutine
            # runs again. A download cut short is logged again, with what it got.
            self._log(request, served, status, length if request.method == "GET" else 0)
            sent = 0
            transport = request.transport
            try:
                while request.method == "GET" and sent < length:
                    if transport is None or transport.is_closing():
                        raise ConnectionResetError("the fetcher went away")
                    step = await asyncio.wait_for(
                        loop.sendfile(transport, file, first + sent, min(_SEGMENT, length - sent)),
                        self.stall_timeout,
                    )
                    if not step:
                        break
                    sent += step
                if sent < length and request.method == "GET":
                    # The file shrank under us: the body is short of its Content-Length,
                    # so the connection must end here, or the fetcher would wait for the
                    # rest and then read the next answer as file bytes.
                    log.warning("file %s shrank while being sent: connection closed", served.ref)
                    if transport is not None:
                        transport.abort()
                    self._log(request, served, status, sent)
                    return response
                await response.write_eof()
            except (ConnectionError, asyncio.TimeoutError) as exc:
                # The fetcher went away, or stopped reading for stall_timeout: let go of
                # the connection and the file; nobody is left to answer.
                if isinstance(exc, asyncio.TimeoutError):
                    log.warning(
                        "file %s: the fetcher took nothing for %g s; connection closed",
                        served.ref,
                        self.stall_timeout,
                    )
                if transport is not None:
                    transport.abort()
                self._log(request, served, status, sent)
                return response
            self.served += 1
            self._busy_told = False
            return response
        finally:
            file.close()

    def _busy(self, request: web.BaseRequest, served: ServedFile, why: str) -> web.Response:
        from aiohttp import web

        # Once until a file is sent again, not once per fetch of a crowd.
        level = logging.DEBUG if self._busy_told else logging.WARNING
        self._busy_told = True
        log.log(level, "cannot serve file %s now (503, retry later): %s", served.ref, why)
        self._log(request, served, 503, 0)
        return web.json_response(
            {"status": "busy", "reason": "try again shortly"},
            status=503,
            headers={"Retry-After": "1"},
        )

    def _gone(self, request: web.BaseRequest, served: ServedFile, why: str) -> web.Response:
        from aiohttp import web

        log.warning("cannot serve file %s: %s %s", served.ref, ascii(served.path.name), why)
        self._log(request, served, 410, 0)
        return web.json_response(
            {"status": "rejected", "reason": "the file is no longer available"}, status=410
        )

    @staticmethod
    def _log(request: web.BaseRequest, served: ServedFile, status: int, sent: int) -> None:
        log.info(
            "file %s: %s range %s from %s -> %d, %d bytes",
            served.ref,
            request.method,
            ascii(request.headers.get("Range", "-")[:100]),
            ascii(str(request.remote)),
            status,
            sent,
        )
