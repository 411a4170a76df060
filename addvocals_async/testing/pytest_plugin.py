"""The pytest plugin behind the ``addvocals_simulator`` fixture (registered via ``pytest11``).

The fixture yields a running ``Simulator`` at speed 1000 with seed 0, so a full task takes
about 0.2 s and ids repeat from run to run. "1000× faster" holds for the SDK's side too:
while the fixture is active the testing switch is on with ``time_scale=1/speed`` (retries
never wait, the poll timings and the 10 s throttle window shrink alike), and the
simulator's rate-limit windows are scaled by its speed (``scale_rate_limits=True``), so
30 concurrent jobs take a fraction of a second, not the 18 s of real rate windows.
Configure it per test or per module::

    @pytest.mark.addvocals_simulator(provider="kie", webhook_hmac_key="k", scenario="duplicates")
    async def test_my_code(addvocals_simulator): ...

pytest loads this module for every project that installs the package, so it must import
even where pytest-asyncio is missing; the fixture then fails with a message saying so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ._simulator import Simulator

__all__ = ["pytest_configure"]

_DEFAULTS: dict[str, Any] = {"speed": 1000.0, "seed": 0, "scale_rate_limits": True}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "addvocals_simulator(**kwargs): Simulator keyword arguments for the "
        "addvocals_simulator fixture (defaults: speed=1000, seed=0)",
    )


def _simulator_kwargs(request: pytest.FixtureRequest) -> dict[str, Any]:
    kwargs = dict(_DEFAULTS)
    # Closest last: a test's marker overrides its class's, which overrides its module's.
    for marker in reversed(list(request.node.iter_markers("addvocals_simulator"))):
        if marker.args:
            raise TypeError("@pytest.mark.addvocals_simulator takes keyword arguments only")
        kwargs.update(marker.kwargs)
    return kwargs


async def _running_simulator(request: pytest.FixtureRequest) -> AsyncIterator[Simulator]:
    """A running ``Simulator``; see the module docstring for configuration."""
    from .._config import set_testing  # not at import: pytest loads this plugin everywhere
    from ._simulator import Simulator

    kwargs = _simulator_kwargs(request)
    scale = min(1.0, 1.0 / float(kwargs["speed"])) if kwargs["speed"] > 0 else 1.0
    with set_testing(True, time_scale=scale):
        async with Simulator(**kwargs) as simulator:
            yield simulator


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - exercised only without pytest-asyncio

    @pytest.fixture(name="addvocals_simulator")
    def _missing_pytest_asyncio() -> None:
        pytest.fail("the addvocals_simulator fixture needs pytest-asyncio (pip install it)")

else:
    addvocals_simulator = pytest_asyncio.fixture(name="addvocals_simulator")(_running_simulator)
