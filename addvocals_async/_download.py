"""Downloads of generated files: atomic, no-clobber, and safe against what a callback says.

Track ids and URLs arrive in callbacks, whose bodies nobody signs (kie signs only the task
id and the time), so a file name is never taken from them as it is, and an answer that is
a web page instead of audio is refused rather than saved as ``.mp3``.
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

from ._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    NotFoundError,
    RequestValidationError,
)
from ._models import Track
from ._providers import ProviderProfile, make_api_error
from ._validation import require_url

__all__ = ["ProgressCallback", "download", "download_url"]

ProgressCallback = Callable[[int, "int | None"], None]
"""``progress(received_bytes, total_bytes_or_None)``, called as a download advances."""


async def download(
    session: aiohttp.ClientSession,
    track: Track,
    dest: str | os.PathLike[str],
    *,
    profile: ProviderProfile,
    connect_timeout: float,
    kind: str = "audio",
    overwrite: bool = False,
    allow_stream: bool = False,
    progress: ProgressCallback | None = None,
) -> Path:
    """Save a track's audio (``kind="audio"``) or cover (``kind="image"``) to ``dest``;
    see ``AddVocalsClient.download``."""
    url = download_url(track, kind, allow_stream)
    target = _download_target(Path(dest), track, url, kind, overwrite=overwrite)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=60)
    # Created like any new file (the umask applies), unlike mkstemp's owner-only 0600.
    temp_name = str(target.with_name(f".{target.name}.{secrets.token_hex(4)}.part"))
    fd = os.open(temp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                async with session.get(url, timeout=timeout) as response:
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
                    _refuse_error_page(response, kind)
                    # aiohttp inflates compressed bodies: a compressed length says
                    # nothing about the bytes that arrive, so only check plain ones.
                    encoding = response.headers.get("Content-Encoding", "identity")
                    plain = encoding.strip().lower() in ("", "identity")
                    total = response.content_length if plain else None
                    received = 0
                    async for chunk in response.content.iter_chunked(65536):
                        out.write(chunk)
                        received += len(chunk)
                        if progress is not None:
                            progress(received, total)
            except asyncio.TimeoutError as exc:
                raise APITimeoutError(f"downloading {kind} timed out") from exc
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
_SAFE_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")


def _file_name(track: Track, url: str, kind: str) -> str:
    """A file name for a track inside a folder. Track ids and URLs come from callbacks,
    whose bodies nobody signs: an id such as ``../../x`` must not leave the folder, so
    anything but a plain id becomes a hash of it."""
    name = track.id
    if not _SAFE_NAME.fullmatch(name):
        name = "track-" + hashlib.sha256(name.encode("utf-8", "replace")).hexdigest()[:16]
    suffix = Path(yarl.URL(url).path).suffix
    if not _SAFE_SUFFIX.fullmatch(suffix):
        suffix = ".mp3" if kind == "audio" else ".jpeg"
    return name + suffix


def _refuse_error_page(response: aiohttp.ClientResponse, kind: str) -> None:
    """A 200 answer that is a web page or JSON is a host's error page (an expired link, a
    login wall), not the audio or image asked for."""
    if response.content_type in ("text/html", "application/json"):
        raise APIError(
            response.status,
            f"the file host sent a {response.content_type} page instead of the {kind} "
            "(an expired link or an access page?)",
            http_status=response.status,
        )


def _download_target(dest: Path, track: Track, url: str, kind: str, *, overwrite: bool) -> Path:
    """The file a download writes: ``dest``, or a file named after the track inside it."""
    if dest.is_dir():
        dest = dest / _file_name(track, url, kind)
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} exists; pass overwrite=True to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest


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
        raise FileExistsError(f"{target} appeared meanwhile; not overwriting it") from None
    except OSError:
        if target.exists():
            raise FileExistsError(f"{target} appeared meanwhile; not overwriting it") from None
        os.replace(temp_name, target)
        return
    os.unlink(temp_name)
