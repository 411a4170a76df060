"""Every Python block of README.md runs as pasted, in a fresh project.

A block is one of three kinds:

- a pytest file (it uses the ``addvocals_simulator`` fixture): copied into an empty
  folder as ``test_readme_block.py`` and run with ``python -m pytest`` there, with none of
  this suite's settings (no ``asyncio_mode``, no testing switch);
- a fragment, marked ``<!-- fragment -->`` on the line before its fence: not runnable
  alone, and few (at most ``MAX_FRAGMENTS``);
- a program: run with ``python`` against a simulator, which the block reaches through the
  environment variables the README tells a user to set (``ADDVOCALS_BASE_URL``,
  ``ADDVOCALS_API_KEY``, ``ADDVOCALS_RECEIVER_PORT``).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest

from addvocals_async.testing import Simulator

README = Path(__file__).resolve().parent.parent / "README.md"
FRAGMENT = "<!-- fragment -->"
MAX_FRAGMENTS = 2


@attrs.frozen
class Block:
    line: int  # where its fence opens, 1-based
    heading: str  # the section it belongs to
    code: str
    fragment: bool

    @property
    def kind(self) -> str:
        if self.fragment:
            return "fragment"
        return "pytest" if "addvocals_simulator" in self.code else "program"


def python_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    heading = ""
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        fence = re.match(r"^(\s*)```(\w*)\s*$", line)
        if fence:
            language = fence.group(2)
            start = index
            index += 1
            body: list[str] = []
            while index < len(lines) and not lines[index].strip().startswith("```"):
                body.append(lines[index])
                index += 1
            if language == "python":
                marked = start > 0 and lines[start - 1].strip() == FRAGMENT
                blocks.append(Block(start + 1, heading, "\n".join(body) + "\n", marked))
        index += 1
    return blocks


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_the_readme_has_runnable_blocks_and_few_fragments() -> None:
    kinds = [block.kind for block in BLOCKS]
    assert "program" in kinds  # the quick start
    assert "pytest" in kinds  # the pytest recipe
    assert kinds.count("fragment") <= MAX_FRAGMENTS, [b.line for b in BLOCKS if b.fragment]


def test_the_extractor_sees_fragment_marks() -> None:
    text = "# A\n```python\nprint(1)\n```\n<!-- fragment -->\n```python\nx\n```\n```sh\nls\n```\n"
    assert [(b.line, b.kind, b.heading) for b in python_blocks(text)] == [
        (2, "program", "A"),
        (6, "fragment", "A"),
    ]


def _fresh_env(**extra: str) -> dict[str, str]:
    """A new user's shell: none of our variables, no testing switch."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADDVOCALS_", "PYTEST_"))}
    env.update(extra)
    return env


async def _run(*argv: str, cwd: Path, env: dict[str, str], timeout: float = 60) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode()
    assert proc.returncode == 0, text
    return text


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    # The quick start's task finishes in about 0.2 s; callbacks reach its receiver on
    # loopback, so nothing waits for a grace period.
    async with Simulator(speed=1000, seed=5) as simulator:
        yield simulator


RUNNABLE = [
    # A pytest run in a child process pays pytest's own start-up (2-5 s here): slow.
    pytest.param(b, id=f"line{b.line}-{b.kind}", marks=[pytest.mark.slow] * (b.kind == "pytest"))
    for b in BLOCKS
    if not b.fragment
]


@pytest.mark.parametrize("block", RUNNABLE)
async def test_readme_block_runs_as_pasted(block: Block, tmp_path: Path, sim: Simulator) -> None:
    if block.kind == "pytest":
        (tmp_path / "test_readme_block.py").write_text(block.code, encoding="utf-8")
        out = await _run(
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "test_readme_block.py", cwd=tmp_path, env=_fresh_env(),
        )  # fmt: skip
        assert "1 passed" in out, out
        return
    (tmp_path / "snippet.py").write_text(block.code, encoding="utf-8")
    env = _fresh_env(
        ADDVOCALS_BASE_URL=sim.base_url,
        ADDVOCALS_API_KEY=sim.api_key,
        ADDVOCALS_RECEIVER_PORT="0",
    )
    out = await _run(sys.executable, "snippet.py", cwd=tmp_path, env=env)
    if "client.download" in block.code:  # the quick start: two tracks saved, lyrics shown
        folder = re.search(r'client\.download\(track, "([^"]+)"\)', block.code)
        assert folder is not None, "the quick start downloads into a named folder"
        saved = sorted((tmp_path / folder.group(1)).iterdir())
        assert len(saved) == 2, out
        assert "lyrics: None" not in out
        assert "lyrics: [Verse]" in out
