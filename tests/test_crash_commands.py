"""SIGKILL during `quorum approve`, `quorum resolve` and `quorum resume --from`, on SQLite and
PostgreSQL, then finish the thread as a person would; judged from outside.

`tests/test_crash_trials.py` kills `quorum run`; these trials kill the commands a person
uses to go on with a thread, each at a random point of its working time:

- `quorum approve THREAD`, on a ReAct thread waiting for approval of `write_file`;
- `quorum resolve THREAD done|retry`, on a thread stopped at a write of unknown outcome (its
  first run was killed just after the file landed, for `done`, or just before, for `retry`);
- `quorum resume THREAD --from CHECKPOINT`, a fork of a finished pipeline thread from its
  summarizer's checkpoint.

Every trial has its own stub and workspace (the crash harness's `Harness`), and the threads
of one test share the database under test. The command is SIGKILLed (with its process group)
a seeded random time after its endpoint check (`GET /models`), the offsets spread over the
working time of the same command run clean on another thread (`plan_trials` draws them, as
for the crash trials: one from each equal slice of 1.1 clean working times). Then a person
finishes the thread, looking only at what `quorum show` tells them and at the workspace:
they answer what the thread waits for (`approve`; `resolve done` when the file is in the
workspace, else the trial's decision); an interrupted thread they resume, after a killed
approve by running `quorum approve` again in one trial of two (and `quorum resume` when it
says so); after a fork that left nothing behind (killed before its first checkpoint: `show
--history` ends where it ended before) they run the fork again, else `quorum resume`.

Each trial is judged by the crash harness's `judge` against the clean run, setup included
(a setup that ran in this process is one more, unkilled, process to it): the thread ends
`completed` with the clean run's final state and usage, every request to the model is
accounted for, and no reply delivered more than `SHARED_GRACE` before a kill is asked for again.
The effects are counted on disk (inotify, `tests/test_approvals.py`'s `Disk`): the approved
file is written exactly once; `resolve done` writes nothing more, `resolve retry` exactly
once. The final state is read as `quorum show THREAD --json` prints it (`Harness.show`; each
test checks once, on the clean thread, that the command prints exactly that).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from quorum import runner
from quorum.cli import EXIT_CODES
from quorum.settings import get_settings
from quorum.testing import forks
from quorum.testing.crash import (
    GRACE,
    PATTERN_INPUTS,
    PROCESS_TIMEOUT,
    Baseline,
    Harness,
    Plan,
    Segment,
    Trial,
    Verdict,
    describe,
    judge,
    kill_group,
    plan_trials,
)
from quorum.threads import ThreadInfo
from tests.test_approvals import KILLED_AS_THE_FILE_LANDS, Disk, saving, tool_results

pytestmark = [pytest.mark.crash, pytest.mark.slow]

SEED = 20250301
TRIALS = 2
"""Kill offsets per command and database."""
FOLLOW_UPS = 4
"""Commands a person runs after the kill before the thread is declared stuck."""
SHARED_GRACE = 2 * GRACE
"""The grace a reply gets to be journaled before a kill, here twice the crash trials'.

Every lane writes the one database at once, so a journal commit can wait out another
process's write lock (SQLite's busy handler sleeps in steps of up to 100 ms); on CI's two
cores a resumed fork stalled 0.28 s after a reply it then asked for again."""
NOTE = "note.md"
CONTENT = "saved by call_save"
"""What `saving(NOTE)` makes the agent write."""
ASK = "Save a note"
FORKED = "pipeline"
FORK_FROM = ["summarize"]
"""The fork starts at the checkpoint whose next agent is the summarizer."""

# The CLI, killed with SIGKILL just before the file takes its name: the content is written
# (to a temporary file) and the ledger says the write started, with no outcome.
KILLED_BEFORE_THE_FILE_LANDS = """
import os, signal, sys
rename = os.rename
def landing(src, dst, *args, **kwargs):
    if str(dst) == sys.argv[1]:
        os.kill(os.getpid(), signal.SIGKILL)
    rename(src, dst, *args, **kwargs)
