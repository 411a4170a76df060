"""``AddVocalsClient``: HTTP, retries, submit, details, credits and downloads.

One pooled ``aiohttp.ClientSession`` per client. Every answer goes through one parser:
the JSON envelope's ``code`` decides whatever the HTTP status, the HTTP status only
when there is no envelope. Every request goes through one retry loop (stamina), whose
decision is the pure ``retry_outcome``: a submit is resent only when the API surely
created nothing, so a retry never pays twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import re
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import stamina
import yarl

from ._convert import WireFormat, wire
from ._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    MaintenanceError,
    NotFoundError,
    RequestValidationError,
)
from ._models import AddVocalsRequest, TaskDetails, Track, check_lengths, require_url
from ._providers import (
    Outcome,
    ProviderProfile,
    classify_submit,
    get_provider,
    make_api_error,
    retry_outcome,
)
from ._receiver import CallbackReceiver, Registration
from ._signing import Secret
from ._tasks import PollPolicy, TaskState, VocalTask
from ._version import __version__

__all__ = ["AddVocalsClient", "ProgressCallback", "RetryPolicy"]

log = logging.getLogger("addvocals_async")

API_KEY_ENV = "ADDVOCALS_API_KEY"
BASE_URL_ENV = "ADDVOCALS_BASE_URL"
ProgressCallback = Callable[[int, "int | None"], None]
"""``progress(received_bytes, total_bytes_or_None)``, called as a download advances."""


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Backoff for retried requests: exponential with jitter, ``Retry-After`` honoured
    (up to ``retry_after_cap``), a longer ``maintenance_wait`` for code 455.
    ``RetryPolicy.no_wait()`` keeps the attempts but drops every wait, for tests."""

    attempts: int = 5
    wait_initial: float = 1.0
    wait_max: float = 30.0
    wait_jitter: float = 1.0
    maintenance_wait: float = 10.0
    retry_after_cap: float = 60.0
    timeout: float | None = 180.0

    @classmethod
    def no_wait(cls, attempts: int = 5) -> RetryPolicy:
        return cls(
            attempts=attempts,
            wait_initial=0.0,
            wait_max=0.0,
            wait_jitter=0.0,
            maintenance_wait=0.0,
            retry_after_cap=0.0,
        )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date); ``None`` for
    anything else. It never raises: it runs on answers to submits that did create a task."""
    if not value:
        return None
    value = value.strip()
    try:
        if value.isascii() and value.isdigit():
            return float(value)
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)  # "-0000": UTC, zone not stated
        return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError, OverflowError):
        return None


class AddVocalsClient:
    """The Add Vocals API client.

    ``api_key`` falls back to ``ADDVOCALS_API_KEY``. ``provider`` is ``"apibox"``
    (default), ``"sunoapi"`` or ``"kie"`` (or a ``ProviderProfile``); ``base_url``
    (or ``ADDVOCALS_BASE_URL``, handy to point a program at the simulator) overrides
    its host. With a ``receiver``, tasks get their callback URLs from it and
    resolve as callbacks land; without one, pass ``callback_url`` (the API requires one)
    and tasks resolve by polling. ``request_timeout`` bounds each HTTP request; task
    deadlines are separate (``task.complete(timeout=...)``).
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        provider: str | ProviderProfile = "apibox",
        receiver: CallbackReceiver | None = None,
        callback_url: str | None = None,
        request_timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        poll: PollPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        wire_format: WireFormat | None = None,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        if not key or not key.strip():
            raise RequestValidationError(
                "api_key",
                None,
                f"is required: pass api_key=... or set the {API_KEY_ENV} environment variable",
            )
        self._api_key = Secret(key.strip())
        self.profile = get_provider(provider)
        base_url = base_url or os.environ.get(BASE_URL_ENV) or self.profile.base_url
        self.base_url = yarl.URL(base_url)
        if self.base_url.scheme not in ("http", "https") or not self.base_url.host:
            raise RequestValidationError("base_url", base_url, "must be an absolute http(s) URL")
        self.receiver = receiver
        if callback_url is not None:
            require_url("callback_url", callback_url)
        self.callback_url = callback_url
        self.request_timeout = request_timeout
        self.retry_policy = retry or RetryPolicy()
        self.poll_policy = poll or PollPolicy()
        self._session = session
        self._owns_session = session is None
        self._closed = False
        self._wire = wire_format or wire

    def __repr__(self) -> str:
        return (
            f"AddVocalsClient(provider={self.profile.name!r}, base_url={str(self.base_url)!r}, "
            "api_key=***)"
        )

    async def __aenter__(self) -> AddVocalsClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session (if the client made it). Tasks waiting on callbacks keep
        waiting for them; they can no longer poll."""
        self._closed = True
        if self._session is not None and self._owns_session:
            await self._session.close()

    @property
    def can_poll(self) -> bool:
        return not self._closed and not (self._session is not None and self._session.closed)

    def _http(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("this client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": f"addvocals_async/{__version__}"},
                timeout=aiohttp.ClientTimeout(total=self.request_timeout),
            )
        return self._session

    # ---------------------------------------------------------------- public API

    async def add_vocals(
        self,
        request: AddVocalsRequest | None = None,
        *,
        upload_url: str | None = None,
        prompt: str | None = None,
        title: str | None = None,
        style: str | None = None,
        negative_tags: str | None = None,
        vocal_gender: str | None = None,
        style_weight: float | None = None,
        weirdness_constraint: float | None = None,
        audio_weight: float | None = None,
        model: str | None = None,
        lyrics: str | None = None,
        variety: int | None = None,
        callback_url: str | None = None,
    ) -> VocalTask:
        """Submit an instrumental for vocals; returns the ``VocalTask`` to await.

        Pass the fields as keywords, or an ``AddVocalsRequest``. Everything is validated
        before anything is sent (``RequestValidationError``). A submit is retried only on
        answers that prove nothing was created (rate limits, maintenance, a connection
        that never opened); anything ambiguous is raised with ``maybe_submitted=True``.
        """
        fields = {
            "upload_url": upload_url,
            "prompt": prompt,
            "title": title,
            "style": style,
            "negative_tags": negative_tags,
            "vocal_gender": vocal_gender,
            "style_weight": style_weight,
            "weirdness_constraint": weirdness_constraint,
            "audio_weight": audio_weight,
            "model": model,
            "lyrics": lyrics,
            "variety": variety,
        }
        if request is None:
            request = AddVocalsRequest(**fields)  # type: ignore[arg-type]
        elif any(value is not None for value in fields.values()):
            given = ", ".join(k for k, v in fields.items() if v is not None)
            raise TypeError(
                f"pass either an AddVocalsRequest or keyword fields, not both ({given})"
            )
        check_lengths(request, self.profile.limits(request.model))
        state = TaskState(None, self.profile)
        callback_url = callback_url or request.callback_url
        registration: Registration | None = None
        if callback_url is None and self.receiver is not None:
            registration = self.receiver.register(
                state
            )  # before sending: callbacks may beat the answer
            callback_url = registration.callback_url
        callback_url = callback_url or self.callback_url
        if callback_url is None:
            raise RequestValidationError(
                "callback_url",
                None,
                "is required by the API: pass callback_url=..., give the client "
                "receiver=CallbackReceiver(...), or set callback_url on the client",
            )
        require_url("callback_url", callback_url)
        body = self._wire.unstructure_request(attrs.evolve(request, callback_url=callback_url))
        try:
            data = await self._call("POST", self.profile.submit_path, json_body=body, submit=True)
            task_id = data.get("taskId") if isinstance(data, Mapping) else None
            if not isinstance(task_id, str) or not task_id:
                raise APIConnectionError(
                    "the API accepted the submit but its answer names no taskId",
                    maybe_submitted=True,
                )
        except BaseException as exc:
            if registration is not None and self.receiver is not None:
                self.receiver.unregister(registration)
            known = state.task_id  # an early callback named the task
            if known and isinstance(exc, (APIError, APIConnectionError)):
                exc.task_id = exc.task_id or known  # so client.task(id) can pick it up
            raise
        if state.task_id is not None and state.task_id != task_id:
            # The submit's answer is authoritative, not a callback that beat it.
            log.warning(
                "a callback for task %s reached the URL of task %s before its submit "
                "returned; it was set aside",
                state.task_id,
                task_id,
            )
            state = TaskState(task_id, self.profile)
            if registration is not None and self.receiver is not None:
                self.receiver.adopt(registration, state)
        state.task_id = task_id
        if registration is not None and self.receiver is not None:
            self.receiver.bind(registration, task_id)
        return VocalTask(self, state)

    def task(self, task_id: str) -> VocalTask:
        """Re-attach to a task submitted earlier (another process, before a restart).

        It resolves by polling, and by callbacks too when this client's receiver has the
        secret the task was submitted with.
        """
        if not isinstance(task_id, str) or not task_id.strip():
            raise RequestValidationError("task_id", task_id, "must be a non-empty task id")
        state = TaskState(task_id.strip(), self.profile)
        if self.receiver is not None:
            self.receiver.attach(state)
        return VocalTask(self, state, reattached=True)

    async def get_details(self, task_id: str) -> TaskDetails:
        """What the details endpoint (record-info) says about ``task_id`` now."""
        return await self._details(task_id)

    async def _details(self, task_id: str, *, attempts: int | None = None) -> TaskDetails:
        if not isinstance(task_id, str) or not task_id.strip():
            raise RequestValidationError("task_id", task_id, "must be a non-empty task id")
        params = {"taskId": task_id}
        try:
            data = await self._call(
                "GET", self.profile.details_path, params=params, attempts=attempts
            )
        except APIError as exc:
            exc.task_id = exc.task_id or task_id
            raise
        return self._wire.structure_details(data, task_id)

    async def get_credits(self) -> int:
        """The account's remaining credits."""
        data = await self._call("GET", self.profile.credits_path)
        if isinstance(data, bool):
            data = None
        if isinstance(data, (int, float)):
            return int(data)
        if isinstance(data, str) and data.strip().isdigit():
            return int(data)
        raise APIConnectionError(f"the credits answer holds no number: {str(data)[:60]!r}")

    async def download(
        self,
        track: Track,
        dest: str | os.PathLike[str],
        *,
        kind: str = "audio",
        overwrite: bool = False,
        allow_stream: bool = False,
        progress: ProgressCallback | None = None,
    ) -> Path:
        """Save a track's audio (``kind="audio"``) or cover (``kind="image"``) to ``dest``.

        ``dest`` is a file path, or a directory (the file is named after the track id).
        The file appears only when complete (written aside, then renamed); nothing
        half-written is left behind on failure or cancellation. An existing file is kept
        unless ``overwrite=True``. Before ``complete``, ``audio_url`` may be empty:
        ``allow_stream=True`` then saves the stream, which is not the final file.
        """
        url = self._download_url(track, kind, allow_stream)
        target = _download_target(Path(dest), track, url, kind, overwrite=overwrite)
        session = self._http()
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.request_timeout, sock_read=60)
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
                                self.profile,
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
                    raise APIConnectionError(
                        f"download incomplete: got {received} of {total} bytes"
                    )
            _finish_download(temp_name, target, overwrite=overwrite)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_name)
            raise
        return target

    @staticmethod
    def _download_url(track: Track, kind: str, allow_stream: bool) -> str:
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

    # ---------------------------------------------------------------- transport

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Mapping[str, Any] | None = None,
        submit: bool = False,
        attempts: int | None = None,
    ) -> Any:
        """Send with retries; return the envelope's ``data`` or raise the precise error.
        ``attempts`` overrides the policy's (a task's poll makes one: its schedule retries)."""
        url = self.base_url / path.lstrip("/")
        policy = self.retry_policy

        def backoff(exc: Exception) -> bool | float:
            outcome = retry_outcome(self.profile, exc, submit=submit)
            if outcome is not Outcome.RETRY:
                return False
            retry_after: float | None = getattr(exc, "retry_after", None)
            if retry_after is not None:
                return min(retry_after, policy.retry_after_cap)
            if isinstance(exc, MaintenanceError):
                return policy.maintenance_wait * random.uniform(0.5, 1.0)
            return True

        async for attempt in stamina.retry_context(
            on=backoff,
            attempts=attempts or policy.attempts,
            timeout=policy.timeout,
            wait_initial=policy.wait_initial,
            wait_max=policy.wait_max,
            wait_jitter=policy.wait_jitter,
        ):
            with attempt:
                return await self._send(
                    method, url, params=params, json_body=json_body, submit=submit
                )
        raise AssertionError("unreachable: stamina re-raises the last error")

    async def _send(
        self,
        method: str,
        url: yarl.URL,
        *,
        params: Mapping[str, str] | None,
        json_body: Mapping[str, Any] | None,
        submit: bool,
    ) -> Any:
        headers = {"Authorization": f"Bearer {self._api_key.reveal().decode()}"}
        what = f"{method} {url.path}"
        try:
            async with self._http().request(
                method,
                url,
                params=params,
                json=json_body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(
                    total=self.request_timeout
                ),  # even on a given session
            ) as response:
                raw = await response.read()
                status = response.status
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
        except aiohttp.ConnectionTimeoutError as exc:
            raise APITimeoutError(f"{what}: could not connect in time") from exc
        except aiohttp.ClientConnectorError as exc:
            raise APIConnectionError(f"{what}: could not connect: {exc.os_error}") from exc
        except asyncio.TimeoutError as exc:
            raise APITimeoutError(
                f"{what}: no answer within {self.request_timeout:g} s", maybe_submitted=submit
            ) from exc
        except aiohttp.ClientError as exc:
            raise APIConnectionError(
                f"{what}: the connection failed: {type(exc).__name__}", maybe_submitted=submit
            ) from exc
        try:
            return self._parse(status, raw, retry_after, submit=submit)
        except APIError as exc:
            # Decided here, where the error is made, not in the retry hook: a caller
            # who turned stamina off must still learn that a 5xx may have created a task.
            exc.maybe_submitted = submit and classify_submit(self.profile, exc) is Outcome.AMBIGUOUS
            raise

    def _parse(self, status: int, raw: bytes, retry_after: float | None, *, submit: bool) -> Any:
        try:
            envelope = json.loads(raw) if raw else None
        except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
            envelope = None
        code = envelope.get("code") if isinstance(envelope, dict) else None
        if isinstance(code, str) and code.strip().isdigit():
            code = int(code)
        if isinstance(code, int) and not isinstance(code, bool):
            assert isinstance(envelope, dict)
            if code == 200:
                return envelope.get("data")
            msg = envelope.get("msg")
            raise make_api_error(
                self.profile,
                code,
                msg if isinstance(msg, str) else "",
                http_status=status,
                retry_after=retry_after,
            )
        if 200 <= status < 300:
            raise APIConnectionError(
                f"the API answered HTTP {status} without its JSON envelope", maybe_submitted=submit
            )
        raise make_api_error(
            self.profile,
            status,
            f"HTTP {status} with no JSON envelope (a proxy or gateway answered)",
            http_status=status,
            from_envelope=False,
            retry_after=retry_after,
        )


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
