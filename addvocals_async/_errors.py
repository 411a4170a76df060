"""Every error the SDK raises, all importable from ``addvocals_async``::

    AddVocalsError
    ├── RequestValidationError (also ValueError)   bad arguments caught before anything is sent
    ├── APIError (.code, .msg, .http_status)       the API answered with a non-success code
    │   ├── InvalidParametersError                 400 / 422
    │   ├── AuthenticationError                    401
    │   ├── NotFoundError                          404
    │   ├── RateLimitError                         405, 430 (apibox, sunoapi); 429 (kie)
    │   ├── PromptTooLongError                     413
    │   ├── InsufficientCreditsError               429 (apibox, sunoapi); 402 (kie)
    │   ├── MaintenanceError                       455
    │   └── ServerError                            500 and other 5xx
    ├── APIConnectionError (.maybe_submitted)      network failure; may the task exist anyway?
    │   └── APITimeoutError
    ├── TaskFailedError (.task_id, .code, .msg)    the task failed (error callback, failed status)
    ├── TaskTimeoutError (also TimeoutError) (.task_id, .stage)
    ├── WebhookVerificationError (also ValueError)
    ├── ReceiverClosedError
    ├── DeliveryUnavailableError                  the delivery seam's store is unreachable
    ├── LocalFileError (also ValueError)          a local file is missing, too big, not audio
    ├── DownloadExistsError (also FileExistsError) a download would replace a file
    └── UploadUnavailableError                    the provider has no upload API (apibox)

No message built here ever contains an API key, an HMAC key or a receiver secret: errors
carry what the API said and what the caller passed, never credentials.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AddVocalsError",
    "AuthenticationError",
    "DeliveryUnavailableError",
    "DownloadExistsError",
    "InsufficientCreditsError",
    "InvalidParametersError",
    "LocalFileError",
    "MaintenanceError",
    "NotFoundError",
    "PromptTooLongError",
    "RateLimitError",
    "ReceiverClosedError",
    "RequestValidationError",
    "ServerError",
    "TaskFailedError",
    "TaskTimeoutError",
    "UploadUnavailableError",
    "WebhookVerificationError",
]


class AddVocalsError(Exception):
    """Base class of every error this SDK raises."""


class RequestValidationError(AddVocalsError, ValueError):
    """A request argument breaks a documented rule; nothing was sent.

    ``field`` is the snake_case argument name, ``value`` what was given and ``rule``
    the rule it breaks, in words.
    """

    def __init__(self, field: str, value: Any, rule: str) -> None:
        self.field = field
        self.value = value
        self.rule = rule
        self._init_args = (field, value, rule)
        shown = repr(value)
        if len(shown) > 80:
            shown = f"{shown[:60]}... ({len(value) if hasattr(value, '__len__') else '?'} chars)"
        super().__init__(f"{field}={shown}: {rule}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self._init_args, self.__dict__)


class APIError(AddVocalsError):
    """The API answered with a non-success code.

    ``code`` is the envelope's ``code`` (or the HTTP status when there was no envelope),
    ``msg`` the API's message, ``http_status`` the HTTP status of the answer and
    ``task_id`` the task concerned, where known. ``maybe_submitted`` is True when this
    answered a submit ambiguously (5xx): the task may exist, so do not blindly resubmit.
    """

    maybe_submitted: bool = False
    callback_ref: str | None = None
    """The reference of the callback URL an ambiguous submit was sent with, which
    ``client.recover(error)`` uses to find the task it created."""

    def __init__(
        self,
        code: int,
        msg: str,
        *,
        http_status: int | None = None,
        task_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.code = code
        self.msg = msg
        self.http_status = http_status
        self.task_id = task_id
        self.retry_after = retry_after
        super().__init__(code, msg)

    reading: str | None = None
    """What the error means, said once for its class: 429 is "out of credits" on apibox
    but "rate limited" on kie, so the number alone misleads."""

    def __str__(self) -> str:
        # Built when shown: the client adds the task id after the error is made.
        odd_status = self.http_status not in (None, 200, self.code)
        where = f" (HTTP {self.http_status})" if odd_status else ""
        about = f" for task {self.task_id}" if self.task_id else ""
        text = f"API error {self.code}{where}{about}: {self.msg or 'no message'}"
        reading = self.reading
        if reading and reading.lower() not in (self.msg or "").lower():
            text += f" ({reading})"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.msg), self.__dict__)


class InvalidParametersError(APIError):
    """400 (apibox, sunoapi; also content-policy hits) or 422 (kie)."""


class AuthenticationError(APIError):
    """401: the API key is missing, wrong or revoked."""

    reading = "the API key is missing or wrong"


class NotFoundError(APIError):
    """404: wrong method or path, or an unknown task."""


class RateLimitError(APIError):
    """Too many requests: 405 and 430 on apibox/sunoapi, 429 on kie. Retried on submit."""

    reading = "rate limited: too many requests, retry later"


class PromptTooLongError(APIError):
    """413 on apibox/sunoapi: the prompt or theme is too long."""

    reading = "a text field is too long"


class InsufficientCreditsError(APIError):
    """Not enough credits: 429 on apibox/sunoapi, 402 on kie."""

    reading = "out of credits: top up the account; retrying will not help"


class MaintenanceError(APIError):
    """455: the service is down for maintenance. Retried on submit."""

    reading = "the API is under maintenance, retry later"


class ServerError(APIError):
    """500 and other 5xx. On submit the task may exist anyway: check ``maybe_submitted``
    on connection errors, or look the task up before submitting again."""


class APIConnectionError(AddVocalsError):
    """The request did not get a usable answer.

    ``maybe_submitted`` is True when a submit may have reached the API (the request was
    written before the failure), so a new submit could pay twice. ``task_id`` is set when
    the task is known anyway (a callback named it before the answer was lost).
    """

    callback_ref: str | None = None
    """As ``APIError.callback_ref``: what ``client.recover(error)`` finds the task by."""

    def __init__(
        self, message: str, *, maybe_submitted: bool = False, task_id: str | None = None
    ) -> None:
        self.maybe_submitted = maybe_submitted
        self.task_id = task_id
        if maybe_submitted:
            message += " (the task may have been created anyway; do not blindly resubmit)"
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self.args, self.__dict__)


class APITimeoutError(APIConnectionError):
    """The API did not answer within the request timeout."""


class TaskFailedError(AddVocalsError):
    """The task failed: an error callback, a non-200 callback code or a failed status.

    ``msg`` is the API's message, verbatim; ``meaning`` what the provider documents for
    ``code`` (kie's 531: "credits refunded, you may retry"), when it documents it.
    ``str(error)`` shows both.
    """

    def __init__(
        self,
        task_id: str,
        code: int | None,
        msg: str,
        *,
        status: str | None = None,
        meaning: str | None = None,
    ) -> None:
        self.task_id = task_id
        self.code = code
        self.msg = msg
        self.status = status
        self.meaning = meaning
        parts = [f"task {task_id} failed"]
        if code is not None:
            parts.append(f"with code {code}")
        if status:
            parts.append(f"(status {status})")
        text = " ".join(parts) + f": {msg or 'no message'}"
        if meaning and meaning.lower() not in (msg or "").lower():
            text += f" ({meaning})"
        super().__init__(text)

    def __reduce__(self) -> tuple[Any, ...]:
        rebuild = functools.partial(type(self), status=self.status, meaning=self.meaning)
        return (rebuild, (self.task_id, self.code, self.msg), self.__dict__)


class TaskTimeoutError(AddVocalsError, TimeoutError):
    """A wait reached its deadline. ``stage`` is the stage waited for; the task itself
    may still finish, so ``client.task(task_id)`` can pick it up later."""

    def __init__(self, task_id: str, stage: str, timeout: float | None = None) -> None:
        self.task_id = task_id
        self.stage = stage
        self.timeout = timeout
        after = f" after {timeout:g} s" if timeout is not None else ""
        super().__init__(f"task {task_id} did not reach stage {stage!r}{after}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.task_id, self.stage, self.timeout), self.__dict__)


class WebhookVerificationError(AddVocalsError, ValueError):
    """A callback failed authentication (token, signature, time window) or its checks."""


class ReceiverClosedError(AddVocalsError):
    """The callback receiver closed while a waiter still needed it and no polling fallback
    was available."""


class DeliveryUnavailableError(AddVocalsError):
    """The delivery seam's store cannot be reached right now (a backend over a server that
    is down). Nothing was stored: the receiver answers 503, and the sender tries again."""


class LocalFileError(AddVocalsError, ValueError):
    """A local file given to send (``client.upload``, ``add_vocals(audio=...)``,
    ``receiver.serve_file``) cannot be: it is missing, not a regular file, unreadable,
    empty, over the size limit, or its first bytes are not those of an audio file.
    Nothing was sent. ``path`` is the file as given, ``reason`` the problem in words."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.reason), self.__dict__)


class DownloadExistsError(AddVocalsError, FileExistsError):
    """``client.download`` refused to replace a file that is already there (pass
    ``overwrite=True`` to replace it); nothing was written. A ``FileExistsError`` too, so
    code that caught that keeps working; ``filename`` is the file that exists."""

    def __init__(self, filename: str, reason: str) -> None:
        super().__init__(f"{filename} {reason}")
        self.filename = filename
        self.reason = reason

    def __str__(self) -> str:  # not OSError's "[Errno None] None: ...", which filename brings
        return f"{self.filename} {self.reason}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.filename, self.reason))


class UploadUnavailableError(AddVocalsError):
    """The provider documents no file-upload API (api.box): ``client.upload`` cannot work
    there. Let the receiver serve the file instead: ``add_vocals(audio=Path(...))`` or
    ``upload_url=receiver.serve_file(path)``."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        super().__init__(
            f"the {provider} provider has no file-upload API: let your receiver serve the "
            "file instead, with add_vocals(audio=Path(...), ...) or "
            "upload_url=receiver.serve_file(path)"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.provider,), self.__dict__)
