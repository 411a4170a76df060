"""The simulated API's HTTP side: submit, record-info, credits, the upload host (sunoapi,
kie) and the files it hands out.

Every request is recorded before it is routed and its answer after, so a test sees a
request that is still hanging. Each endpoint answers the provider's envelope with its own
codes: 401 for a bad key, the dialect's validation and rate-limit codes, 455 in
maintenance. Errors go out as HTTP 200 with the code in the body, as documented, unless
``error_status="mirror"``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import json
import time
from typing import Any

from aiohttp import web

from ._lifecycle import Choice, Lifecycle
from ._media import jpeg_bytes, mp3_bytes
from ._records import RecordedRequest
from ._state import Background, SimState
from ._uploads import FetchResult, UploadHost, is_loopback_url
from ._wire import details_data, dialect_for, envelope, validate_submit

__all__ = ["ApiRoutes"]

_DAY = 86_400.0
_HTML_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_UPSTREAM_403 = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
)


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


class ApiRoutes:
    """The one aiohttp handler behind every path of the simulated API.

    Rate limits are not scaled by the simulator's speed unless ``scale_rate_limits`` says so:
    they guard against a client that hammers the API, a real-time property of the client.
    """

    def __init__(
        self,
        state: SimState,
        background: Background,
        lifecycle: Lifecycle,
        uploads: UploadHost,
        *,
        api_key: str,
    ) -> None:
        self._state = state
        self._uploads = uploads
        self._background = background
        self._lifecycle = lifecycle
        self._api_key = api_key
        self._dialect = dialect_for(state.profile)
        self._creates: collections.deque[float] = collections.deque()
        self._details_times: dict[str, collections.deque[float]] = {}

    def application(self) -> web.Application:
        """An aiohttp application sending every method and path to ``dispatch``."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """Record the request, route it, record the answer."""
        if request.method == "POST" and self._is_upload(request.path):
            return await self._upload(request)  # streamed: never read whole here
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raw = b""
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={str(k): v for k, v in request.headers.items()},
            json=_parse_json(raw),
            at=time.monotonic(),
            body=raw,
        )
        self._state.requests.append(rec)
        response = await self._route(request, rec)
        if response is None:
            # Close the connection without a byte of answer; aiohttp's attempt to write
            # the placeholder below then goes nowhere.
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        rec.status = response.status
        return response

    # ------------------------------------------------------------------------ helpers

    def _answer(
        self,
        rec: RecordedRequest,
        code: int,
        msg: str | None = None,
        data: Any = None,
        *,
        http_status: int | None = None,
    ) -> web.Response:
        """An envelope answer. Errors go out as HTTP 200 with the code in the body, as the
        docs list them, unless ``error_status="mirror"`` asks for the code as HTTP status."""
        if http_status is None:
            http_status = 200 if code == 200 or self._state.error_status == "ok" else code
        rec.code = code
        return web.json_response(envelope(code, msg, data), status=http_status)

    def _authorized(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(token.strip().encode(), self._api_key.encode())

    async def _route(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse | None:
        path = request.path
        if path.startswith("/files/"):
            return self._serve_file(request, path)
        if path.startswith("/uploads/"):
            return self._uploads.serve(request)
        if path.startswith("/upstream/"):
            # Source URLs point at the upstream CDN, which in real traffic often refuses.
            return web.Response(status=403, text=_UPSTREAM_403, content_type="application/xml")
        if self._state.maintenance:
            return self._answer(rec, 455)
        profile = self._state.profile
        if path == profile.submit_path and request.method == "POST":
            return await self._submit(request, rec)
        if path == profile.details_path and request.method == "GET":
            return self._details(request, rec)
        if path == profile.credits_path and request.method == "GET":
            if not self._authorized(request):
                return self._answer(rec, 401, self._dialect.unauthorized_msg)
            return self._answer(rec, 200, data=self._state.credits)
        return self._answer(rec, 404, f"Not found: {request.method} {path}")

    # ------------------------------------------------------------------------- submit

    def _rate_limited(self) -> bool:
        if self._state.rate_limit is None:
            return False
        limit, window = self._state.rate_limit
        window = self._state.rate_window(window)
        now = time.monotonic()
        while self._creates and self._creates[0] <= now - window:
            self._creates.popleft()
        return len(self._creates) >= limit

    async def _submit(
        self, request: web.Request, rec: RecordedRequest
    ) -> web.StreamResponse | None:
        state, dialect, lifecycle = self._state, self._dialect, self._lifecycle
        if not self._authorized(request):
            return self._answer(rec, 401, dialect.unauthorized_msg)
        body = rec.json
        rejection = validate_submit(body, state.profile, dialect)
        if rejection is not None:
            return self._answer(rec, rejection.code, rejection.msg)
        assert isinstance(body, dict)
        choice = lifecycle.choose()
        if choice.name == "rate_limited":
            lifecycle.consume(choice, rejected=True)
            return self._answer(rec, int(choice.options.get("code", dialect.rate_limited)))
        if choice.name == "maintenance":
            lifecycle.consume(choice, rejected=True)
            return self._answer(rec, 455)
        if choice.name == "upload_unreachable" and dialect.sync_upload_error:
            lifecycle.consume(choice, rejected=True)
            return self._answer(rec, 451, choice.options.get("error_message"))
        if self._rate_limited():
            return self._answer(rec, dialect.rate_limited)
        if state.credits < state.task_cost:
            return self._answer(rec, dialect.no_credits)
        fetched = await self._fetch_input(str(body["uploadUrl"]))
        if fetched is not None and fetched.error is not None:
            message = f"Could not download the file at uploadUrl: {fetched.error}"
            if dialect.sync_upload_error:  # kie: refused at once, nothing created
                return self._answer(rec, 451, message)
            lifecycle.consume(choice, rejected=False)
            choice = Choice("upload_unreachable", {"error_message": message}, None)
        lifecycle.consume(choice, rejected=False)
        task = lifecycle.create_task(body, choice)
        if fetched is not None:
            task.input_size = fetched.size if fetched.error is None else None
            task.input_sha256 = fetched.sha256 or None
            task.input_error = fetched.error
        state.credits -= state.task_cost
        self._creates.append(time.monotonic())
        rec.task_id = task.task_id
        await lifecycle.start(task)

        name = choice.name
        if name == "server_error_after_create":
            return self._answer(rec, 500)
        if name == "http_502_after_create":
            return web.Response(status=502, text=_HTML_502, content_type="text/html")
        if name == "drop_after_create":
            return None
        if name == "hang_after_create":
            closing = self._background.closing
            seconds = float(choice.options.get("seconds", state.hang_seconds))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(closing.wait(), seconds)
            if closing.is_set():
                return None
        return self._answer(rec, 200, data={"taskId": task.task_id})

    async def _fetch_input(self, url: str) -> FetchResult | None:
        """Fetch ``uploadUrl`` as the API would, when it is on loopback and fetching is on;
        ``None`` when it is not fetched."""
        if not self._state.fetch_upload_url or not is_loopback_url(url):
            return None
        return await self._uploads.fetch(url)

    # ------------------------------------------------------------------------- uploads

    def _is_upload(self, path: str) -> bool:
        return self._state.profile.can_upload and path in self._uploads.paths()

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={str(k): v for k, v in request.headers.items()},
            json=None,
            at=time.monotonic(),
        )
        self._state.requests.append(rec)
        if self._state.maintenance:
            code, msg, data = 455, None, None
        elif not self._authorized(request):
            code, msg, data = 401, self._dialect.unauthorized_msg, None
        else:
            code, msg, data = await self._uploads.handle(request)
        body = envelope(code, msg, data)
        if code == 200:
            body["success"] = True
        http_status = 200 if code == 200 or self._state.error_status == "ok" else code
        rec.code, rec.status = code, http_status
        return web.json_response(body, status=http_status)

    # ------------------------------------------------------------------ details, files

    def _details(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        state, dialect = self._state, self._dialect
        if not self._authorized(request):
            return self._answer(rec, 401, dialect.unauthorized_msg)
        task_id = request.query.get("taskId", "")
        if not task_id:
            return self._answer(rec, dialect.invalid, "taskId is required")
        rec.task_id = task_id
        task = state.tasks.get(task_id)
        if task is None:
            return self._answer(rec, 404, "Task not found")
        if state.details_rate_limit is not None:
            now = time.monotonic()
            recent = self._details_times.setdefault(task_id, collections.deque())
            while recent and recent[0] <= now - state.rate_window(1.0):
                recent.popleft()
            if len(recent) >= state.details_rate_limit:
                return self._answer(rec, dialect.rate_limited)
            recent.append(now)
        task.details_answered += 1
        if task.details_answered <= state.young_details_null:
            return self._answer(rec, 200, data=None)
        data = details_data(
            task,
            create_time=state.create_time_value(task)
            if task.stage in ("first", "complete")
            else "",
            include_source=state.include_source_fields,
            legacy=state.legacy_details,
            repeat_error=dialect.repeats_error_in_response,
        )
        return self._answer(rec, 200, data=data)

    def _serve_file(self, request: web.Request, path: str) -> web.Response:
        """Serve a track's MP3, stream or cover once handed out, until retention ends."""
        not_found = web.Response(status=404, text="Not Found")
        if request.method not in ("GET", "HEAD"):
            return not_found
        parts = path.split("/")
        if len(parts) != 4:
            return not_found
        task = self._state.tasks.get(parts[2])
        name = parts[3]
        if task is None:
            return not_found
        for track in task.tracks:
            if name == f"{track.id}.mp3":
                published, content_type = track.audio_published_at, "audio/mpeg"
            elif name == f"{track.id}-stream.mp3":
                published, content_type = track.media_published_at, "audio/mpeg"
            elif name == f"{track.id}.jpeg":
                published, content_type = track.media_published_at, "image/jpeg"
            else:
                continue
            retention = self._state.scaled(self._state.retention_days * _DAY)
            if published is None or time.monotonic() > published + retention:
                return not_found
            if content_type == "image/jpeg":
                payload = jpeg_bytes(track.gray)
            else:
                payload = mp3_bytes(track.id.encode(), track.frames)
            return web.Response(body=payload, content_type=content_type)
        return not_found
