"""The data the SDK works with, as attrs classes that know nothing of wire names.

Wire spellings, formats and quirks live in ``_convert``; the rules a request must meet
live in ``_validation`` and are checked when an ``AddVocalsRequest`` is built, so that
nothing invalid is ever sent.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, overload

import attr  # attrs under its first name: aiohttp imports it, the `attrs` alias costs ~0.5 ms

from ._validation import validate_request

__all__ = [
    "AddVocalsRequest",
    "CallbackEvent",
    "Stage",
    "TaskDetails",
    "TaskResult",
    "Track",
    "Tracks",
    "UploadedFile",
]


class Stage(str, enum.Enum):
    """Where a task stands. Stages only move forward: pending < text < first < complete;
    failed is terminal and may follow any non-terminal stage.

    This enum is the one table of stages: its order, which stages end a task, and which
    waits a stage satisfies (``complete`` satisfies ``text()`` and ``first()``, so a
    skipped stage never leaves a waiter behind).
    """

    PENDING = "pending"
    TEXT = "text"
    FIRST = "first"
    COMPLETE = "complete"
    FAILED = "failed"

    @property
    def rank(self) -> int:
        """Position in the one-way order; a task never moves to a lower or equal rank."""
        return _RANK[self]

    @property
    def is_terminal(self) -> bool:
        return self is Stage.COMPLETE or self is Stage.FAILED

    @property
    def covers(self) -> tuple[Stage, ...]:
        """The stages whose waits this stage satisfies (itself included); none for
        ``pending`` and ``failed``."""
        return _COVERS[self]

    def __str__(self) -> str:
        return self.value


_RANK = {stage: rank for rank, stage in enumerate(Stage)}
_PROGRESS = (Stage.TEXT, Stage.FIRST, Stage.COMPLETE)
_COVERS = {
    stage: _PROGRESS[: _PROGRESS.index(stage) + 1] if stage in _PROGRESS else () for stage in Stage
}
TERMINAL_STAGES = frozenset(stage for stage in Stage if stage.is_terminal)


def _model_value(value: Any) -> Any:
    """Enum members become their wire string; UncheckedModel and anything else pass
    through unchanged (validation judges them)."""
    if isinstance(value, enum.Enum):
        return value.value
    return value


@attr.frozen(kw_only=True)
class AddVocalsRequest:
    """One add-vocals submission, validated when built (``RequestValidationError``).

    ``callback_url`` may stay ``None`` when the client has a receiver or a default
    callback URL; optional fields left ``None`` are omitted from the request so that
    the provider's defaults apply.
    """

    upload_url: str
    prompt: str
    title: str
    style: str
    negative_tags: str
    callback_url: str | None = None
    vocal_gender: str | None = None
    style_weight: float | None = None
    weirdness_constraint: float | None = None
    audio_weight: float | None = None
    model: str | None = attr.field(default=None, converter=_model_value)
    lyrics: str | None = None
    variety: int | None = None

    def __attrs_post_init__(self) -> None:
        validate_request(self)


# ---------------------------------------------------------------- results


@attr.frozen(kw_only=True)
class Track:
    """One generated track. Before the ``complete`` stage any field may be empty:
    ``audio_url`` is ``""`` on a partial track and ``duration`` ``None``."""

    id: str = ""
    audio_url: str = ""
    stream_audio_url: str = ""
    image_url: str = ""
    prompt: str = ""
    model_name: str = ""
    title: str = ""
    tags: str = ""
    create_time: datetime | None = None
    duration: float | None = None
    source_audio_url: str = ""
    source_stream_audio_url: str = ""
    source_image_url: str = ""
    extra: Mapping[str, Any] = attr.field(factory=dict, hash=False)

    @property
    def is_finished(self) -> bool:
        """True when the final audio file is available."""
        return bool(self.audio_url)


class Tracks(Sequence[Track]):
    """The tracks of a callback: an immutable sequence, parsed from the wire when first read.

    The receiver answers a callback before anybody needs its tracks, and duplicates are
    never read at all, so parsing waits until then. It cannot fail: entries that are not
    JSON objects are dropped at once, and every field is read loosely. Compares equal to
    any sequence of the same tracks (a tuple, a list).
    """

    __slots__ = ("_parse", "_raw", "_tracks")

    def __init__(self, raw: Iterable[Any], parse: Callable[[Mapping[str, Any]], Track]) -> None:
        self._raw: Iterable[Any] = raw
        self._parse = parse
        self._tracks: tuple[Track, ...] | None = None

    def _all(self) -> tuple[Track, ...]:
        if self._tracks is None:
            parse = self._parse
            self._tracks = tuple(parse(item) for item in self._raw if isinstance(item, Mapping))
            self._raw = ()
        return self._tracks

    def __len__(self) -> int:
        return len(self._all())

    def __bool__(self) -> bool:
        # Asked by a wait before anybody reads the tracks: answered without parsing them.
        if self._tracks is None:
            return any(isinstance(item, Mapping) for item in self._raw)
        return bool(self._tracks)

    @overload
    def __getitem__(self, index: int) -> Track: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Track, ...]: ...

    def __getitem__(self, index: int | slice) -> Track | tuple[Track, ...]:
        return self._all()[index]

    def __iter__(self) -> Iterator[Track]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return self._all() == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._all())

    def __repr__(self) -> str:
        return repr(self._all())


_CALLBACK_STAGES = {stage.value: stage for stage in _PROGRESS}
"""A successful callback's ``callbackType`` is the name of the stage it reports."""
_ENDING_TYPES = frozenset({"error", Stage.COMPLETE.value})


