"""``AddVocalsClient``: the facade users hold.

It composes the parts below it and adds nothing of its own but argument checking:

- ``Transport`` (``_http``): the session, envelopes → errors, never-pay-twice retries;
- ``AddVocalsAPI`` (``_api``): submit, details and credits, and the tasks' details source;
- ``TaskRegistry`` (``_registry``): the tasks awaited here, fed by the receiver's
  delivery seam;
- ``download`` (``_download``): saving generated files;
- ``Uploader`` (``_upload``): the provider's file-upload host, through a ``Transport`` of
  its own that shares the session; the receiver's ``serve_file`` where there is none.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import attr  # attrs under its first name: aiohttp imports it, the `attrs` alias costs ~0.5 ms
import yarl

from ._api import AddVocalsAPI
from ._config import API_KEY_ENV, BASE_URL_ENV, PROVIDER_ENV, PollPolicy, RetryPolicy
from ._convert import WireFormat, wire
from ._errors import (
    APIConnectionError,
    APIError,
    RequestValidationError,
    UploadUnavailableError,
)
from ._http import Transport
from ._models import AddVocalsRequest, TaskDetails, Track, UploadedFile
from ._providers import UPLOAD_CODES, LengthLimits, ProviderProfile, get_provider
from ._registry import DEFAULT_TTL, TaskRegistry
from ._signing import Secret
from ._tasks import TaskState, VocalTask
from ._throttle import SlidingWindowThrottle, SubmitThrottle
from ._validation import (
    check_lengths,
    check_provider_lengths,
    lengths_checked_later,
    require_url,
)

if TYPE_CHECKING:  # each imported where first used: a client may never need them
    from ._download import ProgressCallback
    from ._pending import PendingStore
    from ._receiver import CallbackReceiver
    from ._upload import Uploader, UploadProgress, UploadSource

__all__ = ["AddVocalsClient"]

log = logging.getLogger("addvocals_async")

AUDIO_VIA = ("auto", "upload", "serve")
"""How ``add_vocals(audio=...)`` gets the file to the API (see ``add_vocals``)."""
_PENDING_UPLOAD_URL = "https://upload.invalid/pending"
"""Stands in for the URL a local file will get, so the request is validated before the
file is uploaded or served."""


class AddVocalsClient:
    """The Add Vocals API client.

    ``api_key`` falls back to ``ADDVOCALS_API_KEY``. ``provider`` is ``"apibox"``
    (default, or ``ADDVOCALS_PROVIDER``), ``"sunoapi"`` or ``"kie"`` (or a
    ``ProviderProfile``); ``base_url``
    (or ``ADDVOCALS_BASE_URL``, handy to point a program at the simulator) overrides
    its host. With a ``receiver``, tasks get their callback URLs from it and
    resolve as callbacks land; without one, pass ``callback_url`` (the API requires one)
    and tasks resolve by polling. ``request_timeout`` bounds each HTTP request; task
    deadlines are separate (``task.complete(timeout=...)``). A task nobody hears of for
    ``task_ttl`` seconds is forgotten by the receiver side; its waiters go on polling.
    Submits queue at the API's rate, 20 per 10 s (``throttle=``: a ``SubmitThrottle``, or
    ``False`` to send at once and let rate limits be retried); with a receiver over a
    ``RedisBackend`` the default window is shared through Redis by every process on it.
    ``length_limits`` (a ``LengthLimits``, else the profile's) replaces the default
    per-model length rows for keyword submits, to follow the API where it allows more (or
    less) than they say.

    Uploads (``upload``, ``add_vocals(audio=...)``) go to the provider's upload host
    (sunoapi, kie), or to ``upload_base_url``; when ``base_url`` is overridden (the
    simulator, a proxy) and ``upload_base_url`` is not, uploads go there too. An upload
    must end within ``upload_timeout`` seconds (default: 20 × ``request_timeout``, at
    least 5 minutes), each read within ``request_timeout``.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        provider: str | ProviderProfile | None = None,
        receiver: CallbackReceiver | None = None,
        callback_url: str | None = None,
        request_timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        poll: PollPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        wire_format: WireFormat | None = None,
        task_ttl: float = DEFAULT_TTL,
        pending_store: PendingStore | str | os.PathLike[str] | None = None,
        throttle: SubmitThrottle | bool = True,
        upload_base_url: str | None = None,
        upload_timeout: float | None = None,
        length_limits: LengthLimits | None = None,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        if not key or not key.strip():
            raise RequestValidationError(
                "api_key",
                None,
                f"is required: pass api_key=... or set the {API_KEY_ENV} environment variable",
            )
        self.profile = get_provider(provider or os.environ.get(PROVIDER_ENV) or "apibox")
        # Limits of this client's own (else the profile's), replacing the default rows.
        self.length_limits = length_limits or self.profile.length_limits
        base_url = base_url or os.environ.get(BASE_URL_ENV) or self.profile.base_url
        self.base_url = require_url("base_url", base_url)
        if upload_base_url is None and base_url != self.profile.base_url:
            upload_base_url = base_url  # the simulator or a proxy serves uploads too
        self.upload_base_url = (
            require_url("upload_base_url", upload_base_url) if upload_base_url is not None else None
        )
        if upload_timeout is not None and not (
            isinstance(upload_timeout, (int, float))
            and not isinstance(upload_timeout, bool)
            and 0 < upload_timeout < float("inf")
        ):
            raise RequestValidationError(
                "upload_timeout", upload_timeout, "must be a positive, finite number of seconds"
            )
        self._upload_timeout = upload_timeout
        self.receiver = receiver
        if callback_url is not None:
            require_url("callback_url", callback_url)
        self.callback_url = callback_url
        if (
            isinstance(request_timeout, bool)
            or not isinstance(request_timeout, (int, float))
            or not 0 < request_timeout < float("inf")
        ):
            # 0, a negative number or NaN would silently mean "no time limit at all".
            raise RequestValidationError(
                "request_timeout", request_timeout, "must be a positive, finite number of seconds"
            )
        self.request_timeout = request_timeout
        self.retry_policy = retry or RetryPolicy()
        self.poll_policy = poll or PollPolicy()
        self._wire = wire_format or wire
        self._api_key = Secret(key.strip())
        self._uploader: Uploader | None = None
        self._transport = Transport(
            api_key=self._api_key,
            profile=self.profile,
            request_timeout=request_timeout,
            retry=self.retry_policy,
            session=session,
        )
        self._api = AddVocalsAPI(self._transport, self.base_url, self.profile, self._wire)
        self._tasks = TaskRegistry(
            receiver.backend if receiver is not None else None, self.profile, ttl=task_ttl
        )
        self._background: set[asyncio.Task[None]] = set()
        self._ended_refs: set[str] = set()
        self._throttle: SubmitThrottle | None = throttle or None if throttle is not True else None
        if throttle is True:
            # Many processes on one Redis share one account's rate: their throttle is shared
            # too (``RedisBackend.submit_throttle``); otherwise this process's own.
            shared = getattr(receiver.backend, "submit_throttle", None) if receiver else None
            self._throttle = shared() if callable(shared) else SlidingWindowThrottle()
        self._owns_store = isinstance(pending_store, (str, os.PathLike))
        self._pending: PendingStore | None
        if isinstance(pending_store, (str, os.PathLike)):
            from ._pending import SQLitePendingStore

            self._pending = SQLitePendingStore(pending_store)
        else:
            self._pending = pending_store
        if self._pending is not None:
            if receiver is None:
                raise RequestValidationError(
                    "pending_store",
                    pending_store,
                    "needs a receiver: a resumed task is found again through its callbacks",
                )
            self._tasks.terminal_listeners.append(self._forget_pending)

    def __repr__(self) -> str:
        return (
            f"AddVocalsClient(provider={self.profile.name!r}, base_url={str(self.base_url)!r}, "
            "api_key=***)"
        )

    async def __aenter__(self) -> AddVocalsClient:
        if self.receiver is not None:
            # A receiver that never serves (a worker behind a receiver tier) still needs
            # its seam: a store out of reach fails here, clearly, not on the first task.
            await self.receiver.backend.connect()
            self._warn_if_unreachable()
        return self

    def _warn_if_unreachable(self) -> None:
        """A receiver advertising a loopback or private address to an API elsewhere gets
        no callback: say so now, not after a silent grace period."""
        assert self.receiver is not None
        try:
            callback_host = yarl.URL(self.receiver.url).host
        except RuntimeError:  # not started (mounted, or started later): nothing known yet
            return
        if _is_local(callback_host) and not _is_local(yarl.URL(str(self.base_url)).host):
            log.warning(
                "the receiver's URL %s is a local address the API at %s cannot reach: "
                "callbacks will not arrive, and tasks will poll once their callbacks are late. "
                "Pass public_url= (a reverse proxy or tunnel to this port; "
                "README: 'Exposing the receiver')",
                self.receiver.url,
                self.base_url,
            )

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session (if the client made it). Tasks waiting on callbacks keep
        waiting for them; they can no longer poll. Pending-store writes under way finish
        first (within a few seconds); a store given as a path is closed."""
        if self._background:
            await asyncio.wait(self._background, timeout=5.0)
        if self._pending is not None and self._owns_store:
            await self._pending.aclose()
        if self._uploader is not None:
            await self._uploader.aclose()
        await self._transport.aclose()

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(self._logged(work))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    async def _logged(work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception:
            log.exception("a pending-store write failed")

    def _forget_pending(self, state: TaskState) -> None:
        """A terminal listener: the task ended, so its submit need not be resumed."""
        store, ref = self._pending, state.ref
        if store is not None and ref is not None:
            self._ended_refs.add(ref)  # until the store has forgotten it too

            async def forget() -> None:
                try:
                    await store.remove(ref)
                finally:
                    self._ended_refs.discard(ref)

            self._in_background(forget())

    @property
    def can_poll(self) -> bool:
        """False once the client is closed: tasks can no longer ask the details endpoint."""
        return self._api.can_poll

    @property
    def tasks(self) -> TaskRegistry:
        """The tasks this client awaits (``len(client.tasks)``; terminal listeners)."""
        return self._tasks

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
        audio: str | os.PathLike[str] | None = None,
        audio_via: str = "auto",
        upload_progress: UploadProgress | None = None,
    ) -> VocalTask:
        """Submit an instrumental for vocals; returns the ``VocalTask`` to await.

        Pass the fields as keywords, or an ``AddVocalsRequest``. Everything is validated
        before anything is sent (``RequestValidationError``). A submit is retried only on
        answers that prove nothing was created (rate limits, maintenance, a connection
        that never opened); anything ambiguous is raised with ``maybe_submitted=True``.

        ``audio=Path("beat.mp3")`` instead of ``upload_url`` sends a local file. It is
        checked first (``LocalFileError``: missing, not a regular file, over 100 MiB, not
        audio by its first bytes), then ``audio_via`` decides how the API gets it:

        - ``"auto"`` (default): the provider's upload API where there is one (sunoapi,
          kie), since the API then fetches from its own host and nothing here must be
          reachable; otherwise (apibox) the receiver serves it;
        - ``"upload"``: the provider's upload API (``UploadUnavailableError`` on apibox);
        - ``"serve"``: the receiver serves it (``receiver.serve_file``) under its public
          URL until the task reports ``first`` (or fails), or an hour has passed.

        ``upload_progress(sent, total)`` follows an upload, as in ``upload``.
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
        via = self._audio_via(audio, audio_via, upload_url, request)
        if audio is not None:
            fields["upload_url"] = _PENDING_UPLOAD_URL
        if request is None:
            if self.length_limits is not None:
                with lengths_checked_later():
                    request = AddVocalsRequest(**fields)  # type: ignore[arg-type]
            else:
                request = AddVocalsRequest(**fields)  # type: ignore[arg-type]
        elif any(value is not None for value in fields.values()):
            given = ", ".join(k for k, v in fields.items() if v is not None)
            raise TypeError(
                f"pass either an AddVocalsRequest or keyword fields, not both ({given})"
            )
        if self.length_limits is not None:
            check_lengths(request, self.length_limits)
        else:
            check_provider_lengths(request, self.profile)
        audio_file = None
        if audio is not None:
            from ._audio import check_audio_file

            audio_file = check_audio_file(audio)
        callback_url = callback_url or request.callback_url
        ref = None
        if callback_url is None and self.receiver is not None:
            fresh = self.receiver.new_callback_url()
            ref, callback_url = fresh.ref, fresh.url
        callback_url = callback_url or self.callback_url
        if callback_url is None:
            raise RequestValidationError(
                "callback_url",
                None,
                "is required by the API: pass callback_url=..., give the client "
                "receiver=CallbackReceiver(...), or set callback_url on the client",
            )
        if ref is None and callback_url != request.callback_url:
            require_url("callback_url", callback_url)  # the receiver's own URLs need no check
        served_url = None
        if audio_file is not None:
            if via == "upload":
                uploaded = await self.upload(audio_file.path, progress=upload_progress)
                request = attr.evolve(request, upload_url=uploaded.url)
            else:
                assert self.receiver is not None
                served_url = self.receiver.serve_file(audio_file.path, task_ref=ref)
                request = attr.evolve(request, upload_url=served_url)
        body = self._wire.unstructure_request(request)
        if body.get("callBackUrl") != callback_url:
            body["callBackUrl"] = callback_url
        try:
            if self._throttle is not None:
                await self._throttle.acquire()  # queue at the API's rate rather than fail it
            if ref is None:
                task_id = await self._api.submit(body)
                log.info(
                    "task %a submitted; it resolves by polling (its callbacks go elsewhere)",
                    task_id,
                )
                return VocalTask(TaskState(task_id, self.profile), self._api, self.poll_policy)
            return await self._submit_with_callbacks(body, ref)
        except BaseException as exc:
            if served_url is not None and self.receiver is not None and _surely_not_created(exc):
                self.receiver.stop_serving(served_url)  # no task will fetch it
            raise

    def _audio_via(
        self,
        audio: str | os.PathLike[str] | None,
        via: str,
        upload_url: str | None,
        request: AddVocalsRequest | None,
    ) -> str:
        """How a local ``audio`` file reaches the API: ``"upload"`` or ``"serve"``."""
        if via not in AUDIO_VIA:
            raise RequestValidationError("audio_via", via, f"must be one of {', '.join(AUDIO_VIA)}")
        if audio is None:
            return via
        if upload_url is not None or request is not None:
            raise RequestValidationError(
                "audio", audio, "pass either audio= (a local file) or upload_url=, not both"
            )
        if not isinstance(audio, (str, os.PathLike)):
            raise RequestValidationError(
                "audio", type(audio).__name__, "must be a local file path (pathlib.Path or str)"
            )
        if isinstance(audio, str) and audio.lower().startswith(("http://", "https://")):
            raise RequestValidationError(
                "audio", audio, "is a URL, not a local file: pass it as upload_url="
            )
        if via == "auto":
            via = "upload" if self.profile.can_upload else "serve"
        if via == "upload" and not self.profile.can_upload:
            raise UploadUnavailableError(self.profile.name)
        if via == "serve" and self.receiver is None:
            raise RequestValidationError(
                "audio",
                audio,
                "needs a receiver to serve the file from: AddVocalsClient(receiver="
                "CallbackReceiver(public_url=...)), or a provider with an upload API",
            )
        return via

    async def upload(
        self,
        source: UploadSource,
        file_name: str | None = None,
        *,
        max_bytes: int | None = None,
        progress: UploadProgress | None = None,
    ) -> UploadedFile:
        """Upload an instrumental to the provider's file host (sunoapi, kie); returns the
        ``UploadedFile`` whose ``url`` to pass as ``upload_url``, soon: it expires after
        3 days on sunoapi, 24 hours on kie.

        ``source`` is a file path (checked first, then streamed: never read whole into
        memory), bytes (base64 up to 1 MB, multipart above), or a seekable file opened
        in binary mode. Every kind is checked to be audio by its first bytes and at most
        ``max_bytes`` (default 100 MiB): ``LocalFileError`` otherwise, with nothing sent.
        ``file_name`` defaults to the file's own (kie overwrites an earlier upload of the
        same name). ``progress(sent, total)`` is called as bytes go out.

        Uploads cost no credits, so a failed one is safe to retry, and is retried, with
        the client's retry policy, on anything transient (5xx, a lost connection, a rate
        limit). api.box has no upload API: ``UploadUnavailableError`` says to let the
        receiver serve the file (``add_vocals(audio=Path(...))``).
        """
        return await self._get_uploader().upload(
            source, file_name=file_name, max_bytes=max_bytes, progress=progress
        )

    async def upload_from_url(self, url: str, *, file_name: str | None = None) -> UploadedFile:
        """Have the provider's file host fetch ``url`` itself (kie: within 30 s, up to about
        100 MB advised): a link that expires soon, or that the API cannot reach, becomes
        one on the provider's host. Free, so safe to retry; see ``upload``."""
        return await self._get_uploader().upload_from_url(url, file_name=file_name)

    def _get_uploader(self) -> Uploader:
        if not self.profile.can_upload:
            raise UploadUnavailableError(self.profile.name)
        if self._uploader is None:
            base = self.upload_base_url or require_url(
                "upload_base_url", self.profile.upload_base_url
            )
            from ._download import default_timeout
            from ._upload import Uploader

            stall = self.request_timeout
            total = self._upload_timeout or default_timeout(stall)
            transport = Transport(
                api_key=self._api_key,
                profile=attr.evolve(self.profile, codes=UPLOAD_CODES),
                request_timeout=total,
                retry=self.retry_policy,
                session=self._transport.session,
                timeout=aiohttp.ClientTimeout(total=total, sock_connect=stall, sock_read=stall),
            )
            self._uploader = Uploader(transport, base, self._wire)
        return self._uploader

    async def _submit_with_callbacks(self, body: dict[str, Any], ref: str) -> VocalTask:
        registry, store = self._tasks, self._pending
        state = registry.expect(ref)  # before sending: a callback may beat the answer
        if store is not None:
            from ._pending import PendingSubmit

            try:
                await store.record(PendingSubmit(ref=ref, request=body))
            except BaseException:
                registry.abandon(state)  # nothing was sent
                raise
        try:
            task_id = await self._api.submit(body)
        except BaseException as exc:
            if _surely_not_created(exc):
                registry.abandon(state)
                if store is not None:
                    self._in_background(store.remove(ref))
            else:
                # The task may exist: keep listening on its URL. Its callbacks name it,
                # and client.recover(error) (or resume()) hands it over.
                log.warning(
                    "a submit failed after it may have reached the API (%s); "
                    "client.recover(error) finds the task if one was created",
                    type(exc).__name__,
                )
                if isinstance(exc, (APIError, APIConnectionError)):
                    exc.callback_ref = ref
            if isinstance(exc, (APIError, APIConnectionError)):
                exc.task_id = exc.task_id or state.task_id  # an early callback named it
            raise
        state = await registry.bind(state, task_id)
        if store is not None:
            self._in_background(store.bind(ref, task_id))
        log.info("task %a submitted; its callbacks go to the receiver", task_id)
        return VocalTask(state, self._api, self.poll_policy)

    async def recover(
        self, submit: APIError | APIConnectionError | str, *, timeout: float = 60.0
    ) -> VocalTask | None:
        """The task an ambiguous submit created, found by its callbacks.

        ``submit`` is the error the submit raised with ``maybe_submitted=True`` (or its
        ``callback_ref``). The callbacks of a task created anyway arrive at the URL that
        submit was sent with and name the task; this waits up to ``timeout`` seconds for
        the first of them (or asks the delivery seam, which may have seen one already) and
        returns the task. ``None`` when none came: most likely nothing was created.
        """
        ref = submit if isinstance(submit, str) else submit.callback_ref
        backend = self.receiver.backend if self.receiver is not None else None
        if not ref or backend is None:
            raise RequestValidationError(
                "submit",
                None,
                "has no callback reference to recover by: only submits sent through this "
                "client's receiver can be found by their callbacks",
            )
        if not timeout >= 0:
            raise RequestValidationError("timeout", timeout, "must be a number of seconds >= 0")
        registry = self._tasks
        state = registry.awaiting(ref)
        deadline = time.monotonic() + timeout

        async def found() -> str | None:
            task_id = state.task_id or await backend.owner(ref)
            if task_id is not None and registry.live_elsewhere(task_id, ref):
                # A task awaited here through its own URL cannot be this submit's.
                log.warning(
                    "ignored task %a as the result of recover(): it has its own URL", task_id
                )
                return None
            return task_id

        task_id = await found()
        while task_id is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                # Nothing came: stop listening on that URL (a late callback is then an
                # orphan, as for any URL nobody awaits), so nothing stays registered.
                if state.task_id is None:
                    registry.abandon(state)
                return None
            await state.wait_changed(min(remaining, 1.0))
            task_id = await found()
        state = await self._tasks.bind(state, task_id)
        if self._pending is not None:
            self._in_background(self._pending.bind(ref, task_id))
        return VocalTask(state, self._api, self.poll_policy)

    async def resume(self) -> list[VocalTask]:
        """A task for every submit in the pending store: those submitted before a restart
        or a crash, including ambiguous ones. A task whose submit answer was lost has
        ``task_id_known`` False until its first callback names it; its waits work all the
        same."""
        store = self._pending
        if store is None:
            raise RequestValidationError(
                "pending_store",
                None,
                "is needed to resume: AddVocalsClient(pending_store='tasks.db', receiver=...)",
            )
        backend = self.receiver.backend if self.receiver is not None else None
        tasks = []
        for record in await store.pending():
            if record.ref in self._ended_refs:
                continue  # ended here a moment ago; the store is forgetting it
            task_id = record.task_id
            if task_id is None and backend is not None:
                task_id = await backend.owner(record.ref)
            if task_id is None:
                state = self._tasks.awaiting(record.ref)
            else:
                state = self._tasks.attach(task_id, ref=record.ref)
                if record.task_id is None:
                    self._in_background(store.bind(record.ref, task_id))
            # Its polls follow the stage times from when it was really submitted.
            age = max(0.0, time.time() - record.created_at)
            tasks.append(
                VocalTask(
                    state, self._api, self.poll_policy, reattached=task_id is not None, age=age
                )
            )
        return tasks

    def task(self, task_id: str) -> VocalTask:
        """Re-attach to a task submitted earlier (another process, before a restart).

        It resolves by polling, and by callbacks too when this client's receiver has the
        secret the task was submitted with.
        """
        if not isinstance(task_id, str) or not task_id.strip():
            raise RequestValidationError("task_id", task_id, "must be a non-empty task id")
        state = self._tasks.attach(task_id.strip(), handles_only=True)
        handle = VocalTask(state, self._api, self.poll_policy, reattached=True)
        self._tasks.held_by(state, handle)  # forgotten once every handle is gone
        return handle

    async def get_details(self, task_id: str) -> TaskDetails:
        """What the details endpoint (record-info) says about ``task_id`` now."""
        return await self._api.details(task_id)

    async def get_credits(self) -> int:
        """The account's remaining credits."""
        return await self._api.credits()

    async def download(
        self,
        track: Track,
        dest: str | os.PathLike[str],
        *,
        kind: str = "audio",
        overwrite: bool = False,
        allow_stream: bool = False,
        progress: ProgressCallback | None = None,
        timeout: float | None = None,
        max_bytes: int | None = None,
    ) -> Path:
        """Save a track's audio (``kind="audio"``) or cover (``kind="image"``) to ``dest``.

        ``dest`` is a folder or a file name. A folder is one that exists, a path ending in
        ``/``, or a name with no suffix (``"songs"``): it is created when missing, and the
        file inside is named after the track id (with
        the URL's extension only when it is one of that kind's: ``.mp3`` ``.wav`` ``.flac``
        ``.ogg`` ``.m4a``…, or ``.jpeg`` ``.png`` ``.webp`` ``.gif``; else ``.mp3`` or
        ``.jpeg``). The file appears only when complete (written aside, then renamed);
        nothing half-written is left behind on failure or cancellation. An existing file is
        kept unless ``overwrite=True``. Before ``complete``, ``audio_url`` may be empty:
        ``allow_stream=True`` then saves the stream, which is not the final file.

        File hosts are not trusted. Connecting, and each read, must make progress within
        ``request_timeout``; the whole download must end within ``timeout`` seconds
        (default: 20 × ``request_timeout``, at least 5 minutes); at most ``max_bytes`` are
        written, counted after decompression (default: 200 MB for audio, more than twice
        an eight-minute WAV; 20 MB for an image). An answer typed as anything but audio
        (or a raster image for ``kind="image"``), or typed generically
        (``application/octet-stream``, none) whose first bytes are not those of an audio
        file (MP3, WAV, FLAC, Ogg, M4A) or image (JPEG, PNG, WebP, GIF), is refused.
        Failures raise ``APITimeoutError``, ``APIConnectionError`` (too large, connection
        lost) or ``APIError`` (``NotFoundError`` for an expired file, a refused type);
        ``DownloadExistsError`` (a ``FileExistsError``) when the file exists and
        ``overwrite`` is false.
        """
        from ._download import download

        return await download(
            self._transport.session,
            track,
            dest,
            profile=self.profile,
            request_timeout=self.request_timeout,
            kind=kind,
            overwrite=overwrite,
            allow_stream=allow_stream,
            progress=progress,
            timeout=timeout,
            max_bytes=max_bytes,
        )


def _surely_not_created(error: BaseException) -> bool:
    """True when a failed submit surely created no task: refused before sending, or
    answered with a rejection. A cancellation, a 5xx, a time-out after sending: maybe."""
    if isinstance(error, RequestValidationError):
        return True
    if isinstance(error, (APIError, APIConnectionError)):
        return not error.maybe_submitted
    return False


def _is_local(host: str | None) -> bool:
    """Loopback, private or link-local: not reachable from the internet."""
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False  # a name: assume it resolves where it should
    return address.is_loopback or address.is_private or address.is_link_local
