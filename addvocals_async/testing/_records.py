"""What the simulator remembers, so that tests can assert on what really crossed the wire.

These records are deliberately plain and mutable: the simulator fills in an answer's status
after the request was recorded (a test watching a hanging submit already sees it arrived),
and a task's status moves as its lifecycle runs. Headers never appear in a repr, because a
request's ``Authorization`` header carries the API key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs

__all__ = ["Delivery", "RecordedRequest", "SimTask", "SimTrack"]


@attrs.define(eq=False)
class RecordedRequest:
    """One HTTP request the simulated API received, and what it answered.

    ``status`` is the HTTP status sent (``None`` while the answer is pending and for a
    dropped connection); ``code`` the envelope code sent, ``None`` when the answer was no
    envelope (a file, an HTML error page, nothing). ``task_id`` names the task a submit
    created or a details request asked about.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str] = attrs.field(repr=False)
    json: Any
    at: float
    status: int | None = None
    code: int | None = None
    task_id: str | None = None
    body: bytes = attrs.field(default=b"", repr=False)


@attrs.define(eq=False)
class Delivery:
    """One attempt to deliver a callback: ``attempt`` 0 is the first try, 1-3 the retries.

    ``status`` is the receiver's HTTP status, or ``None`` when it gave no answer in time or
    could not be reached (then ``error`` says why). ``at`` is when the attempt was sent
    (``time.monotonic()``); ``answered_at`` when it ended.
    """

    task_id: str
    callback_type: str
    attempt: int
    url: str
    body: dict[str, Any] = attrs.field(repr=False)
    headers: dict[str, str] = attrs.field(repr=False)
    at: float
    status: int | None = None
    error: str | None = None
    answered_at: float | None = None

    @property
    def ok(self) -> bool:
        """Whether the receiver acknowledged this attempt (any 2xx)."""
        return self.status is not None and 200 <= self.status < 300


@attrs.define(eq=False)
class SimTrack:
    """One generated track of a simulated task, with the URLs the simulator serves for it.

    ``audio_published_at`` and ``media_published_at`` (monotonic) say since when the final
    MP3, and the stream and cover image, have been handed out and are therefore served;
    retention counts from those moments.
    """

    id: str
    index: int
    title: str
    prompt: str
    tags: str
    model_name: str
    duration: float
    create_time: datetime
    audio_url: str
    stream_audio_url: str
    image_url: str
    source_audio_url: str
    source_stream_audio_url: str
    source_image_url: str
    frames: int
    gray: int
    audio_published_at: float | None = None
    media_published_at: float | None = None


@attrs.define(eq=False)
class SimTask:
    """A task the simulator created: its scenario, the submit body, and where it stands.

    ``status`` is what record-info answers right now; ``stage`` the furthest documented
    stage reached (``"pending"``, ``"text"``, ``"first"``, ``"complete"``, ``"failed"``),
    which decides the track data shown. ``finished`` turns true when the scripted lifecycle
    has run to its end (deliveries may still be retrying).
    """

    task_id: str
    scenario: str
    callback_url: str
    request: dict[str, Any]
    tracks: list[SimTrack]
    created_at: float
    options: dict[str, Any] = attrs.field(factory=dict)
    status: str = "PENDING"
    stage: str = "pending"
    error_code: int | None = None
    error_message: str | None = None
    finished: bool = False
    details_answered: int = 0
    input_size: int | None = None
    """Bytes the simulator fetched from ``uploadUrl`` (loopback URLs only), or ``None``."""
    input_sha256: str | None = None
    input_error: str | None = None
    """Why fetching ``uploadUrl`` failed, when it did."""
