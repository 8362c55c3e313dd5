from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

# The harnesses shared with bench/ (crash trials, the OpenAI stub, langgraph dev) live in
# quorum.testing; their asserts explain themselves as a test's do.
pytest.register_assert_rewrite("quorum.testing")

from quorum.settings import get_settings  # noqa: E402
from quorum.testing import Script, forks, scripted  # noqa: E402
from quorum.testing.langgraph_dev import REPO  # noqa: E402
from tests import processes  # noqa: E402
from tests.processes import postgres_env  # noqa: E402

# The embedded model answers on one thread in the suite, and every process a test starts
# inherits it (quorum.testing.stub.MACHINE_SETTINGS). Its two threads wait on each other
# when the suite's other workers hold a core: a 477-token prompt and a 120-token reply on
# the default model took 25.1 s on two threads and 29.7 s on one alone, but 37.9 s on two
# and 29.9 s on one beside two busy processes (2026-12-07), and one thread leaves a core
# to the rest of the suite. Users keep every core (`embedded_threads`).
os.environ.setdefault("QUORUM_EMBEDDED_THREADS", "1")

# Time for what the last tests stopped to finish ending (a server shutting down gracefully).
LEFTOVER_GRACE = 20.0

# How `make test` hands the suite to its pytest-xdist workers: in units, each a module
# (its module-scoped servers and campaigns are started once) unless grouped or split here,
# the longest first, and a worker takes its next unit only when its last test runs. The
# longest unit started last decides the suite's end; xdist's own order (most tests first)
# and its two units queued a worker ahead once left the 7-minute `make run` test for last.
#
# The inference units keep an embedded model answering, one thread each: two of them side
# by side each answer nearly as fast as one alone (a 120-token reply in 13.3 and 14.1 s
# against 12.5 s, 2026-12-07), so the default model's module and the small model's run
# beside each other, not in series. The suite took 23 min 3 s in this order against
# 23 min 43 s in xdist's, one run each on 2026-12-07 (the `make run` test: 489 s beside
# the small model, 390 s before); it was bound by the two cores, not by the order. With the
# `quorum` commands forked (`quorum.testing.forks`) it took 13 min 21 s, 2,337
# worker-seconds against 4,099, and the default model's unit (476 s) is its longest path.
UNITS = {
    "tests/test_default_model.py": "inference: the default model",
    "tests/test_e2e_embedded.py": "inference: the small model",
    "tests/evals/test_eval.py::test_a_short_eval_on_the_embedded_model": (
        "inference: the small model"
    ),
    # Two campaigns of kill trials, each minutes long, with no module-scoped state shared.
    "tests/test_preview.py::test_preview_counts_equal_what_the_resume_does_over_kill_trials": (
        "preview trials on SQLite"
    ),
    "tests/test_preview.py::test_preview_counts_equal_what_the_resume_does_on_postgres": (
        "preview trials on PostgreSQL"
    ),
}
# Units by their share of a suite run (worker-seconds on 2026-12-07 with the `quorum`
# commands forked, longest first); the rest follow in collection order.
LONGEST = (
    "inference: the default model",
    "inference: the small model",
    "tests/test_embedded_lifetime.py",
    "tests/checkpoints/test_concurrency.py",
    "tests/test_embedded.py",
    "tests/test_bench_quick.py",
    "tests/test_crash_trials.py",
    "tests/test_streaming.py",
    "preview trials on PostgreSQL",
    "tests/test_crash_commands.py",
    "tests/test_approvals.py",
    "preview trials on SQLite",
)


def unit_of(nodeid: str) -> str:
    """The unit of work a test is handed out in."""
    for prefix, unit in UNITS.items():
        if nodeid == prefix or nodeid.startswith((prefix + "::", prefix + "[")):
            return unit
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that starts PostgreSQL; put the longest units first.

    The server comes from one fixture, `server_url`; a test that asks for it, directly or
    through another fixture, needs Debian's PostgreSQL and is left out of the fast lane.
    """
    for item in items:
        if "server_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
    rank = {unit: n for n, unit in enumerate(LONGEST)}
    items.sort(key=lambda item: rank.get(unit_of(item.nodeid), len(LONGEST)))


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Hand out the units above, in the order of the collection.

    Written here because pytest-xdist's own `--dist loadgroup` cannot group on this pytest:
    it renames items through an attribute pytest 9 no longer reads.
    """
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # the collection's order, longest units first

    class LongestUnitsFirst(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

        def _reschedule(self, node: Any) -> None:
            # xdist queues a unit while two tests of the last are pending; here, only while
            # the last one runs, so a long unit is not held behind another's long test.
            if node.shutting_down:
                return
            if not self.workqueue:
                node.shutdown()
            elif self._pending_of(self.assigned_work[node]) <= 1:
                self._assign_work_unit(node)

    return LongestUnitsFirst(config, log)


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """Fail the run if any process the suite started is still alive at its end.

    Model servers, `langgraph dev` and its workers, `quorum` commands: pytest adopts every
    orphan (see tests/processes.py), so all of them are its descendants. PostgreSQL started by
    .ci/postgres for the tests is stopped first, with the same script; a server that was
    already running before the session is not the suite's to stop. So is the server that
    forks `quorum` commands (`quorum.testing.forks`); the commands it forked are not spared.
    """
    processes.become_subreaper()
    yield
    forks.SERVER.stop()
    if any(process.name == "postgres" for process in processes.descendants()):
        subprocess.run(
            ["bash", str(REPO / ".ci" / "postgres"), "stop"],
            env=processes.postgres_env(), check=True, timeout=120,
        )  # fmt: skip
    left = processes.wait_for_none(processes.descendants, LEFTOVER_GRACE)
    processes.kill(left)  # a failed run leaves nothing behind either
    if left:
        pytest.fail(
            f"{len(left)} process(es) the tests started were still running at the end:\n"
            + "\n".join(map(str, left)),
            pytrace=False,
        )


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


# --- databases: PostgreSQL started by `.ci/postgres` on loopback, or a SQLite file ------------


@pytest.fixture(scope="module")
def server_url() -> str:
    """The URL of the PostgreSQL server on loopback (started once; a test that asks for it is
    marked `postgres`, and left out of the fast lane)."""
    started = subprocess.run(
        ["bash", str(REPO / ".ci" / "postgres")],
        env=postgres_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    return started.stdout.strip()


@pytest.fixture
def database(server_url: str) -> Iterator[str]:
    """A fresh database for one test, dropped afterwards."""
    name = f"quorum_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield server_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The checkpoint database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "data" / "quorum.db")
    return request.getfixturevalue("database")
