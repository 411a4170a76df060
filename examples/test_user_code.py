"""Testing your own code with the simulator fixture (runs in this project's CI).

The `addvocals_simulator` fixture comes with the package (a pytest plugin): a running
simulator on 127.0.0.1, 1000x faster than the real API, with the documented faults.
Copied into a project of your own it runs with a plain `pytest` (pytest-asyncio, from
`pip install 'addvocals_async[testing]'`, runs the marked coroutines).
"""

import pytest

from addvocals_async import AddVocalsClient, CallbackReceiver, TaskFailedError
from addvocals_async.testing import Simulator

# Every test here is a coroutine: without this mark, a project not in pytest-asyncio's
# auto mode would fail each one with "async def functions are not natively supported".
pytestmark = pytest.mark.asyncio


async def make_song(client: AddVocalsClient, title: str) -> list[str]:
    """The user code under test: submit and return the audio URLs."""
    task = await client.add_vocals(
        upload_url="https://cdn.example.org/instrumental.mp3",
        prompt="Warm vocals",
        title=title,
        style="Soul",
        negative_tags="Metal",
    )
    result = await task.complete(timeout=30)
    return [track.audio_url for track in result.tracks]


async def test_make_song_returns_two_tracks(addvocals_simulator: Simulator) -> None:
    sim = addvocals_simulator
    async with (
        CallbackReceiver() as receiver,
        AddVocalsClient(sim.api_key, base_url=sim.base_url, receiver=receiver) as client,
    ):
        urls = await make_song(client, "Test Song")
    assert len(urls) == 2
    assert all(url.startswith(sim.base_url) for url in urls)


async def test_make_song_survives_duplicate_and_reordered_callbacks(
    addvocals_simulator: Simulator,
) -> None:
    sim = addvocals_simulator
    sim.script("duplicates")
    sim.script("out_of_order")
    async with (
        CallbackReceiver() as receiver,
        AddVocalsClient(sim.api_key, base_url=sim.base_url, receiver=receiver) as client,
    ):
        assert len(await make_song(client, "One")) == 2
        assert len(await make_song(client, "Two")) == 2


@pytest.mark.addvocals_simulator(provider="kie")
async def test_make_song_reports_a_failed_task(addvocals_simulator: Simulator) -> None:
    sim = addvocals_simulator
    sim.script("error", error_code=531)
    async with (
        CallbackReceiver() as receiver,
        AddVocalsClient(
            sim.api_key, base_url=sim.base_url, provider="kie", receiver=receiver
        ) as client,
    ):
        with pytest.raises(TaskFailedError) as caught:
            await make_song(client, "Doomed")
    assert caught.value.code == 531
