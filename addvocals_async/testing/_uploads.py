"""The simulator's file side: the upload host (sunoapi, kie) and the fetch of ``uploadUrl``.

Upload routes, as API-SPEC §7 documents them on both hosts:

- ``POST /api/file-stream-upload``: multipart ``file``, ``uploadPath``, ``fileName``;
- ``POST /api/file-base64-upload``: JSON ``base64Data`` (raw or a ``data:`` URL), ...;
- ``POST /api/file-url-upload``: JSON ``fileUrl``, ...; fetched only on loopback.

Answers are the envelope plus ``"success": true``; errors 400 (a missing part, bad
base64, a URL it cannot fetch), 401 (the key), 405 and 500 (queued with
``Simulator.fail_uploads``). Uploaded files are written to a temporary folder as they
arrive, never held whole in memory, and served at ``/uploads/<fileId>/<fileName>``
until the provider's retention (3 days sunoapi, 24 hours kie, on the scaled clock) ends.

Like the real API, the simulator fetches each task's ``uploadUrl`` when it points at
loopback (a receiver's ``serve_file``, an upload above); it never fetches from anywhere
else, nor follows a redirect off loopback. A fetch that fails (no answer, not 2xx, empty,
not audio) fails the task the provider's way: kie answers the submit 451, apibox and
sunoapi send an error callback 451.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import yarl
from aiohttp import web

from .._audio import SNIFF_BYTES, audio_type
from ._state import SimState

__all__ = ["FetchResult", "UploadHost", "UploadedRecord", "is_loopback_url"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5

_CHUNK = 256 * 1024
_MAX_JSON = 150 * 1024 * 1024  # a base64 body: the advised 100 MB, encoded
_MAX_FETCH = 250 * 1024 * 1024
FETCH_TIMEOUT = 30.0
"""kie's documented fetch timeout for URL uploads; the simulator uses it, in real seconds,
as the stall limit of every fetch it makes."""


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` points at this machine (127.0.0.0/8, ``::1``, ``localhost``)."""
    try:
        host = yarl.URL(url).host
    except (ValueError, TypeError):
        return False
    if not host:
        return False
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@attrs.define
class UploadedRecord:
    """One file on the simulated upload host."""

    file_id: str
    file_name: str
    upload_path: str
    path: Path
    size: int
    mime_type: str
    sha256: str
    uploaded_at: float
    expires_at: float
    route: str


@attrs.frozen
class FetchResult:
    """What fetching a URL gave: the bytes' size and digest, or why it failed."""

    size: int = 0
    sha256: str = ""
    mime_type: str | None = None
    error: str | None = None


