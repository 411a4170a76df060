"""Downloads of generated files: atomic, no-clobber, and safe against what a callback says.

Track ids and URLs arrive in callbacks, whose bodies nobody signs (kie signs only the task
id and the time), so the host a download talks to may be anyone's:

- a file name is never taken from them as it is (an unsafe id becomes a hash; the URL's
  extension is kept only when it is one of the kind's, else ``.mp3`` / ``.jpeg``);
- the whole download has a deadline (``timeout``) and each read a stall limit (the client's
  ``request_timeout``), so a trickle or a stall ends;
- at most ``max_bytes`` are written, counted after decompression (a gzip bomb);
- only the kind asked for is saved: by Content-Type, and by the first bytes when the type is
  missing or generic; a page or JSON is refused whatever its type says.

Every refusal is an ``AddVocalsError``, and the file, written aside, is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path

import aiohttp
import yarl

from ._audio import looks_like_audio
from ._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    DownloadExistsError,
    NotFoundError,
    RequestValidationError,
)
from ._models import Track
from ._providers import ProviderProfile, make_api_error
from ._validation import require_url

__all__ = ["ProgressCallback", "download", "download_url"]

ProgressCallback = Callable[[int, "int | None"], None]
"""``progress(received_bytes, total_bytes_or_None)``, called as a download advances."""


DEFAULT_MAX_BYTES = {"audio": 200 * 1024 * 1024, "image": 20 * 1024 * 1024}
"""The most a download writes, by kind, unless ``max_bytes=`` says otherwise. A generated
track lasts at most about eight minutes: some 20 MB as a 320 kbit/s MP3 and about 85 MB
even as uncompressed 16-bit stereo WAV, so 200 MB is more than twice the largest real file
while a host that sends without end (or a small gzip answer that inflates to gigabytes)
cannot fill the disk. A cover image is well under 1 MB; 20 MB is generous."""

MIN_DEFAULT_TIMEOUT = 300.0
TIMEOUT_PER_REQUEST_TIMEOUT = 20
"""The default total time of a download: 20 × ``request_timeout`` (10 minutes at the default
30 s), and never under 5 minutes. ``request_timeout`` bounds one small JSON answer; a file
of up to 200 MB over a slow link takes many reads, each of which must make progress within
``request_timeout`` (the stall limit), and all of which must end within the total."""


def default_timeout(request_timeout: float) -> float:
    """The total time limit a download gets when ``timeout=`` is not given."""
    return max(MIN_DEFAULT_TIMEOUT, TIMEOUT_PER_REQUEST_TIMEOUT * request_timeout)


async def download(
    session: aiohttp.ClientSession,
    track: Track,
    dest: str | os.PathLike[str],
    *,
    profile: ProviderProfile,
    request_timeout: float,
    kind: str = "audio",
    overwrite: bool = False,
    allow_stream: bool = False,
    progress: ProgressCallback | None = None,
    timeout: float | None = None,
    max_bytes: int | None = None,
) -> Path:
    """Save a track's audio (``kind="audio"``) or cover (``kind="image"``) to ``dest``;
    see ``AddVocalsClient.download``.

    Connecting, and each read, must make progress within ``request_timeout`` (the stall
    limit); the whole download must end within ``timeout`` (``default_timeout``); at most
    ``max_bytes`` (``DEFAULT_MAX_BYTES[kind]``) are written, counted after decompression.
    """
    url = download_url(track, kind, allow_stream)
    total_time = _check_timeout(timeout, request_timeout)
    limit = _check_max_bytes(max_bytes, kind)
    target = _download_target(dest, track, url, kind, overwrite=overwrite)
    client_timeout = aiohttp.ClientTimeout(
        total=total_time, sock_connect=request_timeout, sock_read=request_timeout
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total_time
    # Created like any new file (the umask applies), unlike mkstemp's owner-only 0600.
    temp_name = str(target.with_name(f".{target.name}.{secrets.token_hex(4)}.part"))
    fd = os.open(temp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                async with session.get(url, timeout=client_timeout) as response:
                    if response.status in (403, 404, 410):
                        raise NotFoundError(
                            response.status,
                            "the file is gone: results are kept about 14 days "
                            "(some hosts expire sooner), so download promptly",
                            http_status=response.status,
                        )
                    if response.status >= 400:
                        raise make_api_error(
                            profile,
                            response.status,
                            f"downloading {kind} failed",
                            http_status=response.status,
                            from_envelope=False,
                        )
                    must_sniff = _check_content_type(response, kind)
                    # aiohttp inflates compressed bodies: a compressed length says
                    # nothing about the bytes that arrive, so only check plain ones.
                    encoding = response.headers.get("Content-Encoding", "identity")
                    plain = encoding.strip().lower() in ("", "identity")
                    total = response.content_length if plain else None
                    if total is not None and total > limit:
                        raise APIConnectionError(
                            f"the {kind} file is {total} bytes, over the {limit} allowed "
                            "(max_bytes=)"
                        )
                    received = 0
                    # The first bytes are held back until they show what the file is.
                    head: bytearray | None = bytearray()
                    async for data in response.content.iter_chunked(65536):
                        if loop.time() > deadline:  # a trickle that never stalls
                            raise asyncio.TimeoutError
                        held = len(head) if head is not None else 0
                        if received + held + len(data) > limit:
                            raise APIConnectionError(
                                f"the {kind} file is over the {limit} bytes allowed "
                                "(max_bytes=); nothing was kept"
                            )
                        chunk = data
                        if head is not None:
                            head += data
                            if len(head) < _SNIFF_BYTES:
                                continue
                            chunk = bytes(head)
                            head = None
                            _check_first_bytes(response, chunk, kind, must_sniff)
                        out.write(chunk)
                        received += len(chunk)
                        if progress is not None:
                            progress(received, total)
                    if head is not None:  # the whole file is shorter than what is sniffed
                        _check_first_bytes(response, bytes(head), kind, must_sniff)
                        out.write(head)
                        received += len(head)
                        if progress is not None:
                            progress(received, total)
            except asyncio.TimeoutError as exc:
                raise _timeout_error(exc, kind, loop.time() >= deadline, total_time,
                                     request_timeout) from exc  # fmt: skip
            except aiohttp.ClientError as exc:
                raise APIConnectionError(f"downloading {kind} failed: {exc}") from exc
            if total is not None and received != total:
                raise APIConnectionError(f"download incomplete: got {received} of {total} bytes")
        _finish_download(temp_name, target, overwrite=overwrite)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    return target


def _check_timeout(timeout: float | None, request_timeout: float) -> float:
    if timeout is None:
        return default_timeout(request_timeout)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not 0 < timeout < float("inf")
    ):
        raise RequestValidationError(
            "timeout", timeout, "must be a positive, finite number of seconds"
        )
    return float(timeout)


def _check_max_bytes(max_bytes: int | None, kind: str) -> int:
    if max_bytes is None:
        return DEFAULT_MAX_BYTES.get(kind, DEFAULT_MAX_BYTES["audio"])
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise RequestValidationError("max_bytes", max_bytes, "must be a positive whole number")
    return max_bytes


def _timeout_error(
    exc: BaseException, kind: str, past_deadline: bool, total: float, stall: float
) -> APITimeoutError:
    if past_deadline:
        return APITimeoutError(
            f"downloading {kind} did not finish within {total:g} s (timeout=); nothing was kept"
        )
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return APITimeoutError(f"downloading {kind}: could not connect within {stall:g} s")
    return APITimeoutError(
        f"downloading {kind}: the host sent nothing for {stall:g} s (request_timeout); "
        "nothing was kept"
    )


def download_url(track: Track, kind: str, allow_stream: bool) -> str:
    if kind == "image":
        url = track.image_url
    elif kind == "audio":
        url = track.audio_url
        if not url and allow_stream:
            url = track.stream_audio_url
        if not url:
            raise RequestValidationError(
                "track",
                track.id,
                "has no final audio yet (audio_url is empty): wait for task.complete(), "
                "or pass allow_stream=True to save the stream, which is not the final file",
            )
    else:
        raise RequestValidationError("kind", kind, "must be 'audio' or 'image'")
    require_url(f"track.{kind}_url", url)
    return url


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_SUFFIXES = {
    "audio": frozenset({".mp3", ".wav", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac"}),
    "image": frozenset({".jpeg", ".jpg", ".png", ".webp", ".gif"}),
}
"""The only extensions a file name takes from a URL, by kind: a URL ending in ``.sh`` or
``.exe`` names the file ``<id>.mp3`` (or ``.jpeg``), never something a click would run."""


def _file_name(track: Track, url: str, kind: str) -> str:
    """A file name for a track inside a folder. Track ids and URLs come from callbacks,
    whose bodies nobody signs: an id such as ``../../x`` must not leave the folder, so
    anything but a plain id becomes a hash of it."""
    name = track.id
    if not _SAFE_NAME.fullmatch(name):
        name = "track-" + hashlib.sha256(name.encode("utf-8", "replace")).hexdigest()[:16]
    suffix = Path(yarl.URL(url).path).suffix.lower()
    if suffix not in _SUFFIXES.get(kind, ()):
        suffix = ".mp3" if kind == "audio" else ".jpeg"
    return name + suffix


_SNIFF_BYTES = 16
"""How many leading bytes are held back and checked before anything is written."""

_GENERIC_TYPES = frozenset(
    {
        "",
        "application/octet-stream",
        "binary/octet-stream",
        "application/binary",
        "application/unknown",
        "application/download",
        "application/force-download",
        "application/x-download",
    }
)
"""Content types that say nothing about the file: its first bytes decide."""

_AUDIO_TYPES = frozenset({"application/ogg", "application/mp4", "video/mp4", "video/ogg"})
"""Audio under a non-``audio/`` type (M4A is often served as MP4, Ogg as application)."""

_IMAGE_TYPES = frozenset(
    {"image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/webp", "image/gif"}
)
"""Raster images only: an SVG is XML that may carry scripts."""


def _check_content_type(response: aiohttp.ClientResponse, kind: str) -> bool:
    """Refuse an answer typed as anything but the ``kind`` asked for (a host's error page:
    an expired link, a login wall, a problem+json). Returns True when the type says
    nothing (missing or generic), so the first bytes must prove the kind."""
    raw = response.headers.get("Content-Type")
    ctype = response.content_type.lower() if raw else ""
    if ctype in _GENERIC_TYPES:
        return True
    if kind == "audio" and (ctype.startswith("audio/") or ctype in _AUDIO_TYPES):
        return False
    if kind == "image" and ctype in _IMAGE_TYPES:
        return False
    raise APIError(
        response.status,
        f"the file host answered with {ctype} instead of the {kind} "
        "(an error page, an expired link or an access page?); nothing was kept",
        http_status=response.status,
    )


_MARKUP_STARTS = (b"<!doctype", b"<html", b"<?xml", b"<head", b"<body", b"<!--", b"{", b"[")


def _looks_like(kind: str, head: bytes) -> bool:
    """Whether the first bytes are those of an audio file (MP3, WAV, FLAC, Ogg, M4A, AIFF)
    or of an image (JPEG, PNG, WebP, GIF)."""
    if kind == "audio":
        return looks_like_audio(head)
    return head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")) or (
        head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    )


def _check_first_bytes(
    response: aiohttp.ClientResponse, head: bytes, kind: str, must_sniff: bool
) -> None:
    """Refuse a body that is a page or JSON whatever its type says, and one of a generic
    or missing type whose first bytes are not those of the ``kind`` asked for."""
    if not head:
        raise APIError(
            response.status,
            f"the file host sent an empty answer instead of the {kind}",
            http_status=response.status,
        )
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if start.startswith(_MARKUP_STARTS):
        raise APIError(
            response.status,
            f"the file host sent a web page or JSON instead of the {kind} "
            "(an error page, an expired link or an access page?); nothing was kept",
            http_status=response.status,
        )
    if must_sniff and not _looks_like(kind, head):
        raise APIError(
            response.status,
            f"the file host's answer does not look like {kind} (its first bytes are "
            f"{head[:8].hex(' ')}, and its type says nothing); nothing was kept",
            http_status=response.status,
        )


def is_folder(dest: str | os.PathLike[str]) -> bool:
    """The rule for ``dest``: a folder when it is one already, when it ends in a path
    separator (``"songs/"``), or when its name has no suffix (``"songs"``, to be created);
    a file name when it has one (``"take1.mp3"``)."""
    text = os.fspath(dest)
    path = Path(text)
    return path.is_dir() or text.endswith(("/", os.sep)) or not path.suffix


def _download_target(
    dest: str | os.PathLike[str], track: Track, url: str, kind: str, *, overwrite: bool
) -> Path:
    """The file a download writes: ``dest``, or a file named after the track inside it."""
    if is_folder(dest):
        folder = Path(dest)
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / _file_name(track, url, kind)
    dest = Path(dest)
    if dest.exists() and not overwrite:
        # filename says which file: a caller may keep it and go on
        raise DownloadExistsError(str(dest), "exists; pass overwrite=True to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest


_APPEARED = "appeared meanwhile; not overwriting it"


def _finish_download(temp_name: str, target: Path, *, overwrite: bool) -> None:
    """Put the finished file in place. Without ``overwrite`` a hard link makes "only if
    absent" atomic, even against another process; where links are not supported, the
    existence check and the rename come as close as a filesystem allows."""
    if overwrite:
        os.replace(temp_name, target)
        return
    try:
        os.link(temp_name, target)
    except FileExistsError:
        raise DownloadExistsError(str(target), "appeared meanwhile; not overwriting it") from None
    except OSError:
        if target.exists():
            raise DownloadExistsError(
                str(target), "appeared meanwhile; not overwriting it"
            ) from None
        os.replace(temp_name, target)
        return
    os.unlink(temp_name)
