"""The one place that knows the wire format.

Every rename and format quirk of the wire lives here, over a single cattrs converter:
camelCase requests (``callBackUrl`` with a capital B, unset optionals omitted),
snake_case callbacks except ``callbackType``/``createTime``, camelCase record-info with
the legacy snake_case ``response.data``, ``param`` as a JSON string, ``createTime`` as
text or epoch milliseconds, ``data`` as ``null`` or ``[]``, and unknown fields kept in
``extra`` rather than refused. Parsing is loose; building is strict.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timezone, tzinfo
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import attr  # attrs under its first name: aiohttp imports it, the `attrs` alias costs ~0.5 ms
import yarl

from ._models import AddVocalsRequest, CallbackEvent, TaskDetails, Track, Tracks, UploadedFile

if TYPE_CHECKING:
    import cattrs

__all__ = [
    "NOT_JSON",
    "CallbackParseError",
    "WireFormat",
    "callback_task_id",
    "is_task_id",
    "parse_create_time",
    "parse_json",
    "wire",
]


def snake_case(name: str) -> str:
    """``audioUrl`` -> ``audio_url``; snake_case names are returned unchanged."""
    # The pattern is compiled on first use (re's cache), not at import.
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def camel_case(name: str) -> str:
    """``audio_url`` -> ``audioUrl``."""
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


class CallbackParseError(ValueError):
    """A callback body is not the documented shape (no JSON object, no task id)."""


NOT_JSON: Any = object()
"""What ``parse_json`` returns for text that is not JSON."""


class _NoFastParser(Exception):
    """orjson is not installed: ``parse_json`` goes on with the standard library."""


def _first_fast_loads(raw: str | bytes) -> Any:
    """``_fast_loads`` until the first bytes are parsed: it imports orjson (the ``speed``
    extra, every callback body is parsed here) and puts orjson's ``loads`` in its own
    place, or ``None`` without it. ``import addvocals_async`` doesn't pay for orjson."""
    global _fast_loads, _FastJSONError
    try:
        from orjson import JSONDecodeError, loads
    except ImportError:
        _fast_loads, _FastJSONError = None, _NoFastParser
        raise _NoFastParser from None
    _fast_loads, _FastJSONError = loads, JSONDecodeError
    return loads(raw)


_fast_loads: Callable[[str | bytes], Any] | None = _first_fast_loads
_FastJSONError: type[Exception] = _NoFastParser


# Every digit as "0", anything else as " ": a run of 19 zeros is a number of 19 digits.
_DIGITS_ONLY = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))
_LONG_NUMBER = b"0" * 19


def parse_json(raw: str | bytes) -> Any:
    """``raw`` parsed, or ``NOT_JSON``: never raises, also on nesting too deep to parse
    (``RecursionError``), which ``json.loads`` raises instead of ``ValueError``.

    With orjson installed (the ``speed`` extra) it parses bytes first, to the same result:
    what it refuses and the standard library takes (``NaN``, a lone surrogate escape, a
    byte order mark, nesting past 1,024) and any text with a run of 19 digits (an integer
    beyond 64 bits, which orjson reads as a float) go to ``json.loads`` as without it.
    """
    # bytes: what the receiver and the transport read (a regex for the digits takes ten
    # times longer than this whole check).
    if (
        _fast_loads is not None
        and isinstance(raw, bytes)
        and _LONG_NUMBER not in raw.translate(_DIGITS_ONLY)
    ):
        try:
            return _fast_loads(raw)
        except _FastJSONError:
            pass
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return NOT_JSON


_EPOCH_SECONDS_LIMIT = 100_000_000_000  # below this a number is seconds, above it milliseconds
_DIGITS = re.compile(r"-?[0-9]+")  # ASCII: str.isdigit() also takes "²", which int() refuses


def parse_create_time(value: object, naive_tz: tzinfo = timezone.utc) -> datetime | None:
    """Read ``createTime`` in any form seen: epoch milliseconds (number or digits),
    ``YYYY-MM-DD HH:MM:SS`` (zone-less, read in ``naive_tz``) or ISO 8601. ``None``
    for anything else: a bad timestamp never loses a track."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if _DIGITS.fullmatch(text):
            try:
                number = int(text)
            except ValueError:  # more digits than int() accepts: no real timestamp
                return None
            return parse_create_time(number, naive_tz)
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=naive_tz)
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
            if abs(seconds) >= _EPOCH_SECONDS_LIMIT:
                seconds /= 1000.0
            return datetime.fromtimestamp(seconds, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def _loose_str(value: object, _: object = None) -> str:
    """Text as text, numbers as their digits; anything else (null, objects, lists) as ""
    rather than its repr, which for a deeply nested value could not even be built."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return ""


