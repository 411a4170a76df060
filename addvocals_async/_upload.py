"""Uploads to the provider's file host (sunoapi, kie): a local instrumental becomes a URL.

Three routes, the same on both hosts (API-SPEC §7):

- a file on disk goes as a streaming multipart body (``file-stream-upload``): aiohttp reads
  it in chunks in a worker thread and writes each as the socket takes it, so memory stays
  flat whatever the size;
- small bytes already in memory go as base64 JSON (``file-base64-upload``; kie advises it
  up to about 1 MB), larger ones as multipart;
- a URL goes as ``file-url-upload``: the host fetches it itself.

Uploads are free and a repeated one replaces (kie: the same ``fileName`` overwrites) or
adds a copy; nothing is charged twice. So every failure that may be transient (5xx, a
lost connection, a rate limit) is retried, as reads are, with the client's retry policy.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import io
import os
import secrets
from collections.abc import Callable
from typing import IO, Any, Union

import aiohttp
import yarl

from ._audio import SNIFF_BYTES, AudioFile, check_audio_bytes, check_audio_file, check_max_bytes
from ._convert import WireFormat
from ._errors import APIConnectionError, LocalFileError, RequestValidationError
from ._http import Transport
from ._models import UploadedFile
from ._validation import require_url

__all__ = [
    "BASE64_LIMIT",
    "UPLOAD_PATH",
    "UploadProgress",
    "UploadSource",
    "Uploader",
    "extension_for",
]

BASE64_LIMIT = 1024 * 1024
"""In-memory bytes up to this size go as base64 JSON (kie: "up to about 1 MB"); larger
ones, and every file on disk, as a streaming multipart body."""

UPLOAD_PATH = "addvocals"
"""The ``uploadPath`` (folder on the upload host) every upload is sent with."""

UploadProgress = Callable[[int, "int | None"], None]
"""``progress(sent_bytes, total_bytes_or_None)``, called as an upload advances."""

UploadSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]
"""What ``client.upload`` takes: a file path, bytes in memory, or a binary file object."""

_EXTENSIONS = {
    "audio/mpeg": ".mp3",
    "audio/wav": ".wav",
    "audio/flac": ".flac",
    "audio/ogg": ".ogg",
    "audio/mp4": ".m4a",
    "audio/aiff": ".aiff",
    "audio/aac": ".aac",
}


def extension_for(mime_type: str) -> str:
    """The usual file extension of an audio MIME type (``.mp3`` when unknown)."""
    return _EXTENSIONS.get(mime_type, ".mp3")


def _check_file_name(file_name: str | None, fallback: str) -> str:
    if file_name is None:
        return fallback
    if (
        not isinstance(file_name, str)
        or not file_name.strip()
        or any(c in file_name for c in "/\\\0")
        or len(file_name) > 200
    ):
        raise RequestValidationError(
            "file_name", file_name, "must be a plain file name (no folders), 1 to 200 characters"
        )
    return file_name


class _SizedReader(io.BufferedReader):
    """The checked file, read in aiohttp's worker thread: never more than the ``total``
    bytes it was checked at (the request's Content-Length), each chunk reported to the
    event loop when there is a ``progress``, and an end before ``total`` (the file shrank)
    an ``OSError`` that ends the attempt at once instead of leaving the upload host waiting
    for bytes that never come."""

    def __init__(
        self,
        raw: io.RawIOBase,
        loop: asyncio.AbstractEventLoop,
        progress: UploadProgress | None,
        total: int,
        offset: int | None = None,
    ) -> None:
        super().__init__(raw)
        self._loop = loop
        self._progress = progress
        self._total = total
        self._sent = 0
        # A duplicated descriptor shares its file offset with the caller's file and with
        # the copy an earlier attempt may still be reading in aiohttp's thread: such a copy
        # reads at its own position (pread), never through the shared one.
        self._offset = offset if hasattr(os, "pread") else None
        self.shrank = False

    def read(self, size: int | None = -1, /) -> bytes:
        left = self._total - self._sent
        if left <= 0:
            return b""
        want = left if size is None or size < 0 else min(size, left)
        if self._offset is not None:
            chunk = os.pread(self.fileno(), want, self._offset + self._sent)
        else:
            chunk = super().read(want)
        if not chunk:
            self.shrank = True
            raise OSError(errno.EIO, "the file shrank while it was being uploaded")
        self._sent += len(chunk)
        if self._progress is not None:
            self._loop.call_soon_threadsafe(self._progress, self._sent, self._total)
        return chunk


class Uploader:
    """Sends files to the provider's upload host through a ``Transport`` whose error map
    is the upload host's (400, 401, 405, 500)."""

    def __init__(self, transport: Transport, base_url: yarl.URL, wire: WireFormat) -> None:
        self._transport = transport
        self._base_url = base_url
        self._wire = wire
        self.profile = transport.profile

    def _url(self, path: str) -> yarl.URL:
        return self._base_url.with_path(path)

    async def aclose(self) -> None:
        await self._transport.aclose()

    def _result(self, data: Any) -> UploadedFile:
        uploaded = self._wire.structure_upload(data)
        if uploaded is None:
            raise APIConnectionError(
                "the upload host answered success without a file URL; try the upload again"
            )
        return uploaded

    async def upload(
        self,
        source: UploadSource,
        *,
        file_name: str | None = None,
        max_bytes: int | None = None,
        progress: UploadProgress | None = None,
    ) -> UploadedFile:
        """See ``AddVocalsClient.upload``."""
        if isinstance(source, (bytes, bytearray, memoryview)):
            return await self._upload_bytes(bytes(source), file_name, max_bytes, progress)
        if isinstance(source, (str, os.PathLike)):
            checked = check_audio_file(source, max_bytes=max_bytes)
            return await self._upload_path(checked, file_name, progress)
        if hasattr(source, "read"):
            return await self._upload_file_object(source, file_name, max_bytes, progress)
        raise RequestValidationError(
            "source",
            type(source).__name__,
            "must be a file path, bytes, or a file opened in binary mode",
        )

    async def _upload_path(
        self, audio: AudioFile, file_name: str | None, progress: UploadProgress | None
    ) -> UploadedFile:
        name = _check_file_name(file_name, audio.name)
        loop = asyncio.get_running_loop()
        opened: list[_SizedReader] = []

        def body() -> aiohttp.FormData:
            # Opened afresh for every attempt; closed after it (below). A file that is not
            # the size it was checked at is being written: retrying would send another.
            if any(file.shrank for file in opened):
                raise LocalFileError(audio.path, "shrank while it was being uploaded")
            raw = open(audio.path, "rb", buffering=0)  # noqa: SIM115 - closed after the call
            size = os.fstat(raw.fileno()).st_size
            if size != audio.size:
                raw.close()
                raise LocalFileError(
                    audio.path, f"changed size since it was checked ({audio.size} -> {size})"
                )
            file = _SizedReader(raw, loop, progress, audio.size)
            opened.append(file)
            return self._form(file, name, audio.mime_type)

        try:
            data = await self._transport.call(
                "POST", self._url(self.profile.upload_stream_path), body=body
            )
        except OSError as exc:  # the file vanished or became unreadable between attempts
            raise LocalFileError(audio.path, f"cannot be read: {exc.strerror or exc}") from exc
        except APIConnectionError as exc:
            if any(file.shrank for file in opened):  # the last attempt: no retry left
                raise LocalFileError(audio.path, "shrank while it was being uploaded") from exc
            raise
        finally:
            for file in opened:
                file.close()
        with contextlib.suppress(OSError):
            if os.stat(audio.path).st_size != audio.size:  # written to while it was sent
                raise LocalFileError(
                    audio.path,
                    f"grew while it was being uploaded; its first {audio.size} bytes were "
                    "uploaded: upload it again once it is written",
                )
        return self._result(data)

    async def _upload_file_object(
        self,
        file: IO[bytes],
        file_name: str | None,
        max_bytes: int | None,
        progress: UploadProgress | None,
    ) -> UploadedFile:
        limit = check_max_bytes(max_bytes)
        given = getattr(file, "name", None)
        shown = given if isinstance(given, str) else "the file object"
        try:
            start = file.tell()
            head = file.read(SNIFF_BYTES)
            size = file.seek(0, os.SEEK_END) - start
            file.seek(start)
        except (OSError, AttributeError, ValueError) as exc:
            raise RequestValidationError(
                "source", shown, "must be a seekable file opened in binary mode ('rb')"
            ) from exc
        if not isinstance(head, bytes):
            raise RequestValidationError("source", shown, "must be opened in binary mode ('rb')")
        mime = check_audio_bytes(head, name=shown, max_bytes=None)
        if size > limit:
            raise LocalFileError(shown, f"is {size} bytes, over the {limit} byte limit")
        fallback = os.path.basename(shown) if given else f"audio{extension_for(mime)}"
        name = _check_file_name(file_name, fallback)

        copies: list[_SizedReader] = []
        loop = asyncio.get_running_loop()

        def body() -> aiohttp.FormData:
            file.seek(start)  # each attempt sends the file from where it stood
            # aiohttp closes a file it sent: a file on disk goes as a duplicate of its
            # descriptor (same offset), read no further than the size checked, so the
            # caller's stays open, a retry can send it again, and a file written to
            # meanwhile is a LocalFileError as for a path.
            try:
                duplicate = os.dup(file.fileno())
            except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
                return self._form(file, name, mime)  # in memory (BytesIO): never closed
            try:
                now = os.fstat(duplicate).st_size - start
                if any(copy.shrank for copy in copies) or now != size:
                    raise LocalFileError(shown, f"changed while being uploaded ({size} -> {now})")
                raw = os.fdopen(duplicate, "rb", buffering=0)
                copy = _SizedReader(raw, loop, None, size, offset=start)
            except BaseException:
                os.close(duplicate)
                raise
            copies.append(copy)
            return self._form(copy, name, mime)

        try:
            data = await self._transport.call(
                "POST", self._url(self.profile.upload_stream_path), body=body
            )
        except APIConnectionError as exc:
            if any(copy.shrank for copy in copies):
                raise LocalFileError(shown, "shrank while it was being uploaded") from exc
            raise
        finally:
            for copy in copies:
                copy.close()
            with contextlib.suppress(OSError, ValueError):
                file.seek(start)
        if copies:
            try:
                now: int | None = os.fstat(file.fileno()).st_size - start
            except (OSError, ValueError):
                now = None
            if now is not None and now != size:  # written to while it was sent
                raise LocalFileError(
                    shown,
                    f"grew while it was being uploaded; its first {size} bytes were uploaded",
                )
        if progress is not None:
            progress(size, size)
        return self._result(data)

    async def _upload_bytes(
        self,
        data: bytes,
        file_name: str | None,
        max_bytes: int | None,
        progress: UploadProgress | None,
    ) -> UploadedFile:
        mime = check_audio_bytes(data, name=file_name or "the bytes", max_bytes=max_bytes)
        name = _check_file_name(file_name, f"audio-{secrets.token_hex(4)}{extension_for(mime)}")
        if len(data) <= BASE64_LIMIT:
            answer = await self._transport.call(
                "POST",
                self._url(self.profile.upload_base64_path),
                json_body={
                    "base64Data": base64.b64encode(data).decode("ascii"),
                    "uploadPath": UPLOAD_PATH,
                    "fileName": name,
                },
            )
        else:
            answer = await self._transport.call(
                "POST",
                self._url(self.profile.upload_stream_path),
                body=lambda: self._form(data, name, mime),
            )
        if progress is not None:
            progress(len(data), len(data))
        return self._result(answer)

    async def upload_from_url(self, url: str, *, file_name: str | None = None) -> UploadedFile:
        """See ``AddVocalsClient.upload_from_url``."""
        parsed = require_url("url", url)
        fallback = parsed.name or f"audio-{secrets.token_hex(4)}.mp3"
        name = _check_file_name(file_name, fallback)
        data = await self._transport.call(
            "POST",
            self._url(self.profile.upload_url_path),
            json_body={"fileUrl": str(url), "uploadPath": UPLOAD_PATH, "fileName": name},
        )
        return self._result(data)

    @staticmethod
    def _form(file: IO[bytes] | bytes, name: str, mime: str) -> aiohttp.FormData:
        form = aiohttp.FormData()
        form.add_field("uploadPath", UPLOAD_PATH)
        form.add_field("fileName", name)
        form.add_field("file", file, filename=name, content_type=mime)
        return form
