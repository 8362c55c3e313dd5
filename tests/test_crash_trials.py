"""SIGKILL at random points in all four patterns, then `quorum resume`: judged from outside.

Six trials per pattern on SQLite and two on PostgreSQL, each a `quorum run` process killed
at a point drawn (with a fixed seed) from its own slice of the clean run, then resumed
through the CLI until it exits 0 (`quorum/testing/crash.py` says how trials run and what is
measured). The kill points are fixed; the timings they land among are real, so each run
exercises slightly different moments. One more trial per pattern is killed while its second
model call waits at the stub, so that every pattern surely has a kill after completed calls
that cuts one off. `bench/bench_crash.py` runs the same trials by the hundred.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator

import psycopg
import pytest

from quorum.testing.crash import (
    PATTERN_INPUTS,
    Baseline,
    Campaign,
    Plan,
    Segment,
    Served,
    Trial,
    canonical,
    describe,
    judge,
    plan_trials,
    run_campaign,
)

SEED = 20240611
PER_PATTERN = 4  # bench/bench_crash.py runs them by the hundred
# Plus one kill per pattern while its second call waits, once the first is written: a kill
# after completed calls that cuts one off, on any machine load (time-drawn kills land there
# only most of the time: CI once drew none after a completed react call).
ANCHORED = [Plan(pattern, f"{pattern}-at-call-2", (), at_call=2) for pattern in PATTERN_INPUTS]
PLANS = plan_trials(PATTERN_INPUTS, PER_PATTERN, seed=SEED) + ANCHORED


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Campaign:
    # Every trial runs once, here, two CLI processes at a time; each test reads its verdict.
    return run_campaign(tmp_path_factory.mktemp("crash-trials"), PLANS, lanes=2, forked=True)


@pytest.mark.crash
@pytest.mark.parametrize("index", range(len(PLANS)), ids=[plan.thread for plan in PLANS])
def test_killed_run_resumes_as_if_never_killed(campaign: Campaign, index: int) -> None:
    verdict = campaign.verdicts[index]

    assert verdict.trial.plan == PLANS[index]
    assert verdict.ok, describe(verdict)


PG_PER_PATTERN = 2
PG_ANCHORED = [Plan(p, f"{p}-pg-at-call-2", (), at_call=2) for p in PATTERN_INPUTS]
PG_PLANS = plan_trials(PATTERN_INPUTS, PG_PER_PATTERN, seed=SEED + 1) + PG_ANCHORED


@pytest.fixture(scope="module")
def pg_campaign(
    server_url: str,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Campaign]:
    """The same trials with every lane's threads in one fresh PostgreSQL database."""
    name = f"quorum_crash_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        database = server_url.rsplit("/", 1)[0] + f"/{name}"
        root = tmp_path_factory.mktemp("crash-trials-pg")
        yield run_campaign(root, PG_PLANS, lanes=2, database=database, forked=True)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.mark.crash
@pytest.mark.parametrize("index", range(len(PG_PLANS)), ids=[plan.thread for plan in PG_PLANS])
def test_killed_run_resumes_as_if_never_killed_on_postgres(
    pg_campaign: Campaign, index: int
) -> None:
    verdict = pg_campaign.verdicts[index]

    assert verdict.trial.plan == PG_PLANS[index]
    assert verdict.ok, describe(verdict)


@pytest.mark.crash
def test_postgres_trials_kill_real_runs(pg_campaign: Campaign) -> None:
    killed = [v for v in pg_campaign.verdicts if v.trial.kills]

    assert len(pg_campaign.verdicts) == len(PATTERN_INPUTS) * (PG_PER_PATTERN + 1)
    assert len(killed) >= len(PATTERN_INPUTS) * 2
    # The anchored kills come after a journaled reply and cut one off, on any load.
    anchored = pg_campaign.verdicts[-len(PG_ANCHORED) :]
    assert all(v.trial.kills and v.completed_at_kill and v.cut_off for v in anchored), [
        describe(v) for v in anchored
    ]
    assert sum(len(v.rerequested_completed) for v in pg_campaign.verdicts) == 0


