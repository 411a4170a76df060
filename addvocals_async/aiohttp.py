"""Mount the callback receiver in your own aiohttp application.

In the style of ``svcs.aiohttp``::

    from aiohttp import web
    from addvocals_async import CallbackReceiver
    from addvocals_async.aiohttp import get_receiver, init_app

    app = web.Application()
    receiver = CallbackReceiver(public_url="https://hooks.example.org/addvocals")
    init_app(app, receiver)              # POST /addvocals/cb/{token}
    ...
    receiver = get_receiver(app)         # in a handler: get_receiver(request.app)

Don't ``start()`` a mounted receiver: your application serves its route. It closes with
the application (``close_with_app=False`` to keep it open).
"""

from __future__ import annotations

from aiohttp import web

from ._receiver import RECEIVER_KEY, CallbackReceiver

__all__ = ["RECEIVER_KEY", "get_receiver", "init_app"]


def init_app(
    app: web.Application,
    receiver: CallbackReceiver,
    *,
    path: str | None = None,
    close_with_app: bool = True,
) -> web.Application:
    """Add the callback route ``POST {path}/cb/{token}`` to ``app`` (``path`` defaults to
    the receiver's own, ``/addvocals``), store the receiver under ``RECEIVER_KEY``, and
    close it when the application cleans up. Returns ``app``."""
    receiver.mount(app, path=path, close_with_app=close_with_app)
    return app


def get_receiver(app: web.Application) -> CallbackReceiver:
    """The receiver ``init_app`` stored in ``app``; ``KeyError`` with a hint if none."""
    try:
        return app[RECEIVER_KEY]
    except KeyError:
        raise KeyError(
            "no CallbackReceiver in this application: call "
            "addvocals_async.aiohttp.init_app(app, receiver) first"
        ) from None