def _loose_float(value: object, _: object = None) -> float | None:
    if value is None or isinstance(value, bool) or value == "":
        return None
    try:
        result = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float
        return None
    return result if result == result else None  # NaN means "unknown"


def _loose_int(value: object, _: object = None) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # exact: a detour through float would round beyond 2**53
    number = _loose_float(value)
    if number is None or number in (float("inf"), float("-inf")):
        return None
    return int(number)


def _web_url(value: object) -> str:
    """An absolute ``http``/``https`` URL with a host and no control character, else "":
    an upload host that answers ``5``, ``javascript:...`` or an escape sequence as a
    file's URL has named none."""
    text = _loose_str(value)
    if not text or len(text) > 8192 or not text.isprintable():
        return ""  # control characters would reach a terminal (addvocals upload) as is
    try:
        parsed = yarl.URL(text)
    except ValueError:
        return ""
    return text if parsed.scheme in ("http", "https") and parsed.host else ""


def callback_task_id(body: Mapping[str, Any]) -> str | None:
    """The task id of a callback body: ``data.task_id``, then top-level ``taskId``, then
    ``data.taskId`` (where kie's callbacks carry the task id its signature covers)."""
    data = body.get("data")
    candidates = []
    if isinstance(data, Mapping):
        candidates.append(data.get("task_id"))
    candidates.append(body.get("taskId"))
    if isinstance(data, Mapping):
        candidates.append(data.get("taskId"))
    for candidate in candidates:
        if isinstance(candidate, str) and candidate:
            return candidate
    return None


def is_task_id(text: str) -> bool:
    """A task id the SDK can carry anywhere (logs, Redis keys, URLs): 1 to 128 printable
    characters that UTF-8 can encode. The API's are 32 hex digits, but are treated as
    opaque; a lone surrogate or a control character is not one."""
    if not 0 < len(text) <= 128 or not text.isprintable():
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


MAX_TRACKS = 16
"""Tracks kept from one callback (the API sends two): a body of thousands of empty objects
must not pin megabytes in a task or the orphan store."""

_NO_EXTRA: Mapping[str, Any] = MappingProxyType({})
_CALLBACK_DATA_KEYS = frozenset({"callbackType", "callback_type", "task_id", "taskId", "data"})
_CALLBACK_BODY_KEYS = frozenset({"code", "msg", "data"})


