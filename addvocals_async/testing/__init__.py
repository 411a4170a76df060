"""A simulator of the Add Vocals API, for your tests and ours.

``Simulator`` runs the API on 127.0.0.1 with real task lifecycles, real callbacks to your
receiver, the documented faults and a clock you can speed up::

    from addvocals_async.testing import Simulator

    async with Simulator(provider="apibox", speed=1000, seed=0) as sim:
        sim.script("duplicates")
        ...  # point your client at sim.base_url with sim.api_key
        await sim.wait_idle()
        assert sim.callback_types(task_id) == ["text", "text", "first", "first", ...]

With pytest, the ``addvocals_simulator`` fixture gives you a running one (configure it with
``@pytest.mark.addvocals_simulator(provider="kie", ...)``). ``python -m
addvocals_async.testing`` runs one standalone for any client written for the real API.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._records import Delivery, RecordedRequest, SimTask, SimTrack
    from ._scenarios import SCENARIOS, StageTimes
    from ._simulator import Simulator, serve_forever
    from ._uploads import UploadedRecord
    from ._wire import oracle_signature

# Imported on first use: pytest loads this package's plugin in every session of every
# project that installs the SDK, and the CLI reads the scenario names at start-up, so
# neither should pay for the simulator (and aiohttp's server) unless it runs one.
_WHERE = {
    "Delivery": "_records",
    "RecordedRequest": "_records",
    "SimTask": "_records",
    "SimTrack": "_records",
    "SCENARIOS": "_scenarios",
    "StageTimes": "_scenarios",
    "Simulator": "_simulator",
    "serve_forever": "_simulator",
    "UploadedRecord": "_uploads",
    "oracle_signature": "_wire",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{where}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "SCENARIOS",
    "Delivery",
    "RecordedRequest",
    "SimTask",
    "SimTrack",
    "Simulator",
    "StageTimes",
    "UploadedRecord",
    "oracle_signature",
    "serve_forever",
]
