"""addvocals_async: an asyncio SDK for the Add Vocals music API.

``task = await client.add_vocals(...)`` then ``await task.complete()``: the built-in
``CallbackReceiver`` turns the API's staged callbacks into per-task results, and polling
of the details endpoint is the safety net. ``addvocals_async.testing`` holds a simulator
of the API for tests and demos.
"""

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
from ._download import ProgressCallback
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
from ._pending import PendingStore, PendingSubmit, SQLitePendingStore
from ._providers import PROVIDERS, LengthLimits, ProviderProfile
from ._receiver import (
    RECEIVER_KEY,
    CallbackReceiver,
    CallbackURL,
    EventHook,
    Reachability,
    ReceiverResponse,
    ReceiverStats,
)
from ._registry import TaskRegistry, TerminalListener
from ._signing import Secret, sign_webhook, verify_signature
from ._tasks import DetailsSource, TaskState, VocalTask
from ._throttle import SlidingWindowThrottle, SubmitThrottle
from ._upload import UploadProgress, UploadSource
from ._validation import UncheckedModel
from ._version import __version__

configure_logging_from_environment()
del configure_logging_from_environment

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