class WireFormat:
    """The converter between models and wire dicts.

    ``naive_tz`` is the zone given to ``createTime`` values that carry none (the API
    does not document it; UTC by default).
    """

    def __init__(self, naive_tz: tzinfo = timezone.utc) -> None:
        self.naive_tz = naive_tz
        self._converter: cattrs.Converter | None = None

    @property
    def _conv(self) -> cattrs.Converter:
        """The cattrs converter, imported and built on first use, not with the package."""
        conv = self._converter
        if conv is None:
            conv = self._converter = self._build()
        return conv

    def _build(self) -> cattrs.Converter:
        import cattrs
        from cattrs.gen import make_dict_unstructure_fn, override

        conv = self._converter = cattrs.Converter()
        conv.register_structure_hook(str, _loose_str)
        conv.register_structure_hook(float | None, _loose_float)
        conv.register_structure_hook(int | None, _loose_int)
        conv.register_structure_hook(
            datetime | None, lambda v, _: parse_create_time(v, self.naive_tz)
        )
        conv.register_unstructure_hook(datetime, lambda d: d.isoformat() if d is not None else None)
        conv.register_structure_hook(Track, self._loose_fn(Track))
        conv.register_unstructure_hook(Track, self._unstructure_track)
        renames: dict[str, Any] = {
            f.name: override(rename=camel_case(f.name)) for f in attr.fields(AddVocalsRequest)
        }
        renames["callback_url"] = override(rename="callBackUrl")  # the API's capital B
        conv.register_unstructure_hook(
            AddVocalsRequest,
            make_dict_unstructure_fn(
                AddVocalsRequest, conv, _cattrs_omit_if_default=True, **renames
            ),
        )
        return conv

    # ------------------------------------------------------------ generic loose structuring

    def _loose_fn(self, cls: type[Track]) -> Callable[[Any, Any], Track]:
        """A hook that builds ``cls`` from a mapping in snake_case or camelCase, coercing
        each field loosely and keeping unknown keys in ``extra``.

        It runs for every track of every callback, so the spellings and each field's
        hook are looked up once here, not per value."""
        attr.resolve_types(cls)
        fields = [f for f in attr.fields(cls) if f.name != "extra"]
        aliases = {spelling: f.name for f in fields for spelling in (f.name, camel_case(f.name))}
        hooks = {f.name: (self._conv.get_structure_hook(f.type), f.type) for f in fields}

        def structure(value: Any, _: Any) -> Track:
            if not isinstance(value, Mapping):
                raise CallbackParseError(f"expected an object for {cls.__name__}")
            raw: dict[str, Any] = {}
            chosen: dict[str, str] = {}
            extra: dict[str, Any] = {}
            for key, item in value.items():
                name = aliases.get(key) if isinstance(key, str) else None
                if name is None:
                    extra[str(key)] = item
                elif name not in raw:
                    raw[name], chosen[name] = item, key
                elif raw[name] in (None, "") and item not in (None, ""):
                    # Both spellings sent: a filled one beats an empty one; keep the other.
                    extra[chosen[name]] = raw[name]
                    raw[name], chosen[name] = item, key
                else:
                    extra[key] = item
            kwargs = {name: hooks[name][0](item, hooks[name][1]) for name, item in raw.items()}
            return cls(**kwargs, extra=extra)

        return structure

    # ------------------------------------------------------------ tracks

    def structure_track(self, value: Any) -> Track:
        return self._conv.structure(value, Track)

    def _tracks(self, items: object) -> tuple[Track, ...]:
        return tuple(Tracks(items if isinstance(items, list) else (), self.structure_track))

    def _unstructure_track(self, track: Track) -> dict[str, Any]:
        out: dict[str, Any] = dict(track.extra)
        for f in attr.fields(Track):
            if f.name == "extra":
                continue
            value = getattr(track, f.name)
            if f.name == "create_time":
                out["createTime"] = value.isoformat() if value is not None else None
            else:
                out[f.name] = value
        return out

    def unstructure_track(self, track: Track) -> dict[str, Any]:
        """A track in callback spelling (snake_case, ``createTime`` as ISO 8601)."""
        return self._unstructure_track(track)

    # ------------------------------------------------------------ request

    def unstructure_request(self, request: AddVocalsRequest) -> dict[str, Any]:
        """The submit body: camelCase keys, ``callBackUrl`` with a capital B, unset
        optionals omitted, weights rounded to their 0.01 grid (no ``0.30000000000000004``)."""
        body: dict[str, Any] = self._conv.unstructure(request)
        for key in ("styleWeight", "weirdnessConstraint", "audioWeight"):
            if key in body:
                body[key] = round(float(body[key]), 2)
        return body

    # ------------------------------------------------------------ callbacks

    def structure_callback(self, body: Any) -> CallbackEvent:
        """Parse a callback body; ``CallbackParseError`` when it has no task id.

        This runs in the receiver for every callback, so the documented shape takes a
        direct path and anything odd falls back to the loose readers."""
        if not isinstance(body, dict):
            if not isinstance(body, Mapping):
                raise CallbackParseError("callback body is not a JSON object")
            body = dict(body)
        data = body.get("data")
        if not isinstance(data, dict):
            data = dict(data) if isinstance(data, Mapping) else {}
        task_id = data.get("task_id")
        if type(task_id) is not str or not task_id:
            task_id = callback_task_id(body)
            if task_id is None:
                raise CallbackParseError("callback body names no task id")
        if not is_task_id(task_id):
            raise CallbackParseError("callback body names no valid task id")
        callback_type = data.get("callbackType")
        if callback_type is None:
            callback_type = data.get("callback_type")
        code = body.get("code")
        if type(code) is not int:
            loose = _loose_int(code)
            code = 200 if loose is None and callback_type != "error" else (loose or 0)
        msg = body.get("msg")
        items = data.get("data")
        extra: Mapping[str, Any] = _NO_EXTRA
        if len(data) > 3 or len(body) > 3:  # the documented shape has nothing more
            found = {k: v for k, v in data.items() if k not in _CALLBACK_DATA_KEYS}
            found.update((k, v) for k, v in body.items() if k not in _CALLBACK_BODY_KEYS)
            extra = found or _NO_EXTRA
        return CallbackEvent(
            task_id=task_id,
            callback_type=callback_type
            if type(callback_type) is str
            else _loose_str(callback_type),
            code=code,
            msg=msg if type(msg) is str else _loose_str(msg),
            tracks=Tracks(items[:MAX_TRACKS] if type(items) is list else (), self.structure_track),
            extra=extra,
        )

    def unstructure_callback(self, event: CallbackEvent) -> dict[str, Any]:
        """A callback body as the API sends it."""
        data: dict[str, Any] = {"callbackType": event.callback_type, "task_id": event.task_id}
        data["data"] = [self._unstructure_track(t) for t in event.tracks]
        # Unknown fields go back on the top level (structure_callback reads them from there
        # as well as from ``data``), never over the envelope's own keys.
        extra = {k: v for k, v in event.extra.items() if k not in ("code", "msg", "data")}
        return {**extra, "code": event.code, "msg": event.msg, "data": data}

    # ------------------------------------------------------------ record-info

    def structure_details(self, data: Any, task_id: str) -> TaskDetails:
        """Parse record-info's ``data``. A ``null`` (a very young task) reads as PENDING."""
        if not isinstance(data, Mapping):
            return TaskDetails(task_id=task_id, status="PENDING")
        response = data.get("response")
        tracks: tuple[Track, ...] = ()
        if isinstance(response, Mapping):
            items = response.get("sunoData")
            if items is None:
                items = response.get("data")  # legacy quickstart shape, snake_case tracks
            tracks = self._tracks(items)
        param: Any = data.get("param")
        if isinstance(param, str):
            decoded = parse_json(param)
            if decoded is not NOT_JSON:  # not JSON: keep the text
                param = decoded
        error_message = data.get("errorMessage")
        if error_message is None and isinstance(response, Mapping):
            error_message = response.get("errorMessage")
        known = {
            "taskId", "status", "response", "param", "errorCode", "errorMessage",
            "type", "operationType", "parentMusicId",
        }  # fmt: skip
        return TaskDetails(
            task_id=_loose_str(data.get("taskId")) or task_id,
            status=_loose_str(data.get("status")),
            tracks=tracks,
            param=param,
            error_code=_loose_int(data.get("errorCode")),
            error_message=None if error_message is None else _loose_str(error_message),
            type=None if data.get("type") is None else _loose_str(data.get("type")),
            operation_type=(
                None if data.get("operationType") is None else _loose_str(data.get("operationType"))
            ),
            parent_music_id=_loose_str(data.get("parentMusicId")),
            extra={k: v for k, v in data.items() if k not in known},
        )

    # ------------------------------------------------------------ uploads

    def structure_upload(self, data: Any) -> UploadedFile | None:
        """Parse an upload host's ``data`` (``fileUrl``, ``downloadUrl``, ``expiresAt`` as
        ISO 8601, ``fileSize``, ``mimeType``, …). ``None`` when it names no ``http(s)`` URL."""
        if not isinstance(data, Mapping):
            return None
        file_url = _web_url(data.get("fileUrl"))
        download_url = _web_url(data.get("downloadUrl"))
        if not file_url and not download_url:
            return None  # none that is a web address
        size = _loose_int(data.get("fileSize"))
        known = {"fileUrl", "downloadUrl", "expiresAt", "fileSize", "mimeType", "fileId"}
        mime = data.get("mimeType")
        return UploadedFile(
            file_url=file_url,
            download_url=download_url,
            expires_at=parse_create_time(data.get("expiresAt"), self.naive_tz),
            size=size if size is not None and size >= 0 else None,
            mime_type=None if mime is None else _loose_str(mime) or None,
            file_id=_loose_str(data.get("fileId")),
            file_name=_loose_str(data.get("fileName")),
            extra={k: v for k, v in data.items() if k not in known},
        )


wire = WireFormat()
"""The default converter (zone-less ``createTime`` read as UTC)."""
