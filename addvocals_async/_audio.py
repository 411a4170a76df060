"""Local audio files, checked before a byte of them is sent anywhere.

The API fetches the instrumental from a URL and tells you only minutes later, in an error
callback, that it could not use it. A file that is missing, empty, a folder, too large or
not audio at all is refused here instead, at once, with a ``LocalFileError`` that names
the file and the problem.

"Audio" is decided by the first bytes, not the name: MP3 (an ID3 tag or an MPEG frame
sync), WAV (``RIFF....WAVE``), FLAC (``fLaC``), Ogg (``OggS``), M4A (``....ftyp``), AIFF
and ADTS AAC.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ._errors import LocalFileError, RequestValidationError

__all__ = [
    "DEFAULT_MAX_AUDIO_BYTES",
    "SNIFF_BYTES",
    "AudioFile",
    "audio_type",
    "check_audio_bytes",
    "check_audio_file",
    "check_max_bytes",
    "looks_like_audio",
]

DEFAULT_MAX_AUDIO_BYTES = 100 * 1024 * 1024
"""The largest instrumental sent unless ``max_bytes=`` says otherwise: 100 MiB, the size
kie advises at most for its URL uploads (API-SPEC §7); no provider states another limit.
An eight-minute 16-bit stereo WAV, the longest input a sibling page allows, is about
85 MB."""

SNIFF_BYTES = 64
"""How many first bytes decide whether a file is audio."""


def audio_type(head: bytes) -> str | None:
    """The MIME type the first bytes of an audio file say, or ``None`` when they are not
    those of MP3, WAV, FLAC, Ogg, M4A, AIFF or AAC."""
    if head.startswith(b"ID3"):
        return "audio/mpeg"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio/aiff"
    if head[4:8] == b"ftyp":
        return "audio/mp4"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        # An MPEG frame sync; layer bits 00 are ADTS (AAC), the rest MPEG audio (MP3).
        return "audio/aac" if head[1] & 0x06 == 0 else "audio/mpeg"
    return None


def looks_like_audio(head: bytes) -> bool:
    """Whether the first bytes are those of an audio file (see ``audio_type``)."""
    return audio_type(head) is not None


class AudioFile:
    """A local file that passed the checks: where it is, how big, and its MIME type.

    A plain class, not attrs: nothing compares or evolves it, and an attrs class costs
    about half a millisecond of ``import addvocals_async``."""

    __slots__ = ("mime_type", "path", "size")

    def __init__(self, path: Path, size: int, mime_type: str) -> None:
        self.path = path
        self.size = size
        self.mime_type = mime_type

    def __repr__(self) -> str:
        return f"AudioFile(path={self.path!r}, size={self.size!r}, mime_type={self.mime_type!r})"

    @property
    def name(self) -> str:
        return self.path.name


def check_max_bytes(max_bytes: int | None) -> int:
    """``max_bytes`` checked, or the default limit."""
    if max_bytes is None:
        return DEFAULT_MAX_AUDIO_BYTES
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise RequestValidationError("max_bytes", max_bytes, "must be a positive number of bytes")
    return max_bytes


def _mb(size: int) -> str:
    """In the unit of the limit (100 MiB), so that the limit reads as documented."""
    if size < 1 << 20:
        return f"{size} bytes"
    return f"{size / (1 << 20):.1f}".removesuffix(".0") + " MiB"


def check_audio_file(path: str | os.PathLike[str], *, max_bytes: int | None = None) -> AudioFile:
    """Check that ``path`` is a readable, regular, non-empty file of at most ``max_bytes``
    (``DEFAULT_MAX_AUDIO_BYTES``) whose first bytes are those of an audio file. Reads only
    those first bytes. Raises ``LocalFileError`` naming the problem."""
    limit = check_max_bytes(max_bytes)
    if not isinstance(path, (str, os.PathLike)):
        raise RequestValidationError("path", path, "must be a file path (str or pathlib.Path)")
    where = Path(path)
    try:
        info = os.stat(where)
    except FileNotFoundError:
        raise LocalFileError(where, "no such file") from None
    except OSError as exc:
        raise LocalFileError(where, f"cannot be read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise LocalFileError(where, "is a folder, not an audio file")
    if not stat.S_ISREG(info.st_mode):
        raise LocalFileError(where, "is not a regular file (a device, pipe or socket?)")
    if info.st_size == 0:
        raise LocalFileError(where, "is empty")
    if info.st_size > limit:
        raise LocalFileError(
            where,
            f"is {_mb(info.st_size)}, over the {_mb(limit)} limit "
            "(pass max_bytes= to allow more; the API may still refuse it)",
        )
    try:
        with open(where, "rb") as file:
            head = file.read(SNIFF_BYTES)
    except OSError as exc:
        raise LocalFileError(where, f"cannot be read: {exc.strerror or exc}") from None
    mime = audio_type(head)
    if mime is None:
        raise LocalFileError(where, _not_audio(head))
    return AudioFile(path=where, size=info.st_size, mime_type=mime)


def check_audio_bytes(data: bytes, *, name: str, max_bytes: int | None = None) -> str:
    """Check in-memory audio as ``check_audio_file`` checks a file; returns its MIME type."""
    limit = check_max_bytes(max_bytes)
    if not data:
        raise LocalFileError(name, "is empty")
    if len(data) > limit:
        raise LocalFileError(name, f"is {_mb(len(data))}, over the {_mb(limit)} limit")
    mime = audio_type(bytes(data[:SNIFF_BYTES]))
    if mime is None:
        raise LocalFileError(name, _not_audio(bytes(data[:SNIFF_BYTES])))
    return mime


def _not_audio(head: bytes) -> str:
    return (
        f"does not look like audio: its first bytes ({head[:8].hex(' ')}) are not those "
        "of an MP3, WAV, FLAC, Ogg, M4A, AIFF or AAC file"
    )
