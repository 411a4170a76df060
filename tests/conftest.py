"""Suite-wide guard: nothing here may reach a real provider's host."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_real_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client made without ``base_url`` would talk to the provider's real host; here it
    talks to a closed port on loopback instead, so a forgotten ``base_url`` fails loudly."""
    monkeypatch.setenv("ADDVOCALS_BASE_URL", "http://127.0.0.1:9")
