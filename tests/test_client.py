"""AddVocalsClient over real HTTP against the simulator: submits, retries, errors,
details, credits, polling and downloads."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from addvocals_async import (
    AddVocalsClient,
    AddVocalsRequest,
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    InsufficientCreditsError,
    InvalidParametersError,
    MaintenanceError,
    NotFoundError,
    PollPolicy,
    RateLimitError,
    RequestValidationError,
    RetryPolicy,
    ServerError,
    Stage,
    TaskFailedError,
    TaskTimeoutError,
    Track,
)
from addvocals_async._http import parse_retry_after
from addvocals_async.testing import Simulator

SUBMIT = "/api/v1/generate/add-vocals"
DETAILS = "/api/v1/generate/record-info"
# Nothing listens here; with the lost_* scenarios the simulator never calls it either.
DEAD_CALLBACK = "http://127.0.0.1:9/cb"

REQUEST: dict[str, Any] = {
    "upload_url": "https://cdn.example.org/stems/harbour-instrumental.wav",
    "prompt": "A warm, breathy female vocal about lanterns on a quiet harbour at night",
    "title": "Harbour Lanterns",
    "style": "Neo Soul",
    "negative_tags": "Screamo, Distorted Vocals",
}


@pytest.fixture(params=["apibox", "sunoapi", "kie"])
def provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def sim(provider: str) -> AsyncIterator[Simulator]:
    async with Simulator(provider=provider, speed=1000, seed=1, rate_limit=None) as simulator:
        yield simulator


def make_client(sim: Simulator, **kwargs: object) -> AddVocalsClient:
    options: dict[str, object] = {
        "base_url": sim.base_url,
        "provider": sim.provider,
        "callback_url": DEAD_CALLBACK,
        "retry": RetryPolicy.no_wait(),
        "poll": PollPolicy.fast(),
    }
    options.update(kwargs)
    key = options.pop("api_key", sim.api_key)
    return AddVocalsClient(key, **options)  # type: ignore[arg-type]


def submits(sim: Simulator) -> int:
    return sum(1 for r in sim.requests if r.method == "POST" and r.path == SUBMIT)


async def test_submit_sends_the_documented_body_and_polls_to_completion(sim: Simulator) -> None:
    sim.script("lost_all")
    async with make_client(sim) as client:
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
    async with make_client(sim, callback_url=None) as client:
        task = await client.add_vocals(request)
        with pytest.raises(TypeError, match="not both"):
            await client.add_vocals(request, title="Other")
    assert task.task_id in sim.tasks
    assert sim.tasks[task.task_id].request["model"] == "V5"


async def test_rate_limited_twice_then_created_takes_exactly_three_posts(sim: Simulator) -> None:
    sim.script("rate_limited", times=2)
    async with make_client(sim) as client:
        task = await client.add_vocals(**REQUEST)
    assert submits(sim) == 3
    assert list(sim.tasks) == [task.task_id]
    expected = 429 if sim.provider == "kie" else 430
    assert [r.code for r in sim.requests if r.path == SUBMIT] == [expected, expected, 200]


async def test_rate_limit_gives_up_after_the_attempts(sim: Simulator) -> None:
    sim.script("rate_limited", times=10)
    async with make_client(sim, retry=RetryPolicy.no_wait(attempts=3)) as client:
        with pytest.raises(RateLimitError) as caught:
            await client.add_vocals(**REQUEST)
    assert submits(sim) == 3
    assert sim.tasks == {}
    assert caught.value.maybe_submitted is False


async def test_maintenance_is_retried(sim: Simulator) -> None:
    sim.script("maintenance", times=1)
    async with make_client(sim) as client:
        await client.add_vocals(**REQUEST)
    assert submits(sim) == 2
    assert len(sim.tasks) == 1


async def test_maintenance_that_lasts_raises_maintenance_error(sim: Simulator) -> None:
    sim.maintenance = True
    async with make_client(sim, retry=RetryPolicy.no_wait(attempts=2)) as client:
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
    async with make_client(sim) as client:
        with pytest.raises(error) as caught:
            await client.add_vocals(**REQUEST)
    assert submits(sim) == 1
    assert len(sim.tasks) == 1  # it was created: a retry would have paid twice
    assert getattr(caught.value, "maybe_submitted", None) is True


async def test_a_submit_answer_slower_than_the_timeout_is_ambiguous(sim: Simulator) -> None:
    sim.script("hang_after_create", seconds=2.0)
    async with make_client(sim, request_timeout=0.3) as client:
        with pytest.raises(APITimeoutError) as caught:
            await client.add_vocals(**REQUEST)
    assert caught.value.maybe_submitted is True
    assert submits(sim) == 1
    assert "may have been created" in str(caught.value)


async def test_wrong_key_is_an_authentication_error_without_the_key(sim: Simulator) -> None:
    async with make_client(sim, api_key="wrong-key-0123456789") as client:
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
    async with make_client(sim) as client:
        with pytest.raises(InsufficientCreditsError) as caught:
            await client.add_vocals(**REQUEST)
    assert caught.value.code == (402 if sim.provider == "kie" else 429)
    assert submits(sim) == 1


async def test_server_side_validation_maps_to_invalid_parameters(sim: Simulator) -> None:
    # Client-side checks pass an UncheckedModel through; the simulator then rejects it.
    from addvocals_async import UncheckedModel

    async with make_client(sim) as client:
        with pytest.raises(InvalidParametersError) as caught:
            await client.add_vocals(**REQUEST, model=UncheckedModel("V99"))
    assert caught.value.code == (422 if sim.provider == "kie" else 400)
    assert submits(sim) == 1


async def test_invalid_requests_are_refused_before_anything_is_sent(sim: Simulator) -> None:
    async with make_client(sim) as client:
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
    async with make_client(sim, callback_url=None) as client:
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
    async with make_client(sim) as client:
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
    async with make_client(sim) as client:
        with pytest.raises(NotFoundError) as caught:
            await client.get_details("0" * 32)
    assert caught.value.task_id == "0" * 32


async def test_failure_seen_only_by_polling_fails_the_wait(sim: Simulator) -> None:
    sim.script("failed_status_only")
    async with make_client(sim) as client:
        task = await client.add_vocals(**REQUEST)
        with pytest.raises(TaskFailedError) as caught:
            await task.complete(timeout=10)
    assert caught.value.task_id == task.task_id
    assert caught.value.status in (
        "GENERATE_AUDIO_FAILED",
        "SENSITIVE_WORD_ERROR",
        "CREATE_TASK_FAILED",
    )
    assert task.stage is Stage.FAILED


async def test_reattach_by_task_id_polls_to_the_result(sim: Simulator) -> None:
    sim.script("lost_all")
    async with make_client(sim) as first:
        task_id = (await first.add_vocals(**REQUEST)).task_id
    async with make_client(sim) as second:
        result = await second.task(task_id).complete(timeout=10)
    assert result.task_id == task_id
    assert len(result.tracks) == 2


async def test_polling_respects_the_minimum_interval(sim: Simulator) -> None:
    sim.script("lost_all")
    policy = PollPolicy(grace=0, initial=0.01, maximum=0.01, min_interval=0.1, default_timeout=10)
    async with make_client(sim, poll=policy) as client:
        task = await client.add_vocals(**REQUEST)
        await asyncio.gather(task.text(), task.first(), task.complete())
    polls = sorted(r.at for r in sim.requests if r.path == DETAILS)
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    assert polls, "the task must have been polled"
    assert min(gaps, default=1.0) >= 0.09  # shared by all three waiters, never faster


# ---------------------------------------------------------------- downloads


async def _finished_tracks(sim: Simulator, client: AddVocalsClient) -> Sequence[Track]:
    sim.script("lost_all")
    task = await client.add_vocals(**REQUEST)
    return (await task.complete(timeout=10)).tracks


async def test_download_writes_both_tracks_atomically(sim: Simulator, tmp_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    async with make_client(sim) as client:
        tracks = await _finished_tracks(sim, client)
        paths = [
            await client.download(t, tmp_path, progress=lambda r, n: seen.append((r, n)))
            for t in tracks
        ]
        cover = await client.download(tracks[0], tmp_path / "cover.jpeg", kind="image")
        with pytest.raises(FileExistsError):
            await client.download(tracks[0], paths[0])
        again = await client.download(tracks[0], paths[0], overwrite=True)
    assert again == paths[0]
    assert [p.name for p in paths] == [f"{t.id}.mp3" for t in tracks]
    for path in paths:
        data = path.read_bytes()
        assert data[:3] == b"ID3" or (data[0] == 0xFF and data[1] & 0xE0 == 0xE0)
    assert paths[0].read_bytes() != paths[1].read_bytes()
    assert cover.read_bytes()[:2] == b"\xff\xd8"
    assert seen
    assert seen[-1][0] == seen[-1][1]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [paths[0].name, paths[1].name, "cover.jpeg"]
    )  # no .part files left
    file_gets = [r for r in sim.requests if r.path.startswith("/files/")]
    assert file_gets
    assert all("Authorization" not in r.headers for r in file_gets)


async def test_download_of_an_expired_file_says_so_and_leaves_nothing(
    sim: Simulator, tmp_path: Path
) -> None:
    async with make_client(sim) as client:
        tracks = await _finished_tracks(sim, client)
        sim.retention_days = 0
        with pytest.raises(NotFoundError, match="14 days"):
            await client.download(tracks[0], tmp_path)
    assert list(tmp_path.iterdir()) == []


async def test_download_refuses_unfinished_and_non_http_tracks(
    sim: Simulator, tmp_path: Path
) -> None:
    async with make_client(sim) as client:
        partial = Track(id="p", audio_url="", stream_audio_url="")
        with pytest.raises(RequestValidationError, match="allow_stream"):
            await client.download(partial, tmp_path)
        with pytest.raises(RequestValidationError, match="http"):
            await client.download(Track(id="f", audio_url="file:///etc/passwd"), tmp_path)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- pure pieces


def test_retry_after_parsing() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_missing_api_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADDVOCALS_API_KEY", raising=False)
    with pytest.raises(RequestValidationError, match="ADDVOCALS_API_KEY"):
        AddVocalsClient()
    monkeypatch.setenv("ADDVOCALS_API_KEY", "from-env-abcdef")
    client = AddVocalsClient()
    assert "from-env-abcdef" not in repr(client)


async def test_downloaded_files_get_ordinary_permissions(sim: Simulator, tmp_path: Path) -> None:
    """Written aside and renamed, yet created like any new file (the umask applies)."""
    umask = os.umask(0o022)
    try:
        async with make_client(sim) as client:
            tracks = await _finished_tracks(sim, client)
            path = await client.download(tracks[0], tmp_path)
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


async def test_a_failed_poll_is_not_retried_in_a_burst(sim: Simulator) -> None:
    """Each poll is one request; the poll schedule is the retry (maintenance answers here)."""
    sim.script("lost_all")
    policy = PollPolicy(grace=0, initial=0.2, maximum=0.2, min_interval=0.2, default_timeout=5)
    async with make_client(sim, poll=policy, retry=RetryPolicy.no_wait(attempts=5)) as client:
        task = await client.add_vocals(**REQUEST)
        sim.maintenance = True
        with pytest.raises(TaskTimeoutError):
            await task.complete(timeout=1.0)
    polls = [r for r in sim.requests if r.path == DETAILS]
    # About one per 0.2 s plus the last-chance poll; five attempts each would be ~30.
    assert 3 <= len(polls) <= 9
    assert all(r.code == 455 for r in polls)


async def test_a_file_that_appears_during_a_download_is_not_overwritten(
    sim: Simulator, tmp_path: Path
) -> None:
    async with make_client(sim) as client:
        tracks = await _finished_tracks(sim, client)
        target = tmp_path / "song.mp3"

        def someone_else_writes(received: int, total: int | None) -> None:
            if not target.exists():
                target.write_bytes(b"theirs")

        with pytest.raises(FileExistsError, match="appeared meanwhile"):
            await client.download(tracks[0], target, progress=someone_else_writes)
    assert target.read_bytes() == b"theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["song.mp3"]  # no .part left behind


def test_the_suite_never_defaults_to_a_real_provider_host() -> None:
    assert str(AddVocalsClient("k").base_url) == "http://127.0.0.1:9"
