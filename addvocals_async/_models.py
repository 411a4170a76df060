"""The data the SDK works with, as attrs classes that know nothing of wire names.

Wire spellings, formats and quirks live in ``_convert``; rules about requests live here,
checked when an ``AddVocalsRequest`` is built so that nothing invalid is ever sent.
"""

from __future__ import annotations

import enum
import math
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, overload

import attrs
import yarl

from ._errors import RequestValidationError
from ._providers import KNOWN_MODELS, Field, LengthLimits, limits_for

__all__ = [
    "AddVocalsRequest",
    "CallbackEvent",
    "Stage",
    "TaskDetails",
    "TaskResult",
    "Track",
    "Tracks",
    "UncheckedModel",
]


class Stage(str, enum.Enum):
    """Where a task stands. Stages only move forward: pending < text < first < complete;
    failed is terminal and may follow any non-terminal stage."""

    PENDING = "pending"
    TEXT = "text"
    FIRST = "first"
    COMPLETE = "complete"
    FAILED = "failed"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STAGES

    def __str__(self) -> str:
        return self.value


TERMINAL_STAGES = frozenset({Stage.COMPLETE, Stage.FAILED})
_RANK = {Stage.PENDING: 0, Stage.TEXT: 1, Stage.FIRST: 2, Stage.COMPLETE: 3, Stage.FAILED: 4}


class UncheckedModel(str):
    """A ``model`` value newer than this release, passed on as it is.

    ``model="V7"`` is rejected as unknown (a typo costs a credit); ``model=UncheckedModel("V7")``
    says you mean it. Length limits then follow the common row of §2.1.
    """

    __slots__ = ()


# ---------------------------------------------------------------- request validation


def _require_text(field: str, value: object) -> None:
    if value is None:
        raise RequestValidationError(field, value, "is required")
    if not isinstance(value, str):
        raise RequestValidationError(field, value, f"must be a string, not {type(value).__name__}")
    if not value.strip():
        raise RequestValidationError(field, value, "is required and must not be empty")


def require_url(field: str, value: object) -> None:
    _require_text(field, value)
    assert isinstance(value, str)
    if value != value.strip():
        raise RequestValidationError(field, value, "must not start or end with white space")
    try:
        url = yarl.URL(value)
    except (ValueError, TypeError):
        raise RequestValidationError(field, value, "is not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.is_absolute() or not url.host:
        raise RequestValidationError(field, value, "must be an absolute http:// or https:// URL")


def _check_weight(field: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RequestValidationError(field, value, "must be a number between 0 and 1")
    x = float(value)
    if not math.isfinite(x):
        raise RequestValidationError(field, value, "must be a finite number between 0 and 1")
    if not 0.0 <= x <= 1.0:
        raise RequestValidationError(field, value, "must be between 0 and 1 inclusive")
    if abs(x * 100 - round(x * 100)) >= 1e-9:
        raise RequestValidationError(
            field, value, "must be a multiple of 0.01 (two decimal places, e.g. 0.61)"
        )


def _check_length(field: str, value: str | None, limit: int, model: str | None) -> None:
    if value is not None and len(value) > limit:
        which = f"model {model}" if model else "the default model"
        raise RequestValidationError(
            field, value, f"is {len(value)} characters; at most {limit} are allowed for {which}"
        )


def check_lengths(request: AddVocalsRequest, limits: LengthLimits) -> None:
    """Raise ``RequestValidationError`` when a text field is longer than ``limits`` allow."""
    model = request.model
    _check_length("prompt", request.prompt, limits.limit(Field.PROMPT), model)
    _check_length("lyrics", request.lyrics, limits.limit(Field.PROMPT), model)
    _check_length("style", request.style, limits.limit(Field.STYLE), model)
    _check_length("title", request.title, limits.limit(Field.TITLE), model)
    _check_length("negative_tags", request.negative_tags, limits.limit(Field.NEGATIVE_TAGS), model)


def _validate_request(request: AddVocalsRequest) -> None:
    require_url("upload_url", request.upload_url)
    if request.callback_url is not None:
        require_url("callback_url", request.callback_url)
    for name in ("prompt", "title", "style", "negative_tags"):
        _require_text(name, getattr(request, name))
    if request.lyrics is not None:
        _require_text("lyrics", request.lyrics)
    if request.vocal_gender is not None and request.vocal_gender not in ("m", "f"):
        raise RequestValidationError(
            "vocal_gender", request.vocal_gender, "must be 'm' or 'f' (or left out)"
        )
    for name in ("style_weight", "weirdness_constraint", "audio_weight"):
        _check_weight(name, getattr(request, name))
    variety = request.variety
    if variety is not None and (
        isinstance(variety, bool) or not isinstance(variety, int) or not 0 <= variety <= 4
    ):
        raise RequestValidationError(
            "variety", variety, "must be a whole number from 0 (off) to 4 (max)"
        )
    model = request.model
    if isinstance(model, UncheckedModel) and not model.strip():
        raise RequestValidationError("model", model, "UncheckedModel needs a model name")
    known_model = model is None or isinstance(model, UncheckedModel) or model in KNOWN_MODELS
    if not known_model:
        raise RequestValidationError(
            "model",
            model,
            f"is not a known model ({', '.join(KNOWN_MODELS)}); "
            "wrap a newer one as UncheckedModel(...) to send it anyway",
        )
    check_lengths(request, limits_for(model))


def _model_value(value: Any) -> Any:
    """Enum members become their wire string; UncheckedModel and anything else pass
    through unchanged (validation judges them)."""
    if isinstance(value, enum.Enum):
        return value.value
    return value


@attrs.frozen(kw_only=True)
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
    model: str | None = attrs.field(default=None, converter=_model_value)
    lyrics: str | None = None
    variety: int | None = None

    def __attrs_post_init__(self) -> None:
        _validate_request(self)


# ---------------------------------------------------------------- results


@attrs.frozen(kw_only=True)
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
    extra: Mapping[str, Any] = attrs.field(factory=dict, hash=False)

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


_CALLBACK_STAGES = {"text": Stage.TEXT, "first": Stage.FIRST, "complete": Stage.COMPLETE}


@attrs.frozen(kw_only=True)
class CallbackEvent:
    """One callback as received: ``callback_type`` as sent (``text``, ``first``,
    ``complete``, ``error`` or anything newer), the callback ``code`` and ``msg``."""

    task_id: str
    callback_type: str
    code: int
    msg: str = ""
    tracks: Sequence[Track] = ()
    extra: Mapping[str, Any] = attrs.field(factory=dict, hash=False)

    @property
    def is_failure(self) -> bool:
        return self.callback_type == "error" or self.code != 200

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


@attrs.frozen(kw_only=True)
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
    extra: Mapping[str, Any] = attrs.field(factory=dict, hash=False)

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


@attrs.frozen(kw_only=True)
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
