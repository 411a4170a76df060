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

from ._records import Delivery, RecordedRequest, SimTask, SimTrack
from ._scenarios import SCENARIOS, StageTimes
from ._simulator import Simulator, serve_forever
from ._wire import oracle_signature

__all__ = [
    "SCENARIOS",
    "Delivery",
    "RecordedRequest",
    "SimTask",
    "SimTrack",
    "Simulator",
    "StageTimes",
    "oracle_signature",
    "serve_forever",
]
