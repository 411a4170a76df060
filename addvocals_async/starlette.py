"""Route callbacks through your own Starlette or FastAPI application.

Behind the ``starlette`` extra (``pip install 'addvocals_async[starlette]'``)::

    from fastapi import FastAPI                  # or starlette.applications.Starlette
    from addvocals_async import CallbackReceiver
    from addvocals_async.starlette import callback_route

    receiver = CallbackReceiver(public_url="https://hooks.example.org/addvocals")
    app = FastAPI()
    app.router.routes.append(callback_route(receiver))   # POST /addvocals/cb/{token}

Your application serves the route: don't start the receiver (no ``async with``, no
``start()``); give it the ``public_url`` the API reaches, and close it with
``await receiver.aclose()`` when the application stops (its lifespan). Every callback URL
is ``{public_url}/cb/{token}``, so the route's path is the public URL's path.
"""

from __future__ import annotations

import yarl
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._receiver import CallbackReceiver

__all__ = ["callback_route"]


def callback_route(receiver: CallbackReceiver, *, path: str | None = None) -> Route:
    """A ``Route`` for ``POST {path}/cb/{token}`` answering callbacks with ``receiver``.

    ``path`` defaults to the path of the receiver's ``public_url`` (the URL the API posts
    to), else to its ``path`` (``/addvocals``). The answer (status and JSON body) is the
    receiver's own: 200 for a genuine callback, 403, 413 or 400 for the rest. The body is
    read only up to the receiver's ``max_body_size`` (and one byte more, to say 413).
    """
    if path is None:
        path = yarl.URL(receiver.public_url).path if receiver.public_url else receiver.path
    prefix = path.rstrip("/")

    async def addvocals_callback(request: Request) -> Response:
        answer = await receiver.handle_token(
            request.path_params["token"], request.headers, await _bounded_body(request, receiver)
        )
        return Response(answer.json(), status_code=answer.status, media_type="application/json")

    return Route(f"{prefix}/cb/{{token}}", addvocals_callback, methods=["POST"])


async def _bounded_body(request: Request, receiver: CallbackReceiver) -> bytes:
    """The body, but never more than ``max_body_size + 1`` bytes of it in memory."""
    limit = receiver.max_body_size
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(chunks)[: limit + 1]