os.rename = landing
from quorum.cli import app
app(sys.argv[2:])
"""

Person = Callable[[dict[str, Any], Segment], tuple[str, ...] | None]
"""What a person runs next, from `quorum show --json` and the last command; None: done."""


def plans(command: str, where: str) -> list[Plan]:
    """The trials of `command` on the database `where`'s kind (each its own seed)."""
    postgres = where.startswith("postgresql://")
    seed = SEED + sum(map(ord, command)) + (1 if postgres else 0)
    return plan_trials([command], TRIALS, seed=seed)


# --- setting up ----------------------------------------------------------------------------


class Lane:
    """One thread's stub, workspace and processes (a `Harness`), on the shared database."""

    def __init__(self, stack: ExitStack, root: Path, shared: str, **env: str) -> None:
        self.harness = stack.enter_context(Harness(root, database=shared, forked=True))
        self.workspace = root / "workspace"
        self.workspace.mkdir(parents=True)
        self.harness.env |= {"QUORUM_WORKSPACE_DIR": str(self.workspace), **env}
        self.disk = Disk(self.workspace)
        stack.callback(self.disk.watch.close)
        self.setup: list[Segment] = []
        """The processes that brought the thread to where the command under test starts."""

    def landed(self) -> bool:
        """Whether the note is in the workspace, as a person would look."""
        return (self.workspace / NOTE).exists()

    def in_process(
        self,
        monkeypatch: pytest.MonkeyPatch,
        command: tuple[str, ...],
        call: Callable[[], Coroutine[Any, Any, ThreadInfo]],
    ) -> ThreadInfo:
        """Run a step of the setup through the Python API in this process (no process start
        of seconds), with this lane's settings; kept as one unkilled process of the trial."""
        for name, value in self.harness.env.items():
            if name.startswith("QUORUM_"):
                monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        launched = time.monotonic()
        with undelayed(self.harness):
            info = asyncio.run(call())
        self.setup.append(
            Segment(
                command=command,
                launched=launched,
                endpoint_check=None,
                killed=None,
                kill_sent=None,
                reported=None,
                exit_code=EXIT_CODES.get(info.status, 1),
                ended=time.monotonic(),
                stdout="",
                stderr="(run in the test's process)",
            )
        )
        return info

    def killed_write(self, thread: str, *, landed: bool) -> Segment:
        """`quorum run react` SIGKILLed just before the note is renamed into place, or just
        after if `landed`: its write started, and its outcome was never recorded."""
        script = KILLED_AS_THE_FILE_LANDS if landed else KILLED_BEFORE_THE_FILE_LANDS
        command = ("run", "react", ASK, "--thread", thread)
        launched = time.monotonic()
        with undelayed(self.harness):
            process = forks.start(
                [NOTE, *command], code=script,
                env=self.harness.env, cwd=self.harness.root, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
            )  # fmt: skip
            try:
                out, err = process.communicate(timeout=PROCESS_TIMEOUT)
            finally:
                kill_group(process, drain=True)
        ended = time.monotonic()
        segment = Segment(
            command=command,
            launched=launched,
            endpoint_check=None,
            killed=ended,  # it killed itself; this is when it was seen gone
            kill_sent=ended,
            reported=None,
            exit_code=process.returncode,
            ended=ended,
            stdout=out,
            stderr=err,
        )
        self.setup.append(segment)
        return segment


@contextmanager
def undelayed(harness: Harness) -> Iterator[None]:
    """The stub answers at once: its delay is there for the kills, not for the setup."""
    delay, harness.stub.delay = harness.stub.delay, 0.0
    try:
        yield
    finally:
        harness.stub.delay = delay


# --- one clean run, trials, verdicts -------------------------------------------------------


def measure(lane: Lane, thread: str, command: tuple[str, ...]) -> Baseline:
    """Run `command` clean on `lane`'s thread: what the trials are judged against."""
    harness = lane.harness
    clean = harness._segment(command, kill_after=None)
    assert clean.exit_code == 0, clean.stderr[-3000:]
    assert clean.endpoint_check is not None and clean.reported is not None, clean.stderr
    shown = harness.show(thread)
    assert shown["status"] == "completed", shown["status"]
    return Baseline.of(command[0], " ".join(command), harness._chat_since(0), clean, shown)


