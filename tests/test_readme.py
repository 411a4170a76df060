"""Every Python snippet in README.md runs as pasted into a file of its own, as a newcomer
would run it: no undefined names, no top-level ``await``, no machine of ours to reach."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SNIPPETS = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.S | re.M)


def test_the_readme_has_its_snippets() -> None:
    assert len(SNIPPETS) >= 3  # the quick start, a local file, the pytest recipe


@pytest.mark.parametrize("number", range(len(SNIPPETS)))
async def test_a_readme_snippet_runs_as_pasted(number: int, tmp_path: Path) -> None:
    script = tmp_path / f"snippet_{number}.py"
    script.write_text(SNIPPETS[number])
    # Not the testing switch: the snippet must not need it. Nothing of ours in the env.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADDVOCALS_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, f"snippet {number}:\n{SNIPPETS[number]}\n{err.decode()}"
    assert b"Traceback" not in err, err.decode()