@attr.frozen(kw_only=True)
class CallbackEvent:
    """One callback as received: ``callback_type`` as sent (``text``, ``first``,
    ``complete``, ``error`` or anything newer), the callback ``code`` and ``msg``."""

    task_id: str
    callback_type: str
    code: int
    msg: str = ""
    tracks: Sequence[Track] = ()
    extra: Mapping[str, Any] = attr.field(factory=dict, hash=False)

    @property
    def is_failure(self) -> bool:
        return self.callback_type == "error" or self.code != 200

    @property
    def ends_task(self) -> bool:
        """True for a failure or ``complete``: nothing after it moves the task."""
        return self.code != 200 or self.callback_type in _ENDING_TYPES

    @property
    def stage(self) -> Stage | None:
        """The stage this event reports, ``None`` for an unknown type (to be ignored)."""
        if self.is_failure:
            return Stage.FAILED
        return _CALLBACK_STAGES.get(self.callback_type)


_STATUS_STAGES: Mapping[str, Stage] = {
    "PENDING": Stage.PENDING,
    "GENERATING": Stage.PENDING,
    "TEXT_SUCCESS": Stage.TEXT,
    "FIRST_SUCCESS": Stage.FIRST,
    "SUCCESS": Stage.COMPLETE,
    "CREATE_TASK_FAILED": Stage.FAILED,
    "GENERATE_AUDIO_FAILED": Stage.FAILED,
    "SENSITIVE_WORD_ERROR": Stage.FAILED,
    "FAILED": Stage.FAILED,
}


@attr.frozen(kw_only=True)
class TaskDetails:
    """What the details endpoint (record-info) says about a task.

    ``status`` is kept as sent; ``stage`` is its reading (``None`` for a status this
    release does not know: keep waiting). ``param`` is the request as the API stored it,
    decoded from its JSON string when possible, else the raw text.
    """

    task_id: str
    status: str = ""
    tracks: tuple[Track, ...] = ()
    param: Any = None
    error_code: int | None = None
    error_message: str | None = None
    type: str | None = None
    operation_type: str | None = None
    parent_music_id: str = ""
    extra: Mapping[str, Any] = attr.field(factory=dict, hash=False)

    @property
    def stage(self) -> Stage | None:
        if self.status == "CALLBACK_EXCEPTION":
            # The task ran but its callback delivery failed: done if the tracks are there.
            finished = bool(self.tracks) and all(t.is_finished for t in self.tracks)
            return Stage.COMPLETE if finished else Stage.FAILED
        return _STATUS_STAGES.get(self.status)

    @property
    def is_terminal(self) -> bool:
        stage = self.stage
        return stage is not None and stage.is_terminal


@attr.frozen(kw_only=True)
class TaskResult:
    """What a wait returns: the stage reached and the tracks known at that point.

    ``source`` says where it came from (``"callback"`` or ``"poll"``).
    """

    task_id: str
    stage: Stage
    tracks: Sequence[Track] = ()
    code: int = 200
    msg: str = ""
    source: str = "callback"

    @property
    def lyrics(self) -> str | None:
        """The lyrics as sung, when a track carries them (the ``text`` stage itself
        carries no data; the lyrics arrive with the first track)."""
        for track in self.tracks:
            if track.prompt:
                return track.prompt
        return None


@attr.frozen(kw_only=True)
class UploadedFile:
    """A file on the provider's upload host, as its answer describes it.

    Pass ``file_url`` (or ``download_url``) as ``upload_url`` and submit soon: the file
    expires at ``expires_at`` (3 days on sunoapi, 24 hours on kie). Fields the answer
    lacks are empty (``""``, ``None``); unknown ones are kept in ``extra``.
    """

    file_url: str
    download_url: str = ""
    expires_at: datetime | None = None
    size: int | None = None
    mime_type: str | None = None
    file_id: str = ""
    file_name: str = ""
    extra: Mapping[str, Any] = attr.field(factory=dict, repr=False)

    @property
    def url(self) -> str:
        """The URL to send as ``upload_url``: ``file_url``, else ``download_url``."""
        return self.file_url or self.download_url