@pytest.mark.crash
def test_trials_kill_real_runs_at_every_stage(campaign: Campaign) -> None:
    verdicts = campaign.verdicts
    killed = [v for v in verdicts if v.trial.kills]

    assert len(verdicts) == len(PATTERN_INPUTS) * (PER_PATTERN + 1)
    assert all(v.trial.kills and v.completed_at_kill and v.cut_off for v in verdicts[-4:]), [
        describe(v) for v in verdicts[-4:]
    ]
    # A kill due after the process ended would test nothing; the drawn points all fall
    # while it lives (the last slice ends within its interpreter teardown).
    assert len(killed) >= len(verdicts) - 2, [describe(v) for v in verdicts if not v.trial.kills]
    for pattern in PATTERN_INPUTS:
        ours = [v for v in killed if v.trial.plan.pattern == pattern]
        # Each pattern had kills after some calls completed (so a repeat would show) and
        # kills that cut a request off mid-reply (so the resumed run had to ask again).
        assert any(v.completed_at_kill for v in ours), pattern
        assert any(v.cut_off for v in ours), pattern
    assert sum(len(v.rerequested_completed) for v in verdicts) == 0


# --- the judge itself, on made-up trials: it must see what it is there to see -------------

CALL_A = canonical({"messages": [{"role": "system", "content": "You are A"}]})
CALL_B = canonical({"messages": [{"role": "system", "content": "You are B"}]})
CLEAN = Baseline(
    pattern="react",
    input="x",
    bodies=Counter([CALL_A, CALL_B]),
    requests=2,
    working=1.0,
    seconds=3.0,
    state={"output": "done"},
    usage={"agent": {"calls": 2, "input_tokens": 4, "output_tokens": 2, "attempts": 2}},
)


def made_up_trial(*requests: tuple[str, float, float]) -> Trial:
    """A run killed at t=1.0 and a resume launched at t=2.0; requests (body, arrived, written)."""

    def process(command: str, launched: float, killed: float | None) -> Segment:
        return Segment(
            command=(command, "t"),
            launched=launched,
            endpoint_check=launched + 0.1,
            killed=killed,
            kill_sent=killed,
            reported=None,
            exit_code=0,
            ended=launched + 1,
            stdout="",
            stderr="",
        )

    trial = Trial(Plan("react", "t", (0.5,)), [0.5])
    trial.segments = [process("run", 0.0, 1.0), process("resume", 2.0, None)]
    trial.requests = [
        Served(body, "made up", arrived, written) for body, arrived, written in requests
    ]
    trial.shown = {"status": "completed", "values": {"output": "done"}, "usage": CLEAN.usage}
    return trial


def test_judge_flags_a_completed_call_requested_again() -> None:
    # A's reply was written 0.5 s before the kill, yet the resume asked for it again.
    trial = made_up_trial(
        (CALL_A, 0.2, 0.5), (CALL_B, 0.6, 0.0), (CALL_A, 2.2, 2.3), (CALL_B, 2.4, 2.5)
    )

    verdict = judge(trial, CLEAN)

    assert [(who, round(before, 3)) for who, before in verdict.rerequested_completed] == [
        ("made up", 0.5)
    ]
    assert len(verdict.problems) == 1 and "completed call requested again" in verdict.problems[0]


def test_judge_allows_a_reply_written_within_grace_to_be_asked_again() -> None:
    trial = made_up_trial(
        (CALL_A, 0.2, 0.98), (CALL_B, 0.6, 0.0), (CALL_A, 2.2, 2.3), (CALL_B, 2.4, 2.5)
    )

    verdict = judge(trial, CLEAN, grace=0.05)

    assert verdict.ok, verdict.problems
    assert (verdict.completed_at_kill, verdict.near_kill, verdict.cut_off) == (0, 1, 1)
    assert len(verdict.rerequested_near_kill) == 1


def test_judge_flags_requests_and_usage_that_do_not_add_up() -> None:
    # B was cut off by the kill and never asked again, yet the run claims to be complete.
    trial = made_up_trial((CALL_A, 0.2, 0.5), (CALL_B, 0.6, 0.0))

    verdict = judge(trial, CLEAN)

    assert any(p.startswith("requests not accounted for") for p in verdict.problems)
    assert any(p.startswith("usage counts") for p in verdict.problems)