def shown_by_the_cli(lane: Lane, thread: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """What `quorum show THREAD --json` prints, and what `Harness.show` reads."""
    printed = lane.harness._segment(("show", thread, "--json"), kill_after=None)
    assert printed.exit_code == 0, printed.stderr
    return json.loads(printed.stdout), lane.harness.show(thread)


def kill_and_finish(
    lane: Lane, plan: Plan, baseline: Baseline, command: tuple[str, ...], person: Person
) -> Trial:
    """SIGKILL `command` at the plan's point, then let `person` finish the thread."""
    harness = lane.harness
    trial = Trial(plan, [f * baseline.working for f in plan.fractions])
    trial.segments = [*lane.setup, harness._segment(command, kill_after=trial.planned[0])]
    for _ in range(FOLLOW_UPS):
        then = person(harness.show(plan.thread), trial.segments[-1])
        if then is None:
            break
        trial.segments.append(harness._segment(then, kill_after=None))
    trial.requests = harness._chat_since(0)
    trial.shown = harness.show(plan.thread)
    return trial


def finished(shown: dict[str, Any], last: Segment) -> bool:
    """The last command ended on its own, exit 0, and the thread is completed."""
    return last.killed is None and last.exit_code == 0 and shown["status"] == "completed"


def told_to_resume(last: Segment) -> bool:
    """The command refused (exit 2) and said to go on with `quorum resume`."""
    return last.exit_code == 2 and "quorum resume" in last.stderr


def decided(lane: Lane, thread: str, decision: str) -> tuple[str, ...]:
    """`quorum resolve`, as a person who looks in the workspace first."""
    return ("resolve", thread, "done" if lane.landed() else decision)


def problems(verdict: Verdict, *, clean_decision: str = "") -> list[str]:
    """The verdict's problems, less those a person's own choice explains.

    A write that landed but was never recorded is settled with `resolve done`: the agent
    then reads the operator's note instead of the tool's result, so its next request and the
    final state differ from those of a clean run that settled nothing that way, by exactly
    that.
    """
    settled = any(
        s.command[:1] == ("resolve",) and s.command[-1] == "done" for s in verdict.trial.segments
    )
    if not settled or clean_decision == "done":
        return verdict.problems
    expected = ("final state differs", "requests not accounted for")
    return [p for p in verdict.problems if not p.startswith(expected)]


def run_lanes(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Run `jobs` at once, each in a thread of its own; their results, in order."""
    with ThreadPoolExecutor(len(jobs), thread_name_prefix="crash-command") as pool:
        futures = [pool.submit(job) for job in jobs]
        return [f.result() for f in futures]


def report(verdicts: list[Verdict], extra: list[str]) -> str:
    """Each trial as a reproduction (`describe`), then `extra` lines."""
    return "\n\n".join([*(describe(v) for v in verdicts), *extra])


# --- approve -------------------------------------------------------------------------------


def test_a_killed_approve_finishes_with_one_write(
    target: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trials = plans("approve", target)
    with ExitStack() as stack:
        clean = Lane(stack, tmp_path / "clean", target)
        lanes = [Lane(stack, tmp_path / plan.thread, target) for plan in trials]
        threads = ["approve-clean", *(plan.thread for plan in trials)]
        for lane, thread in zip([clean, *lanes], threads, strict=True):
            lane.harness.stub.responder = saving(NOTE)
            waiting = lane.in_process(
                monkeypatch,
                ("run", "react", ASK, "--thread", thread),
                lambda thread=thread: runner.run("react", ASK, thread_id=thread, database=target),
            )
            assert waiting.status == "waiting_approval", waiting
        baseline = measure(clean, "approve-clean", ("approve", "approve-clean"))

        def trial(lane: Lane, plan: Plan, then: str) -> Trial:
            def person(shown: dict[str, Any], last: Segment) -> tuple[str, ...] | None:
                thread = plan.thread
                if finished(shown, last):
                    return None
                if shown["status"] == "waiting_approval":
                    return ("approve", thread)
                if shown["status"] == "needs_reconciliation":
                    return decided(lane, thread, "retry")
                if told_to_resume(last):
                    return ("resume", thread)
                return (then, thread)  # the same command again, or resume

            return kill_and_finish(lane, plan, baseline, ("approve", plan.thread), person)

        *done, (printed, read) = run_lanes(
            [
                *(
                    lambda lane=lane, plan=plan, n=n: trial(
                        lane, plan, ("approve", "resume")[n % 2]
                    )
                    for n, (lane, plan) in enumerate(zip(lanes, trials, strict=True))
                ),
                lambda: shown_by_the_cli(clean, "approve-clean"),
            ]
        )
        verdicts = [judge(t, baseline, grace=SHARED_GRACE) for t in done]
        failures = [f"{v.trial.plan.thread}: {p}" for v in verdicts for p in problems(v)]
        for lane, verdict in zip(lanes, verdicts, strict=True):
            thread = verdict.trial.plan.thread
            # The write step asked the model once, in the setup, and never again.
            asked = [r for r in verdict.trial.requests if not tool_results(json.loads(r.body))]
            if len(asked) != 1:
                failures.append(f"{thread}: the write step's call was requested {len(asked)} times")
            runs, writes = lane.disk.count(NOTE)
            if writes != 1 or runs > 2:
                failures.append(f"{thread}: {NOTE} written {writes} times ({runs} temporary files)")
            if lane.landed() and (lane.workspace / NOTE).read_text() != CONTENT:
                failures.append(f"{thread}: {NOTE} holds {(lane.workspace / NOTE).read_text()!r}")
            if sorted(os.listdir(lane.workspace)) != [NOTE]:
                failures.append(f"{thread}: the workspace holds {os.listdir(lane.workspace)}")

    print(report(verdicts, []))  # shown with -s, or -rP
    assert printed == read, "`quorum show --json` differs from Harness.show"
    assert any(v.trial.kills for v in verdicts), report(verdicts, [])
    assert not failures, report(verdicts, failures)


# --- resolve -------------------------------------------------------------------------------


@pytest.mark.parametrize("decision", ["done", "retry"])
def test_a_killed_resolve_settles_the_write_once(
    decision: str,
    target: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trials = plans(f"resolve-{decision}", target)
    # `done` confirms a write that landed; `retry` runs again one that did not.
    landed = decision == "done"
    with ExitStack() as stack:
        env = {"QUORUM_APPROVE_TOOLS": "write_file"}
        clean = Lane(stack, tmp_path / "clean", target, **env)
        lanes = [Lane(stack, tmp_path / plan.thread, target, **env) for plan in trials]
        every = [clean, *lanes]
        threads = [f"resolve-{decision}-clean", *(plan.thread for plan in trials)]
        for lane in every:
            lane.harness.stub.responder = saving(NOTE)
        killed = run_lanes(
            [
                lambda lane=lane, thread=thread: lane.killed_write(thread, landed=landed)
                for lane, thread in zip(every, threads, strict=True)
            ]
        )
        for lane, thread, segment in zip(every, threads, killed, strict=True):
            assert segment.exit_code == -signal.SIGKILL, segment.stderr[-3000:]
            assert lane.disk.count(NOTE) == (1, 1 if landed else 0)
            stopped = lane.in_process(
                monkeypatch,
                ("resume", thread),
                lambda thread=thread: runner.resume(thread, database=target),
            )
            assert stopped.status == "needs_reconciliation", stopped
        baseline = measure(clean, threads[0], ("resolve", threads[0], decision))

        def trial(lane: Lane, plan: Plan) -> Trial:
            command = ("resolve", plan.thread, decision)

            def person(shown: dict[str, Any], last: Segment) -> tuple[str, ...] | None:
                if finished(shown, last):
                    return None
                if shown["status"] == "needs_reconciliation":
                    return decided(lane, plan.thread, decision)
                if shown["status"] == "waiting_approval":
                    return ("approve", plan.thread)
                # Interrupted: the write was settled before the kill (`resolve` would say
                # there is nothing to resolve, and to resume).
                return ("resume", plan.thread)

            return kill_and_finish(lane, plan, baseline, command, person)

        *done, (printed, read) = run_lanes(
            [
                *(
                    lambda lane=lane, plan=plan: trial(lane, plan)
                    for lane, plan in zip(lanes, trials, strict=True)
                ),
                lambda: shown_by_the_cli(clean, threads[0]),
            ]
        )
        verdicts = [judge(t, baseline, grace=SHARED_GRACE) for t in done]
        failures = [
            f"{v.trial.plan.thread}: {p}"
            for v in verdicts
            for p in problems(v, clean_decision=decision)
        ]
        for lane, verdict in zip(lanes, verdicts, strict=True):
            thread = verdict.trial.plan.thread
            runs, writes = lane.disk.count(NOTE)
            # `done`: the write that landed before the first kill, and nothing since;
            # `retry`: the killed write never landed, the retry once.
            if writes != 1 or (landed and runs != 1):
                failures.append(f"{thread}: {NOTE} written {writes} times ({runs} temporary files)")
            if lane.landed() and (lane.workspace / NOTE).read_text() != CONTENT:
                failures.append(f"{thread}: {NOTE} holds {(lane.workspace / NOTE).read_text()!r}")
            if sorted(os.listdir(lane.workspace)) != [NOTE]:
                failures.append(f"{thread}: the workspace holds {os.listdir(lane.workspace)}")
            asked = [r for r in verdict.trial.requests if not tool_results(json.loads(r.body))]
            if len(asked) != 1:
                failures.append(f"{thread}: the write step's call was requested {len(asked)} times")

    print(report(verdicts, []))  # shown with -s, or -rP
    assert printed == read, "`quorum show --json` differs from Harness.show"
    assert any(v.trial.kills > 1 for v in verdicts), report(verdicts, [])  # the setup's, and one
    assert not failures, report(verdicts, failures)


# --- resume --from -------------------------------------------------------------------------


def test_a_killed_fork_resumes_to_the_forks_answer(
    target: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trials = plans("fork", target)
    text = PATTERN_INPUTS[FORKED]
    with ExitStack() as stack:
        clean = Lane(stack, tmp_path / "clean", target)
        lanes = [Lane(stack, tmp_path / plan.thread, target) for plan in trials]
        threads = ["fork-clean", *(plan.thread for plan in trials)]
        forks: dict[str, tuple[str, ...]] = {}
        ended: dict[str, str] = {}
        """The last checkpoint of each thread's first branch."""
        for lane, thread in zip([clean, *lanes], threads, strict=True):
            first = lane.in_process(
                monkeypatch,
                ("run", FORKED, text, "--thread", thread),
                lambda thread=thread: runner.run(FORKED, text, thread_id=thread, database=target),
            )
            assert first.status == "completed", first
            checkpoints = lane.harness.show(thread)["checkpoints"]
            start = next(c for c in checkpoints if c["agents"] == FORK_FROM)
            forks[thread] = ("resume", thread, "--from", start["checkpoint_id"])
            ended[thread] = checkpoints[-1]["checkpoint_id"]
        baseline = measure(clean, threads[0], forks[threads[0]])

        def trial(lane: Lane, plan: Plan) -> Trial:
            fork = forks[plan.thread]

            def person(shown: dict[str, Any], last: Segment) -> tuple[str, ...] | None:
                # Killed before its first checkpoint, the fork left nothing: the thread's
                # history still ends where the first branch ended. Fork again.
                if shown["checkpoints"][-1]["checkpoint_id"] == ended[plan.thread]:
                    return fork
                if finished(shown, last):
                    return None
                return ("resume", plan.thread)

            return kill_and_finish(lane, plan, baseline, fork, person)

        *done, (printed, read) = run_lanes(
            [
                *(
                    lambda lane=lane, plan=plan: trial(lane, plan)
                    for lane, plan in zip(lanes, trials, strict=True)
                ),
                lambda: shown_by_the_cli(clean, threads[0]),
            ]
        )
        verdicts = [judge(t, baseline, grace=SHARED_GRACE) for t in done]
        failures = [f"{v.trial.plan.thread}: {p}" for v in verdicts for p in v.problems]
        for verdict in verdicts:
            # The answer is the unkilled fork's (the judge compares the whole state).
            output = verdict.trial.shown.get("output")
            if output != baseline.state.get("output"):
                failures.append(f"{verdict.trial.plan.thread}: answered {output!r}")

    print(report(verdicts, []))  # shown with -s, or -rP
    assert printed == read, "`quorum show --json` differs from Harness.show"
    assert any(v.trial.kills for v in verdicts), report(verdicts, [])
    assert not failures, report(verdicts, failures)