class UploadHost:
    """The upload routes, the uploaded files, and the fetcher of loopback URLs."""

    def __init__(self, state: SimState) -> None:
        self._state = state
        self._folder: Path | None = None
        self._session: aiohttp.ClientSession | None = None
        self.files: dict[str, UploadedRecord] = {}
        self.faults: collections.deque[int] = collections.deque()

    def open(self) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="addvocals-sim-uploads-"))
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(
                total=4 * FETCH_TIMEOUT, sock_connect=FETCH_TIMEOUT, sock_read=FETCH_TIMEOUT
            ),
            auto_decompress=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    def paths(self) -> tuple[str, str, str]:
        profile = self._state.profile
        return (profile.upload_stream_path, profile.upload_base64_path, profile.upload_url_path)

    # ------------------------------------------------------------------ the routes

    async def handle(self, request: web.Request) -> tuple[int, str | None, Any]:
        """An upload request (authorized already): ``(code, msg, data)`` for the envelope."""
        if self.faults:
            return self.faults.popleft(), None, None
        profile = self._state.profile
        if request.path == profile.upload_stream_path:
            return await self._stream(request)
        body = await self._json(request)
        if not isinstance(body, dict):
            return 400, "the body must be a JSON object", None
        upload_path = str(body.get("uploadPath") or "")
        name = body.get("fileName")
        if request.path == profile.upload_base64_path:
            return await self._base64(body.get("base64Data"), upload_path, name)
        return await self._from_url(body.get("fileUrl"), upload_path, name)

    async def _json(self, request: web.Request) -> Any:
        raw = bytearray()
        async for chunk in request.content.iter_chunked(_CHUNK):
            raw += chunk
            if len(raw) > _MAX_JSON:
                return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    async def _stream(self, request: web.Request) -> tuple[int, str | None, Any]:
        if not request.content_type.startswith("multipart/"):
            return 400, "multipart/form-data with a 'file' part is required", None
        reader = await request.multipart()
        fields: dict[str, str] = {}
        stored: tuple[Path, int, str, str] | None = None
        original = ""
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, aiohttp.BodyPartReader):
                continue
            if part.name == "file" and stored is None:
                original = part.filename or ""
                stored = await self._write(part)
            elif part.name in ("uploadPath", "fileName"):
                fields[part.name] = (await part.read(decode=True))[:1000].decode(errors="replace")
            else:
                await part.release()
        if stored is None:
            return 400, "the 'file' part is missing", None
        name = fields.get("fileName") or original or None
        return 200, "success", self._record(stored, fields.get("uploadPath", ""), name, "stream")

    async def _write(self, part: aiohttp.BodyPartReader) -> tuple[Path, int, str, str]:
        assert self._folder is not None
        target = self._folder / secrets.token_hex(16)
        digest = hashlib.sha256()
        size = 0
        head = b""
        # A local temporary file: a 256 KB write does not hold the loop up for long.
        with open(target, "wb") as out:  # noqa: ASYNC230
            while True:
                chunk = await part.read_chunk(_CHUNK)
                if not chunk:
                    break
                if len(head) < SNIFF_BYTES:
                    head += chunk[: SNIFF_BYTES - len(head)]
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        ctype = part.headers.get("Content-Type", "application/octet-stream")
        return target, size, audio_type(head) or ctype, digest.hexdigest()

    async def _base64(
        self, data: object, upload_path: str, name: object
    ) -> tuple[int, str | None, Any]:
        if not isinstance(data, str) or not data:
            return 400, "base64Data is required", None
        if data.startswith("data:"):
            data = data.partition(",")[2]
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            return 400, "base64Data is not valid base64", None
        assert self._folder is not None
        target = self._folder / secrets.token_hex(16)
        target.write_bytes(raw)
        mime = audio_type(raw[:SNIFF_BYTES]) or "application/octet-stream"
        stored = (target, len(raw), mime, hashlib.sha256(raw).hexdigest())
        return 200, "success", self._record(stored, upload_path, _name(name), "base64")

    async def _from_url(
        self, url: object, upload_path: str, name: object
    ) -> tuple[int, str | None, Any]:
        if not isinstance(url, str) or not url:
            return 400, "fileUrl is required", None
        assert self._folder is not None
        target = self._folder / secrets.token_hex(16)
        result = await self.fetch(url, keep=target)
        if result.error is not None:
            return 400, f"could not fetch fileUrl: {result.error}", None
        stored = (
            target,
            result.size,
            result.mime_type or "application/octet-stream",
            result.sha256,
        )
        fallback = yarl.URL(url).name or None
        return 200, "success", self._record(stored, upload_path, _name(name) or fallback, "url")

    def _record(
        self, stored: tuple[Path, int, str, str], upload_path: str, name: str | None, route: str
    ) -> dict[str, Any]:
        state = self._state
        target, size, mime, digest = stored
        file_id = secrets.token_hex(12)
        file_name = name or f"{secrets.token_hex(8)}{_EXT.get(mime, '.bin')}"
        retention = state.scaled(state.profile.upload_retention or 3 * 86_400.0)
        now = time.monotonic()
        record = UploadedRecord(
            file_id=file_id,
            file_name=file_name,
            upload_path=upload_path,
            path=target,
            size=size,
            mime_type=mime,
            sha256=digest,
            uploaded_at=now,
            expires_at=now + retention,
            route=route,
        )
        self.files[file_id] = record
        assert state.base_url is not None
        url = state.base_url / "uploads" / file_id / file_name
        wall = datetime.now(timezone.utc)
        return {
            "fileId": file_id,
            "fileName": file_name,
            "originalName": file_name,
            "fileSize": size,
            "mimeType": mime,
            "uploadPath": upload_path,
            "fileUrl": str(url),
            "downloadUrl": str(url.with_query(download="1")),
            "uploadTime": wall.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "expiresAt": (wall + timedelta(seconds=retention))
            .isoformat(timespec="seconds")
            .replace("+00:00", "Z"),
        }

    def serve(self, request: web.Request) -> web.StreamResponse:
        """``GET``/``HEAD /uploads/<fileId>/<fileName>`` until retention ends."""
        parts = request.path.split("/")
        record = self.files.get(parts[2]) if len(parts) == 4 else None
        if (
            request.method not in ("GET", "HEAD")
            or record is None
            or parts[3] != record.file_name
            or time.monotonic() >= record.expires_at
        ):
            return web.Response(status=404, text="Not Found")
        return web.FileResponse(record.path, headers={"Content-Type": record.mime_type})

    # ------------------------------------------------------------------ fetching

    async def fetch(self, url: str, *, keep: Path | None = None) -> FetchResult:
        """GET ``url`` as the API would fetch an instrumental: only loopback, at most 250 MB,
        a 2xx answer whose first bytes are audio. ``keep`` writes the bytes there."""
        if not is_loopback_url(url):
            return FetchResult(error="the simulator fetches only loopback URLs")
        assert self._session is not None
        digest = hashlib.sha256()
        size = 0
        head = b""
        try:
            for _ in range(_MAX_REDIRECTS + 1):
                # Redirects followed by hand: every hop must stay on loopback too.
                async with self._session.get(url, allow_redirects=False) as answer:
                    location = answer.headers.get("Location")
                    if answer.status in _REDIRECTS and location is not None:
                        url = str(answer.url.join(yarl.URL(location)))
                        if not is_loopback_url(url):
                            return FetchResult(error="redirected off loopback: not fetched")
                        continue
                    if not 200 <= answer.status < 300:
                        return FetchResult(error=f"HTTP {answer.status}")
                    with open(keep, "wb") if keep is not None else _Discard() as out:  # noqa: ASYNC230
                        async for chunk in answer.content.iter_chunked(_CHUNK):
                            if len(head) < SNIFF_BYTES:
                                head += chunk[: SNIFF_BYTES - len(head)]
                            digest.update(chunk)
                            out.write(chunk)
                            size += len(chunk)
                            if size > _MAX_FETCH:
                                return FetchResult(error="over 250 MB")
                    break
            else:
                return FetchResult(error=f"over {_MAX_REDIRECTS} redirects")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return FetchResult(error=f"{type(exc).__name__}: {exc}"[:200])
        if size == 0:
            return FetchResult(error="an empty answer")
        mime = audio_type(head)
        if mime is None:
            return FetchResult(error="the file is not audio")
        return FetchResult(size=size, sha256=digest.hexdigest(), mime_type=mime)


class _Discard:
    def __enter__(self) -> _Discard:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def write(self, chunk: bytes) -> int:
        return len(chunk)


def _name(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return os.path.basename(value.replace("\\", "/"))[:200] or None


_EXT = {
    "audio/mpeg": ".mp3",
    "audio/wav": ".wav",
    "audio/flac": ".flac",
    "audio/ogg": ".ogg",
    "audio/mp4": ".m4a",
}
