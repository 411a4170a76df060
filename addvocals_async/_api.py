"""The API's endpoints as plain calls over the transport: submit, details, credits.

``AddVocalsAPI`` knows the provider's paths and how to read each answer; it is also the
``DetailsSource`` tasks poll through, so a task never needs the client.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import yarl

from ._convert import WireFormat
from ._errors import APIConnectionError, APIError, RequestValidationError
from ._http import Transport
from ._models import TaskDetails
from ._providers import ProviderProfile

__all__ = ["AddVocalsAPI"]


class AddVocalsAPI:
    """Submit, details and credits against one base URL."""

    __slots__ = ("_details_url", "_submit_url", "_wire", "base_url", "profile", "transport")

    def __init__(
        self, transport: Transport, base_url: yarl.URL, profile: ProviderProfile, wire: WireFormat
    ) -> None:
        self.transport = transport
        self.base_url = base_url
        self.profile = profile
        self._wire = wire
        self._details_url = self.url(profile.details_path)
        self._submit_url = self.url(profile.submit_path)

    def url(self, path: str) -> yarl.URL:
        return self.base_url / path.lstrip("/")

    @property
    def can_poll(self) -> bool:
        return not self.transport.closed

    async def submit(self, body: Mapping[str, Any]) -> str:
        """Send a submit; return the task id. Never resent unless surely not created."""
        data = await self.transport.call("POST", self._submit_url, json_body=body, submit=True)
        task_id = data.get("taskId") if isinstance(data, Mapping) else None
        if not isinstance(task_id, str) or not task_id:
            raise APIConnectionError(
                "the API accepted the submit but its answer names no taskId",
                maybe_submitted=True,
            )
        return task_id

    async def details(self, task_id: str, *, attempts: int | None = None) -> TaskDetails:
        """What record-info says about ``task_id`` now."""
        if not isinstance(task_id, str) or not task_id.strip():
            raise RequestValidationError("task_id", task_id, "must be a non-empty task id")
        try:
            data = await self.transport.call(
                "GET", self._details_url, params={"taskId": task_id}, attempts=attempts
            )
        except APIError as exc:
            exc.task_id = exc.task_id or task_id
            raise
        try:
            return self._wire.structure_details(data, task_id)
        except Exception as exc:  # the converter reads loosely; anything left is garbage
            raise APIConnectionError(
                f"the details answer for task {task_id} could not be read: {type(exc).__name__}"
            ) from exc

    async def credits(self) -> int:
        """The account's remaining credits."""
        data = await self.transport.call("GET", self.url(self.profile.credits_path))
        if isinstance(data, bool):
            data = None
        if isinstance(data, int):
            return data
        if isinstance(data, float) and math.isfinite(data):
            return int(data)
        if isinstance(data, str):
            text = data.strip()
            if text.isascii() and text.isdigit() and len(text) <= 30:
                return int(text)
        raise APIConnectionError(f"the credits answer holds no number: {str(data)[:60]!r}")
