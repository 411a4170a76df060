"""Downloads: whole files written atomically, safe file names, expired links and error
pages refused, nothing half-written left behind."""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from pathlib import Path

import pytest
from aiohttp import web
from helpers import REQUEST, FakeApi, client_for

from addvocals_async import (
    AddVocalsClient,
    APIError,
    DownloadExistsError,
    NotFoundError,
    RequestValidationError,
    Track,
)
from addvocals_async.testing import Simulator


async def test_a_track_id_cannot_lead_a_download_out_of_its_folder(
    fake_api: FakeApi, tmp_path: Path
) -> None:
    async def audio(request: web.Request) -> web.Response:
        return web.Response(body=b"ID3" + b"\0" * 64, content_type="audio/mpeg")

    base = await fake_api({("GET", "/f/{name}"): audio})
    folder = tmp_path / "downloads"
    folder.mkdir()
    async with AddVocalsClient("k", callback_url="https://h.example.org/c") as client:
        for bad_id in ("../escaped", "/etc/absolute", "a/b", ".hidden"):
            track = Track(id=bad_id, audio_url=f"{base}/f/x.sh")
            path = await client.download(track, folder)
            assert path.parent == folder
            assert path.name.startswith("track-")
            assert path.suffix == ".mp3"  # a URL's ".sh" is not kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["downloads"]


async def test_downloads_check_plain_lengths_only_and_refuse_error_pages(
    fake_api: FakeApi, tmp_path: Path
) -> None:
    payload = b"ID3" + bytes(range(256)) * 200

    async def gzipped(request: web.Request) -> web.Response:
        body = gzip.compress(payload)
        return web.Response(body=body, headers={"Content-Encoding": "gzip",
                                                "Content-Type": "audio/mpeg"})  # fmt: skip

    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html>link expired</html>", content_type="text/html")

    base = await fake_api({("GET", "/gz.mp3"): gzipped, ("GET", "/html.mp3"): html})
    async with AddVocalsClient("k", callback_url="https://h.example.org/c") as client:
        path = await client.download(Track(id="gz", audio_url=f"{base}/gz.mp3"), tmp_path)
        assert path.read_bytes() == payload
        with pytest.raises(APIError, match="text/html"):
            await client.download(Track(id="html", audio_url=f"{base}/html.mp3"), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gz.mp3"]


async def _finished_tracks(sim: Simulator, client: AddVocalsClient) -> Sequence[Track]:
    sim.script("lost_all")
    task = await client.add_vocals(**REQUEST)
    return (await task.complete(timeout=10)).tracks


async def test_download_writes_both_tracks_atomically(sim: Simulator, tmp_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    async with client_for(sim) as client:
        tracks = await _finished_tracks(sim, client)
        paths = [
            await client.download(t, tmp_path, progress=lambda r, n: seen.append((r, n)))
            for t in tracks
        ]
        cover = await client.download(tracks[0], tmp_path / "cover.jpeg", kind="image")
        with pytest.raises(DownloadExistsError) as refused:
            await client.download(tracks[0], paths[0])
        assert isinstance(refused.value, FileExistsError)  # what code before it caught
        assert refused.value.filename == str(paths[0])
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


@pytest.mark.parametrize("given", ["songs", "songs/", "out/songs"])
async def test_a_folder_that_does_not_exist_yet_is_made_and_holds_every_track(
    sim: Simulator, tmp_path: Path, given: str
) -> None:
    """The rule: a path that exists as a folder, ends in "/", or has no suffix is a folder
    (made when missing); both tracks land inside, named after their ids."""
    async with client_for(sim) as client:
        tracks = await _finished_tracks(sim, client)
        paths = [await client.download(t, str(tmp_path / given)) for t in tracks]
    folder = tmp_path / given.rstrip("/")
    assert folder.is_dir()
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{t.id}.mp3" for t in tracks)
    assert [p.parent for p in paths] == [folder, folder]


async def test_a_name_with_a_suffix_is_a_file_name(sim: Simulator, tmp_path: Path) -> None:
    async with client_for(sim) as client:
        tracks = await _finished_tracks(sim, client)
        path = await client.download(tracks[0], tmp_path / "new" / "take1.mp3")
    assert path == tmp_path / "new" / "take1.mp3"
    assert path.is_file()


async def test_download_of_an_expired_file_says_so_and_leaves_nothing(
    sim: Simulator, tmp_path: Path
) -> None:
    async with client_for(sim) as client:
        tracks = await _finished_tracks(sim, client)
        sim.retention_days = 0
        with pytest.raises(NotFoundError, match="14 days"):
            await client.download(tracks[0], tmp_path)
    assert list(tmp_path.iterdir()) == []


async def test_download_refuses_unfinished_and_non_http_tracks(
    sim: Simulator, tmp_path: Path
) -> None:
    async with client_for(sim) as client:
        partial = Track(id="p", audio_url="", stream_audio_url="")
        with pytest.raises(RequestValidationError, match="allow_stream"):
            await client.download(partial, tmp_path)
        with pytest.raises(RequestValidationError, match="http"):
            await client.download(Track(id="f", audio_url="file:///etc/passwd"), tmp_path)
    assert list(tmp_path.iterdir()) == []


async def test_downloaded_files_get_ordinary_permissions(sim: Simulator, tmp_path: Path) -> None:
    """Written aside and renamed, yet created like any new file (the umask applies)."""
    umask = os.umask(0o022)
    try:
        async with client_for(sim) as client:
            tracks = await _finished_tracks(sim, client)
            path = await client.download(tracks[0], tmp_path)
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


async def test_a_file_that_appears_during_a_download_is_not_overwritten(
    sim: Simulator, tmp_path: Path
) -> None:
    async with client_for(sim) as client:
        tracks = await _finished_tracks(sim, client)
        target = tmp_path / "song.mp3"

        def someone_else_writes(received: int, total: int | None) -> None:
            if not target.exists():
                target.write_bytes(b"theirs")

        with pytest.raises(DownloadExistsError, match="appeared meanwhile"):
            await client.download(tracks[0], target, progress=someone_else_writes)
    assert target.read_bytes() == b"theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["song.mp3"]  # no .part left behind
