from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from quorum.settings import get_settings
from quorum.testing import Script, scripted


@pytest.fixture(autouse=True)
def isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Each test gets its own data folder and no endpoint, key or tracing from the machine."""
    for name in (
        "QUORUM_BASE_URL",
        "OPENAI_BASE_URL",
        "QUORUM_API_KEY",
        "OPENAI_API_KEY",
        "QUORUM_MODEL",
        "QUORUM_DATABASE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANGSMITH_TRACING", "false")
    monkeypatch.setenv("QUORUM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # no stray .env from the checkout
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def script() -> Iterator[Script]:
    """Replace every agent's model with the scripted fake; the test adjusts the script."""
    with scripted(Script()) as running:
        yield running


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "data" / "quorum.db")
