"""AddVocalsClient over real HTTP against the simulator (of each provider): submits,
retries, never paying twice, errors, details and credits."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from aiohttp import web
from helpers import (
    DEAD_CALLBACK,
    REQUEST,
    SECRET,
    SUBMIT,
    TASK,
    FakeApi,
    callback,
    client_for,
    envelope,
)

from addvocals_async import (
    AddVocalsClient,
    AddVocalsRequest,
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    CallbackReceiver,
    InsufficientCreditsError,
    InvalidParametersError,
    MaintenanceError,
    NotFoundError,
    RateLimitError,
    RequestValidationError,
    RetryPolicy,
    ServerError,
    Stage,
)
from addvocals_async.testing import Simulator


def submits(sim: Simulator) -> int:
    return sum(1 for r in sim.requests if r.method == "POST" and r.path == SUBMIT)


async def test_submit_sends_the_documented_body_and_polls_to_completion(sim: Simulator) -> None:
    sim.script("lost_all")
    async with client_for(sim) as client:
        task = await client.add_vocals(**REQUEST, style_weight=0.1 + 0.2, vocal_gender="f")
        result = await task.complete(timeout=10)
    assert submits(sim) == 1
    body = next(r.json for r in sim.requests if r.path == SUBMIT)
    assert body == {
        "uploadUrl": REQUEST["upload_url"],
        "prompt": REQUEST["prompt"],
        "title": REQUEST["title"],
        "style": REQUEST["style"],
        "negativeTags": REQUEST["negative_tags"],
        "callBackUrl": DEAD_CALLBACK,
        "vocalGender": "f",
        "styleWeight": 0.3,
    }
    assert result.stage is Stage.COMPLETE
    assert result.source == "poll"
    assert len(result.tracks) == 2
    assert all(t.audio_url and t.duration for t in result.tracks)
    assert task.stage is Stage.COMPLETE
    assert {t.id for t in result.tracks} == {t.id for t in sim.tasks[task.task_id].tracks}


async def test_an_addvocalsrequest_instance_is_accepted(sim: Simulator) -> None:
    sim.script("lost_all")
    request = AddVocalsRequest(**REQUEST, model="V5", callback_url=DEAD_CALLBACK)
    async with client_for(sim, callback_url=None) as client:
        task = await client.add_vocals(request)
        with pytest.raises(TypeError, match="not both"):
            await client.add_vocals(request, title="Other")
    assert task.task_id in sim.tasks
    assert sim.tasks[task.task_id].request["model"] == "V5"


async def test_rate_limited_twice_then_created_takes_exactly_three_posts(sim: Simulator) -> None:
    sim.script("rate_limited", times=2)
    async with client_for(sim) as client:
        task = await client.add_vocals(**REQUEST)
    assert submits(sim) == 3
    assert list(sim.tasks) == [task.task_id]
    expected = 429 if sim.provider == "kie" else 430
    assert [r.code for r in sim.requests if r.path == SUBMIT] == [expected, expected, 200]


async def test_rate_limit_gives_up_after_the_attempts(sim: Simulator) -> None:
    sim.script("rate_limited", times=10)
    async with client_for(sim, retry=RetryPolicy.no_wait(attempts=3)) as client:
        with pytest.raises(RateLimitError) as caught:
            await client.add_vocals(**REQUEST)
    assert submits(sim) == 3
    assert sim.tasks == {}
    assert caught.value.maybe_submitted is False


async def test_maintenance_is_retried(sim: Simulator) -> None:
    sim.script("maintenance", times=1)
    async with client_for(sim) as client:
        await client.add_vocals(**REQUEST)
    assert submits(sim) == 2
    assert len(sim.tasks) == 1


async def test_maintenance_that_lasts_raises_maintenance_error(sim: Simulator) -> None:
    sim.maintenance = True
    async with client_for(sim, retry=RetryPolicy.no_wait(attempts=2)) as client:
        with pytest.raises(MaintenanceError):
            await client.add_vocals(**REQUEST)
        with pytest.raises(MaintenanceError):
            await client.get_credits()
    assert submits(sim) == 2


@pytest.mark.parametrize(
    ("scenario", "error"),
    [
        ("server_error_after_create", ServerError),
        ("http_502_after_create", ServerError),
        ("drop_after_create", APIConnectionError),
    ],
)
async def test_ambiguous_submit_is_never_retried(
    sim: Simulator, scenario: str, error: type[Exception]
) -> None:
    sim.script(scenario)
    async with client_for(sim) as client:
        with pytest.raises(error) as caught:
            await client.add_vocals(**REQUEST)
    assert submits(sim) == 1
    assert len(sim.tasks) == 1  # it was created: a retry would have paid twice
    assert getattr(caught.value, "maybe_submitted", None) is True


async def test_a_submit_answer_slower_than_the_timeout_is_ambiguous(sim: Simulator) -> None:
    sim.script("hang_after_create", seconds=2.0)
    async with client_for(sim, request_timeout=0.3) as client:
        with pytest.raises(APITimeoutError) as caught:
            await client.add_vocals(**REQUEST)
    assert caught.value.maybe_submitted is True
    assert submits(sim) == 1
    assert "may have been created" in str(caught.value)


async def test_wrong_key_is_an_authentication_error_without_the_key(sim: Simulator) -> None:
    async with client_for(sim, api_key="wrong-key-0123456789") as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.add_vocals(**REQUEST)
        assert "wrong-key-0123456789" not in repr(client)
    assert caught.value.code == 401
    assert "wrong-key-0123456789" not in str(caught.value)
    assert submits(sim) == 1
    if sim.provider == "kie":
        assert caught.value.msg == "You do not have access permissions"


async def test_out_of_credits_is_the_providers_code_and_not_retried(sim: Simulator) -> None:
    sim.credits = 0
    async with client_for(sim) as client:
        with pytest.raises(InsufficientCreditsError) as caught:
            await client.add_vocals(**REQUEST)
    assert caught.value.code == (402 if sim.provider == "kie" else 429)
    assert submits(sim) == 1


async def test_server_side_validation_maps_to_invalid_parameters(sim: Simulator) -> None:
    # Client-side checks pass an UncheckedModel through; the simulator then rejects it.
    from addvocals_async import UncheckedModel

    async with client_for(sim) as client:
        with pytest.raises(InvalidParametersError) as caught:
            await client.add_vocals(**REQUEST, model=UncheckedModel("V99"))
    assert caught.value.code == (422 if sim.provider == "kie" else 400)
    assert submits(sim) == 1


async def test_invalid_requests_are_refused_before_anything_is_sent(sim: Simulator) -> None:
    async with client_for(sim) as client:
        with pytest.raises(RequestValidationError, match="style_weight"):
            await client.add_vocals(**REQUEST, style_weight=0.615)
        with pytest.raises(RequestValidationError, match="title"):
            await client.add_vocals(**{**REQUEST, "title": ""})
        long_title = "x" * 81
        if sim.provider == "kie":  # kie caps titles at 80 for every model
            with pytest.raises(RequestValidationError, match="at most 80"):
                await client.add_vocals(**{**REQUEST, "title": long_title})
        else:
            await client.add_vocals(**{**REQUEST, "title": long_title})
    assert submits(sim) == (0 if sim.provider == "kie" else 1)


async def test_a_callback_url_is_required_without_a_receiver(sim: Simulator) -> None:
    async with client_for(sim, callback_url=None) as client:
        with pytest.raises(RequestValidationError, match="receiver"):
            await client.add_vocals(**REQUEST)
    assert submits(sim) == 0


async def test_connection_refused_is_retried_and_not_ambiguous() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = AddVocalsClient(
        "k", base_url=f"http://127.0.0.1:{port}", callback_url=DEAD_CALLBACK,
        retry=RetryPolicy.no_wait(attempts=2),
    )  # fmt: skip
    async with client:
        with pytest.raises(APIConnectionError) as caught:
            await client.add_vocals(**REQUEST)
    assert caught.value.maybe_submitted is False


async def test_details_and_credits(sim: Simulator) -> None:
    sim.script("lost_all")
    async with client_for(sim) as client:
        before = await client.get_credits()
        task = await client.add_vocals(**REQUEST)
        young = await client.get_details(task.task_id)
        await sim.wait_idle()
        done = await client.get_details(task.task_id)
        after = await client.get_credits()
    assert before - after == sim.task_cost
    assert young.status in ("PENDING", "TEXT_SUCCESS")
    assert done.status == "SUCCESS"
    assert done.stage is Stage.COMPLETE
    assert isinstance(done.param, dict)
    assert done.param["title"] == REQUEST["title"]
    assert len(done.tracks) == 2


async def test_unknown_task_details(sim: Simulator) -> None:
    async with client_for(sim) as client:
        with pytest.raises(NotFoundError) as caught:
            await client.get_details("0" * 32)
    assert caught.value.task_id == "0" * 32


# ---------------------------------------------------------------- downloads


# ---------------------------------------------------------------- pure pieces


def test_missing_api_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADDVOCALS_API_KEY", raising=False)
    with pytest.raises(RequestValidationError, match="ADDVOCALS_API_KEY"):
        AddVocalsClient()
    monkeypatch.setenv("ADDVOCALS_API_KEY", "from-env-abcdef")
    client = AddVocalsClient()
    assert "from-env-abcdef" not in repr(client)


def test_the_suite_never_defaults_to_a_real_provider_host() -> None:
    assert str(AddVocalsClient("k").base_url) == "http://127.0.0.1:9"


# ---------------- never pay twice: ambiguous submits


async def test_maybe_submitted_holds_with_a_single_attempt() -> None:
    """Decided where the error is made, not by the retry loop a single attempt skips."""
    async with Simulator(speed=1000, seed=0) as sim:
        sim.script("server_error_after_create")
        client = AddVocalsClient(
            sim.api_key,
            base_url=sim.base_url,
            callback_url="https://h.example.org/c",
            retry=RetryPolicy(attempts=1),
        )
        async with client:
            with pytest.raises(ServerError) as caught:
                await client.add_vocals(**REQUEST)
    assert caught.value.maybe_submitted is True


async def test_an_ambiguous_submit_carries_the_task_id_a_callback_named(
    fake_api: FakeApi,
) -> None:
    async def submit(request: web.Request) -> web.Response:
        body = await request.json()
        async with aiohttp.ClientSession() as session:
            await session.post(body["callBackUrl"], json=callback(TASK, "text"))
        return envelope(None, code=500)

    base = await fake_api({("POST", SUBMIT): submit})
    async with (
        CallbackReceiver(secret=SECRET) as receiver,
        AddVocalsClient("k", base_url=base, receiver=receiver) as client,
    ):
        with pytest.raises(ServerError) as caught:
            await client.add_vocals(**REQUEST)
    assert caught.value.maybe_submitted is True
    assert caught.value.task_id == TASK


@pytest.mark.parametrize(
    ("base_url", "public_url", "warned"),
    [
        ("https://api.api.box", None, True),  # the real API, a loopback receiver: no callback
        ("https://api.api.box", "https://hooks.example.org/av", False),
        ("http://127.0.0.1:9", None, False),  # a simulator on this machine reaches it
    ],
)
async def test_a_receiver_the_api_cannot_reach_is_named_at_start(
    base_url: str, public_url: str | None, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Without this, a newcomer's first real task sat silent for the 60 s grace period."""
    caplog.set_level("WARNING", logger="addvocals_async")
    async with (
        CallbackReceiver(secret=SECRET, public_url=public_url) as receiver,
        AddVocalsClient("k", base_url=base_url, receiver=receiver),
    ):
        pass
    lines = [r.getMessage() for r in caplog.records if "cannot reach" in r.getMessage()]
    assert len(lines) == warned, lines
    if warned:
        assert "public_url=" in lines[0]
        assert "127.0.0.1" in lines[0]
