from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from quorum.settings import get_settings
from quorum.testing import Script, scripted
from tests import processes
from tests.langgraph_dev import REPO

# Time for what the last tests stopped to finish ending (a server shutting down gracefully).
LEFTOVER_GRACE = 20.0


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """Fail the run if any process the suite started is still alive at its end.

    Model servers, `langgraph dev` and its workers, `quorum` commands: pytest adopts every
    orphan (see tests/processes.py), so all of them are its descendants. PostgreSQL started by
    .ci/postgres for the tests is stopped first, with the same script; a server that was
    already running before the session is not the suite's to stop.
    """
    processes.become_subreaper()
    yield
    if any(process.name == "postgres" for process in processes.descendants()):
        subprocess.run(["bash", str(REPO / ".ci" / "postgres"), "stop"], check=True, timeout=120)
    left = processes.wait_for_none(processes.descendants, LEFTOVER_GRACE)
    processes.kill(left)  # a failed run leaves nothing behind either
    if left:
        pytest.fail(
            f"{len(left)} process(es) the tests started were still running at the end:\n"
            + "\n".join(map(str, left)),
            pytrace=False,
        )


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that starts PostgreSQL, and group what must not run side by side.

    The server comes from one fixture, `server_url`; a test that asks for it, directly or
    through another fixture, needs Debian's PostgreSQL and is left out of the fast lane.

    `make test` runs the suite on every core (pytest-xdist, `--dist loadgroup`). The tests
    that run an embedded model share one worker: each model server takes both cores of a
    small machine, and two at once would each run at half speed. The PostgreSQL tests share
    another, since one server on one port serves them all. The embedded ones go first: they
    are the longest share, and the other workers run the rest beside them.
    """
    for item in items:
        if "server_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
        for group in ("embedded", "postgres"):
            if item.get_closest_marker("xdist_group") is None and item.get_closest_marker(group):
                item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: _group(item) != "embedded")


def _group(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("xdist_group")
    return str(marker.args[0]) if marker is not None else None


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
    # The default data folder is per user ($XDG_DATA_HOME/quorum): a test that unsets
    # QUORUM_DATA_DIR, and every process a test starts, stays out of the real one.
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
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
