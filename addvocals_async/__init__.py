"""addvocals_async: an asyncio SDK for the Add Vocals music API.

``task = await client.add_vocals(...)`` then ``await task.complete()``: the built-in
``CallbackReceiver`` turns the API's staged callbacks into per-task results, and polling
of the details endpoint is the safety net. ``addvocals_async.testing`` holds a simulator
of the API for tests and demos.
"""

import typing as _typing

from ._client import AddVocalsClient
from ._config import (
    PollPolicy,
    RetryPolicy,
    configure_logging_from_environment,
    is_testing,
    set_testing,
)
from ._convert import WireFormat
from ._delivery import (
    Delivery,
    DeliveryBackend,
    DeliveryResult,
    InMemoryBackend,
    Subscriber,
)
from ._errors import (
    AddVocalsError,
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    DeliveryUnavailableError,
    DownloadExistsError,
    InsufficientCreditsError,
    InvalidParametersError,
    LocalFileError,
    MaintenanceError,
    NotFoundError,
    PromptTooLongError,
    RateLimitError,
    ReceiverClosedError,
    RequestValidationError,
    ServerError,
    TaskFailedError,
    TaskTimeoutError,
    UploadUnavailableError,
    WebhookVerificationError,
)
from ._models import (
    AddVocalsRequest,
    CallbackEvent,
    Stage,
    TaskDetails,
    TaskResult,
    Track,
    UploadedFile,
)
from ._providers import PROVIDERS, LengthLimits, ProviderProfile
from ._registry import TaskRegistry, TerminalListener
from ._signing import Secret, sign_webhook, verify_signature
from ._tasks import DetailsSource, TaskState, VocalTask
from ._throttle import SlidingWindowThrottle, SubmitThrottle
from ._validation import UncheckedModel
from ._version import __version__

if _typing.TYPE_CHECKING:
    from ._download import ProgressCallback
    from ._pending import PendingStore, PendingSubmit, SQLitePendingStore
    from ._receiver import (
        RECEIVER_KEY,
        CallbackReceiver,
        CallbackURL,
        EventHook,
        Reachability,
        ReceiverResponse,
        ReceiverStats,
    )
    from ._upload import UploadProgress, UploadSource

configure_logging_from_environment()
del configure_logging_from_environment

# Imported when first named, so that ``import addvocals_async`` and a client that never
# receives, resumes or uploads don't pay for them: the receiver (with the file server),
# the pending store (sqlite3), the uploader and the downloader.
_LAZY = {
    "ProgressCallback": "._download",
    "PendingStore": "._pending",
    "PendingSubmit": "._pending",
    "SQLitePendingStore": "._pending",
    "RECEIVER_KEY": "._receiver",
    "CallbackReceiver": "._receiver",
    "CallbackURL": "._receiver",
    "EventHook": "._receiver",
    "Reachability": "._receiver",
    "ReceiverResponse": "._receiver",
    "ReceiverStats": "._receiver",
    "UploadProgress": "._upload",
    "UploadSource": "._upload",
}


if not _typing.TYPE_CHECKING:  # a type checker sees the imports above, and no fallback

    def __getattr__(name: str) -> _typing.Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        import importlib

        value = getattr(importlib.import_module(module, __name__), name)
        globals()[name] = value  # once: later lookups find it without coming here
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "PROVIDERS",
    "RECEIVER_KEY",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AddVocalsClient",
    "AddVocalsError",
    "AddVocalsRequest",
    "AuthenticationError",
    "CallbackEvent",
    "CallbackReceiver",
    "CallbackURL",
    "Delivery",
    "DeliveryBackend",
    "DeliveryResult",
    "DeliveryUnavailableError",
    "DetailsSource",
    "DownloadExistsError",
    "EventHook",
    "InMemoryBackend",
    "InsufficientCreditsError",
    "InvalidParametersError",
    "LengthLimits",
    "LocalFileError",
    "MaintenanceError",
    "NotFoundError",
    "PendingStore",
    "PendingSubmit",
    "PollPolicy",
    "ProgressCallback",
    "PromptTooLongError",
    "ProviderProfile",
    "RateLimitError",
    "Reachability",
    "ReceiverClosedError",
    "ReceiverResponse",
    "ReceiverStats",
    "RequestValidationError",
    "RetryPolicy",
    "SQLitePendingStore",
    "Secret",
    "ServerError",
    "SlidingWindowThrottle",
    "Stage",
    "SubmitThrottle",
    "Subscriber",
    "TaskDetails",
    "TaskFailedError",
    "TaskRegistry",
    "TaskResult",
    "TaskState",
    "TaskTimeoutError",
    "TerminalListener",
    "Track",
    "UncheckedModel",
    "UploadProgress",
    "UploadSource",
    "UploadUnavailableError",
    "UploadedFile",
    "VocalTask",
    "WebhookVerificationError",
    "WireFormat",
    "__version__",
    "is_testing",
    "set_testing",
    "sign_webhook",
    "verify_signature",
]
