"""Crash trials: SIGKILL `quorum run` at a random point, resume it, and judge from outside.

A trial runs one pattern through the CLI (`python -m quorum.cli`, a process of its own)
against the scripted OpenAI-compatible stub, kills that process with SIGKILL (no handler, no
clean-up) a random time into the run, then runs `quorum resume` until it exits 0. It is
judged against a clean run of the same pattern, using only what can be seen from outside
Quorum: the stub's record of every request (when it arrived, when its reply was fully
written) and the thread's final state as `quorum show --json` prints it.

Kill offsets are measured from the run's first request, the endpoint check (`GET /models`),
which every run and resume makes once its imports are done, and spread uniformly over the
clean run's working time, from that request to the moment it printed its result (the run is
on disk by then; what follows is interpreter teardown), plus a tenth so that some kills land
after it.

What a trial must show:

- the thread resumes to `completed`, and its final state equals the clean run's (message ids
  and reply metadata aside), usage included;
- no *completed* call is requested again: a request whose reply was fully written more than
  `grace` before the kill (time for the client to read it and commit its journal row) never
  reappears after the kill. A reply written inside the grace window may or may not have been
  recorded; those are counted apart;
- every request is accounted for: the requests the stub served for the thread are the clean
  run's, plus each request the kill cut off (its reply never reached the client, so the
  resumed run must ask again), plus each delivered reply that was asked for again;
- usage counts each call once, whatever the kills: `calls` as in the clean run, and
  `attempts` equal to the requests whose replies Quorum kept (see `judge`).

Request bodies identify calls: the stub answers from the request alone, and
`deterministic_replies` makes the one thing it would otherwise number per server, the tool
call ids, a digest of the request, so the same run sends the same bodies every time
(`Harness.measure_baseline` checks this on two clean runs before any trial).

Trials run in `lanes`, each with its own stub and database, so two CLI processes can work at
once on two cores; within a lane they run one at a time, and a request belongs to the
process that was running when it arrived. Shared by `tests/test_crash_trials.py` (a few dozen
trials) and `bench/bench_crash.py` (hundreds).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, TypeVar

from pydantic_core import to_jsonable_python

from quorum import threads
from quorum.errors import ThreadNotFound
from quorum.testing import forks
from quorum.testing.stub import (
    CHAT_PATH,
    MODELS_PATH,
    Hold,
    OpenAIStub,
    Recorded,
    Reply,
    Responder,
    quorum_env,
    schema_name,
    text_of,
)

PATTERN_INPUTS = {
    "orchestrator": "Plan a product launch",
    "pipeline": "Quantum error correction in 2026",
    "debate": "Should a 5-person team self-host its LLM?",
    "react": "What is 6*7?",
}
DELAY = 0.06
"""Seconds the stub takes per reply: long enough that many kills land mid-request."""
GRACE = 0.25
"""A reply written less than this before the kill may not have been journaled yet: from the
stub's last byte to the journal's commit a loaded 2-core machine has taken over 70 ms (a
ci-local run on 2026-12-06, the embedded model busy beside it; 0.05 s was too tight)."""
SLACK = 0.01
"""The stub stamps a reply as written once its thread gets the GIL back after the write: a
reply stamped up to this long after the kill may still have reached the client."""
SPAN = 1.1
"""Kill offsets are drawn up to this many clean-run working times."""
PROCESS_TIMEOUT = 120.0
MAX_RECOVERIES = 3
"""`quorum resume` runs after the kills before a trial is declared stuck."""

T = TypeVar("T")


class HarnessError(RuntimeError):
    """The harness itself could not do its job (not a verdict on Quorum)."""


def canonical(body: dict[str, Any]) -> str:
    """A request body as one comparable string (the whole body, keys sorted)."""
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def who_asked(body: dict[str, Any]) -> str:
    """A short label for a chat request: the schema it asks for, its system prompt, turns."""
    messages = body.get("messages") or [{}]
    system = " ".join(text_of(messages[0]).split())[:40]
    return f"{schema_name(body) or 'text'} | {system} | {len(messages)} messages"


def deterministic_replies(stub: OpenAIStub) -> Responder:
    """The stub's default replies, with tool call ids derived from the request.

    The stub numbers tool calls from one counter per server, so the same run would send
    different ids (and so different bodies) each time, and parallel workers would race for
    the numbers.
    """

    def respond(body: dict[str, Any]) -> Reply | None:
        reply = stub.default_reply(body)
        if not isinstance(reply, Reply) or not reply.tool_calls:
            return None  # the default, unchanged
        digest = hashlib.sha256(canonical(body).encode()).hexdigest()[:12]
        calls = [{**call, "id": f"call_{digest}_{n}"} for n, call in enumerate(reply.tool_calls)]
        return replace(reply, tool_calls=calls)

    return respond


def comparable(values: dict[str, Any]) -> dict[str, Any]:
    """A thread's values without what differs between equal runs.

    Message ids and metadata, and the time each agent waited for its replies, are left out.
    """

    def clean(node: Any) -> Any:
        if isinstance(node, list):
            return [clean(item) for item in node]
        if not isinstance(node, dict):
            return node
        is_message = "content" in node and node.get("type") in ("human", "ai", "tool", "system")
        dropped = {"id", "response_metadata"} if is_message else set()
        return {key: clean(value) for key, value in node.items() if key not in dropped}

    cleaned = clean(values)
    if isinstance(cleaned.get("usage"), dict):
        cleaned["usage"] = counted(cleaned["usage"])
    return cleaned


def counted(usage: dict[str, Any]) -> dict[str, Any]:
    """Usage per agent without timings, which differ between equal runs."""
    return {
        agent: {k: v for k, v in spent.items() if k != "seconds"} for agent, spent in usage.items()
    }


# --- what happened -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """One chat request the stub received."""

    body: str
    """`canonical` form."""
    label: str
    started: float
    finished: float
    """When the reply was fully written (`time.monotonic()`); 0 if never."""

    @classmethod
    def of(cls, recorded: Recorded) -> Served:
        """The served request `recorded`, as trials compare it."""
        assert recorded.body is not None
        return cls(
            canonical(recorded.body), who_asked(recorded.body), recorded.started, recorded.finished
        )


@dataclass(frozen=True)
class Segment:
    """One CLI process of a trial: a run or a resume, killed or left to finish."""

    command: tuple[str, ...]
    launched: float
    endpoint_check: float | None
    """When the stub saw its `GET /models`: the origin of kill offsets."""
    killed: float | None
    """Just before SIGKILL was sent (None: it ended on its own)."""
    kill_sent: float | None
    """Just after."""
    reported: float | None
    """When it printed its summary line (`thread T  status S ...`), if it did."""
    exit_code: int
    ended: float
    stdout: str
    stderr: str

    @property
    def kill_offset(self) -> float | None:
        """Seconds from the endpoint check to the kill."""
        if self.killed is None or self.endpoint_check is None:
            return None
        return self.killed - self.endpoint_check


@dataclass(frozen=True)
class Baseline:
    """A clean, uninterrupted run of one pattern."""

    pattern: str
    input: str
    bodies: Counter[str]
    requests: int
    working: float
    """Seconds from the endpoint check to the summary line."""
    seconds: float
    """Seconds from launch to exit."""
    state: dict[str, Any]
    """`comparable` final values."""
    usage: dict[str, Any]

    @classmethod
    def of(
        cls, pattern: str, text: str, served: list[Served], run: Segment, shown: dict[str, Any]
    ) -> Baseline:
        """The clean run `run` of `pattern` on `text`: its requests and the thread it left."""
        assert run.reported is not None and run.endpoint_check is not None, "not a clean run"
        return cls(
            pattern=pattern,
            input=text,
            bodies=Counter(s.body for s in served),
            requests=len(served),
            working=run.reported - run.endpoint_check,
            seconds=run.ended - run.launched,
            state=comparable(shown["values"]),
            usage=shown["usage"],
        )


@dataclass(frozen=True)
class Plan:
    """One trial to run: where to kill, as fractions of the clean run's working time.

    With `at_call`, the first process is killed instead while its `at_call`-th chat request
    is kept waiting at the stub, once every earlier reply has been written `2 * GRACE` ago: a
    kill that surely comes after completed calls and surely cuts one off, whatever the
    machine's load (time-drawn kills only land there most of the time). `fractions` then
    place the kills of the resumes that follow.
    """

    pattern: str
    thread: str
    fractions: tuple[float, ...]
    at_call: int | None = None


@dataclass
class Trial:
    """What happened in one crash trial."""

    plan: Plan
    planned: list[float]
    """Kill offsets asked for, in seconds after each killed process's endpoint check."""
    segments: list[Segment] = field(default_factory=list)
    requests: list[Served] = field(default_factory=list)
    shown: dict[str, Any] = field(default_factory=dict)
    """`quorum show --json` of the thread at the end ({} if there is none)."""

    @property
    def kills(self) -> int:
        """SIGKILLs that landed on a live process."""
        return sum(1 for s in self.segments if s.killed is not None)

    @property
    def recovery_seconds(self) -> float:
        """Wall-clock time of the processes after the last kill: the resume."""
        killed = [n for n, s in enumerate(self.segments) if s.killed is not None]
        return sum(s.ended - s.launched for s in self.segments[killed[-1] + 1 :]) if killed else 0.0


@dataclass
class Verdict:
    """A trial judged against its clean run."""

    trial: Trial
    baseline: Baseline
    completed_at_kill: int = 0
    """Replies fully written more than `grace` before a kill: completed calls."""
    near_kill: int = 0
    """Replies written within `grace` before a kill (or stamped within `SLACK` after)."""
    cut_off: int = 0
    """Requests a kill interrupted: their reply was written after it, or never."""
    rerequested_completed: list[tuple[str, float]] = field(default_factory=list)
    """Completed calls requested again: who asked, and how long before the kill the reply
    was written."""
    rerequested_near_kill: list[tuple[str, float]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the trial met every requirement."""
        return not self.problems


# --- running ---------------------------------------------------------------------------------


class Harness:
    """One lane: a stub, a data folder, and the CLI processes of the trials run on them.

    Every process is started in a session of its own and killed with its group when its
    segment ends, fails or the harness closes, so nothing outlives the harness.
    """

    def __init__(
        self,
        root: Path,
        *,
        delay: float = DELAY,
        database: str | None = None,
        forked: bool = False,
    ) -> None:
        self.root = root
        # Forked from a process that has imported Quorum (`quorum.testing.forks`): the same
        # command after its imports, two seconds of CPU sooner. The suite's trials use it;
        # the bench, which times recoveries, starts each process as a user does.
        self.forked = forked
        self.stub = OpenAIStub()
        self.stub.delay = delay
        self.stub.responder = deterministic_replies(self.stub)
        self.env = quorum_env(self.stub, root)
        # The lane's own SQLite file, or a PostgreSQL database the lanes share (thread ids
        # are unique across a campaign).
        self.database = database or str(root / "data" / "quorum.db")
        if database is not None:
            self.env["QUORUM_DATABASE"] = database
        self._live: set[forks.Process] = set()
        self._processes = 0

    def __enter__(self) -> Harness:
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        self.stub.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            for process in list(self._live):
                kill_group(process)
        finally:
            self.stub.stop()

    def measure_baseline(self, pattern: str, *, runs: int = 2) -> Baseline:
        """Clean runs of `pattern`; they must send the same requests and end the same."""
        clean = [self._clean_run(pattern, f"clean-{pattern}-{n}", cli=n == 0) for n in range(runs)]
        first = clean[0]
        for other in clean[1:]:
            if other.bodies != first.bodies:
                differ = (first.bodies - other.bodies) + (other.bodies - first.bodies)
                raise HarnessError(
                    f"two clean {pattern} runs sent different requests: {sorted(_labels(differ))}"
                )
            if other.state != first.state or counted(other.usage) != counted(first.usage):
                raise HarnessError(f"two clean {pattern} runs ended in different states")
        return replace(
            first,
            working=sum(c.working for c in clean) / runs,
            seconds=sum(c.seconds for c in clean) / runs,
        )

    def _clean_run(self, pattern: str, thread: str, *, cli: bool) -> Baseline:
        since = len(self.stub.requests)
        text = PATTERN_INPUTS[pattern]
        run = self._segment(("run", pattern, text, "--thread", thread), kill_after=None)
        if run.exit_code != 0 or run.endpoint_check is None or run.reported is None:
            raise HarnessError(f"clean {pattern} run failed: {run.stderr[-2000:]}")
        shown = self.show(thread)
        if cli:
            # The trials read the final state in this process, with the code `show` runs:
            # check once that it is exactly what the command prints.
            printed = self._segment(("show", thread, "--json"), kill_after=None)
            if printed.exit_code != 0 or json.loads(printed.stdout) != shown:
                raise HarnessError(f"`quorum show {thread} --json` differs from get_thread")
        if shown["status"] != "completed":
            raise HarnessError(f"clean {pattern} run ended {shown['status']}")
        return Baseline.of(pattern, text, self._chat_since(since), run, shown)

    def trial(self, plan: Plan, baseline: Baseline) -> Trial:
        """Run `plan`: SIGKILL a process at each of its kill points, then resume to the end.

        The first process is `quorum run`; each later one is `quorum resume`, or `quorum run`
        again when a kill came before the thread's first checkpoint: then the store has no
        such thread, and starting it again is all there is to do.
        """
        offsets = [f * baseline.working for f in plan.fractions]
        trial = Trial(plan, list(offsets))
        since = len(self.stub.requests)
        start = ("run", plan.pattern, baseline.input, "--thread", plan.thread)
        if plan.at_call is not None:
            segment = self._segment(start, kill_after=None, kill_at_call=plan.at_call)
            trial.segments.append(segment)
            trial.planned.insert(0, segment.kill_offset or 0.0)
            offsets = offsets if segment.killed is not None else []
        for offset in offsets:
            command = ("resume", plan.thread) if self._exists(plan.thread) else start
            segment = self._segment(command, kill_after=offset)
            trial.segments.append(segment)
            if segment.killed is None:
                break  # it ended before the kill was due
        for _ in range(MAX_RECOVERIES):
            last = trial.segments[-1]
            if last.killed is None and last.exit_code == 0:
                break
            command = ("resume", plan.thread) if self._exists(plan.thread) else start
            trial.segments.append(self._segment(command, kill_after=None))
        trial.requests = self._chat_since(since)
        trial.shown = self.show(plan.thread) if self._exists(plan.thread) else {}
        return trial

    def command(
        self, *args: str, kill_after: float | None = None, kill_at_call: int | None = None
    ) -> tuple[Segment, list[Served]]:
        """Run `quorum ARGS` in this lane, SIGKILLed as `_segment` says.

        Killed `kill_after` s after its endpoint check, or while its `kill_at_call`-th chat
        request is held (see `Plan.at_call`). Returns the process, and the chat requests the
        stub served while it ran.
        """
        since = len(self.stub.requests)
        segment = self._segment(tuple(args), kill_after=kill_after, kill_at_call=kill_at_call)
        return segment, self._chat_since(since)

    def show(self, thread: str) -> dict[str, Any]:
        """What `quorum show THREAD --json` prints, read in this process.

        The CLI prints `threads.get_thread` made JSON this way; reading it here saves a
        process start (two seconds of imports) per trial.
        """
        info = asyncio.run(threads.get_thread(thread, database=self.database))
        return to_jsonable_python(vars(info), fallback=str)

    def _exists(self, thread: str) -> bool:
        try:
            asyncio.run(threads.get_thread(thread, database=self.database))
        except ThreadNotFound:
            return False
        return True

    def _segment(
        self,
        command: tuple[str, ...],
        *,
        kill_after: float | None,
        kill_at_call: int | None = None,
    ) -> Segment:
        """Run `quorum COMMAND`, SIGKILLed `kill_after` s in or at `kill_at_call` (`Plan`)."""
        since = len(self.stub.requests)
        held = self.stub.hold(_nth(kill_at_call)) if kill_at_call is not None else None
        self._processes += 1
        out = self.root / "logs" / f"{self._processes:05d}.out"
        killed = kill_sent = None
        with open(out, "wb") as stdout:
            launched = time.monotonic()
            process = (forks.start if self.forked else _python_m_quorum)(
                command,
                env=self.env,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group, killed as one
            )
        self._live.add(process)
        try:
            assert process.stderr is not None
            stderr = _Lines(process.stderr)
            check = self._endpoint_check(since, process) if kill_after is not None else None
            if kill_after is not None and check is not None:
                time.sleep(max(0.0, check + kill_after - time.monotonic()))
                killed, kill_sent = _sigkill(process)
            elif held is not None and self._earlier_replies_settled(since, held, process):
                killed, kill_sent = _sigkill(process)
            exit_code = process.wait(timeout=PROCESS_TIMEOUT)
        finally:
            kill_group(process)
            self._live.discard(process)
            if held is not None:
                self.stub.unhold(held)  # after the kill: its reply is written to no one
        ended = time.monotonic()
        stderr.join(timeout=10)
        if check is None:
            check = next(
                (r.started for r in self.stub.requests[since:] if _is_endpoint_check(r)), None
            )
        return Segment(
            command=command,
            launched=launched,
            endpoint_check=check,
            killed=killed,
            kill_sent=kill_sent,
            reported=stderr.summary_at(),
            exit_code=exit_code,
            ended=ended,
            stdout=out.read_text(errors="replace"),
            stderr="\n".join(line for _, line in stderr.lines),
        )

    def _earlier_replies_settled(self, since: int, held: Hold, process: forks.Process) -> bool:
        """Wait until `held` holds a request of `process` and the rest are settled.

        Settled: every other chat request it made has had its reply written `2 * GRACE` ago.
        False if the process exited first.
        """
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while not held.arrived.wait(0.01):
            if process.poll() is not None:
                return False
            if time.monotonic() > deadline:
                raise HarnessError(f"no chat request to hold within {PROCESS_TIMEOUT:g} s")
        while True:
            others = [r for r in self.stub.requests[since:] if r.body is not held.body]
            pending = [r for r in others if r.path == CHAT_PATH and not r.finished]
            written = max((r.finished for r in others if r.path == CHAT_PATH), default=0.0)
            if not pending and time.monotonic() >= written + 2 * GRACE:
                return process.poll() is None
            if time.monotonic() > deadline:
                raise HarnessError(f"replies still unwritten after {PROCESS_TIMEOUT:g} s")
            time.sleep(0.005)

    def _endpoint_check(self, since: int, process: forks.Process) -> float | None:
        """When the process's `GET /models` arrived; None if it exited without one."""
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while time.monotonic() < deadline:
            found = [r for r in self.stub.requests[since:] if _is_endpoint_check(r)]
            if found:
                return found[0].started
            if process.poll() is not None:
                return None
            time.sleep(0.002)
        raise HarnessError(f"no endpoint check within {PROCESS_TIMEOUT:g} s")

    def _chat_since(self, since: int) -> list[Served]:
        return [
            Served.of(r)
            for r in self.stub.requests[since:]
            if r.path == CHAT_PATH and r.body is not None
        ]


class _Lines(threading.Thread):
    """Reads a process's stderr as it comes, stamping each line with when it arrived."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(name="crash-harness-stderr", daemon=True)
        self.stream = stream
        self.lines: list[tuple[float, str]] = []
        self.start()

    def run(self) -> None:
        with self.stream:
            for raw in self.stream:
                self.lines.append((time.monotonic(), raw.decode(errors="replace").rstrip()))

    def summary_at(self) -> float | None:
        """When the CLI printed its summary line (`thread T  status S ...`), if it did."""
        summaries = (
            t for t, line in self.lines if line.startswith("thread ") and " status " in line
        )
        return next(summaries, None)


def _python_m_quorum(args: tuple[str, ...], **popen: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "quorum.cli", *args], **popen)


def _sigkill(process: forks.Process) -> tuple[float | None, float | None]:
    """SIGKILL `process`'s group if it still runs: when just before, and just after."""
    if process.poll() is not None:
        return None, None
    killed = time.monotonic()
    os.killpg(process.pid, signal.SIGKILL)
    return killed, time.monotonic()


def _nth(n: int) -> Callable[[dict[str, Any]], bool]:
    """A stub hold's match that takes the `n`-th chat request it is shown (from 1)."""
    seen = 0

    def match(body: dict[str, Any]) -> bool:
        nonlocal seen
        seen += 1
        return seen == n

    return match


def _is_endpoint_check(recorded: Recorded) -> bool:
    return recorded.method == "GET" and recorded.path.rstrip("/") == MODELS_PATH


def kill_group(process: forks.Process, *, drain: bool = False) -> None:
    """SIGKILL `process` with its group if it still runs, and reap it.

    With `drain`, its pipes are read to their end and closed too (leave it off while a
    thread of yours reads them).
    """
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if drain:
        process.communicate(timeout=30)
    else:
        process.wait(timeout=30)


def _labels(bodies: Iterable[str]) -> Iterator[str]:
    for body in bodies:
        yield who_asked(json.loads(body))


# --- campaigns -------------------------------------------------------------------------------


def plan_trials(
    patterns: Iterable[str], per_pattern: int, *, seed: int, kills: int = 1
) -> list[Plan]:
    """`per_pattern` trials of each pattern, the patterns taken in turn.

    A trial's first kill point is one uniform draw from its own equal slice of [0, SPAN), so
    even a few trials cover the whole run; later kills (of the resumes) are uniform draws.
    """
    rng = random.Random(seed)
    by_pattern: dict[str, list[Plan]] = {}
    for pattern in patterns:
        firsts = [(n + rng.random()) * SPAN / per_pattern for n in range(per_pattern)]
        rng.shuffle(firsts)
        by_pattern[pattern] = [
            Plan(
                pattern,
                f"{pattern}-{n}",
                (first, *(rng.random() * SPAN for _ in range(kills - 1))),
            )
            for n, first in enumerate(firsts)
        ]
    return [plan for plans in zip(*by_pattern.values(), strict=True) for plan in plans]


@dataclass
class Campaign:
    """Trials run and judged."""

    baselines: dict[str, Baseline]
    verdicts: list[Verdict]
    seconds: float


def run_campaign(
    root: Path,
    plans: list[Plan],
    *,
    lanes: int = 2,
    delay: float = DELAY,
    grace: float = GRACE,
    on_verdict: Callable[[Verdict], None] | None = None,
    database: str | None = None,
    forked: bool = False,
) -> Campaign:
    """Measure each pattern's clean run, then run and judge every trial, `lanes` at a time.

    `database` (a postgresql:// URL) puts every lane's threads in that database instead of
    each lane's own SQLite file. `forked`: see `Harness`.
    """
    began = time.monotonic()
    patterns = list(dict.fromkeys(plan.pattern for plan in plans))
    idle: queue.Queue[Harness] = queue.Queue()
    with ExitStack() as stack:
        for n in range(lanes):
            lane = Harness(root / f"lane{n}", delay=delay, database=database, forked=forked)
            idle.put(stack.enter_context(lane))

        def in_lane(job: Callable[[Harness], T]) -> T:
            harness = idle.get()
            try:
                return job(harness)
            finally:
                idle.put(harness)

        def one(plan: Plan, baseline: Future[Baseline], harness: Harness) -> Verdict:
            verdict = judge(harness.trial(plan, baseline.result()), baseline.result(), grace=grace)
            if on_verdict is not None:
                on_verdict(verdict)
            return verdict

        with ThreadPoolExecutor(lanes, thread_name_prefix="crash-lane") as pool:
            # Submitted first, so every clean run starts before any trial waits on one.
            baselines = {
                p: pool.submit(in_lane, lambda h, p=p: h.measure_baseline(p)) for p in patterns
            }
            verdicts = [
                pool.submit(in_lane, lambda h, plan=plan: one(plan, baselines[plan.pattern], h))
                for plan in plans
            ]
            return Campaign(
                baselines={p: f.result() for p, f in baselines.items()},
                verdicts=[f.result() for f in verdicts],
                seconds=time.monotonic() - began,
            )


# --- judging ---------------------------------------------------------------------------------


def judge(trial: Trial, baseline: Baseline, *, grace: float = GRACE) -> Verdict:
    """Check a trial against its clean run; `Verdict.problems` lists what failed."""
    verdict = Verdict(trial, baseline)
    problems = verdict.problems
    segments = trial.segments
    extra = _around_kills(trial, verdict, grace)

    final = segments[-1]
    if final.exit_code != 0 or final.killed is not None:
        problems.append(
            f"the last process (quorum {' '.join(final.command[:2])}) exited {final.exit_code}: "
            f"{final.stderr.strip()[-1500:]}"
        )
    shown = trial.shown
    if shown.get("status") != "completed":
        problems.append(f"status {shown.get('status')!r}, error {shown.get('error')!r}")
    elif comparable(shown["values"]) != baseline.state:
        problems.append(f"final state differs from the clean run's: {_diff(shown, baseline)}")
    for label, before in verdict.rerequested_completed:
        problems.append(
            f"completed call requested again: [{label}], its reply written {before:.3f} s "
            "before the kill"
        )
    served = Counter(r.body for r in trial.requests)
    expected = baseline.bodies + extra
    if served != expected:
        problems.append(
            f"requests not accounted for: {len(trial.requests)} served; the clean run's "
            f"{baseline.requests} + {sum(extra.values())} cut off or asked again; unexplained "
            f"{sorted(_labels(served - expected))}, never sent {sorted(_labels(expected - served))}"
        )
    usage = shown.get("usage") or {}
    calls = sum(u["calls"] for u in usage.values())
    attempts = sum(u.get("attempts", u["calls"]) for u in usage.values())
    clean_calls = sum(u["calls"] for u in baseline.usage.values())
    # `calls` counts each call once. `attempts` counts the requests whose outcome reached
    # Quorum's journal: a request the kill cut off, or a reply delivered but not yet
    # journaled when the process died, lived only in the dead process's memory, so nobody
    # counts it, although the endpoint served it (and a paid one bills it). That leaves
    # exactly the requests served minus those asked for again.
    kept = len(trial.requests) - sum(extra.values())
    if shown and (calls != clean_calls or attempts != kept):
        problems.append(
            f"usage counts {calls} calls and {attempts} attempts; the clean run made "
            f"{clean_calls} calls, and {kept} of the requests served were not asked again"
        )
    return verdict


def _around_kills(trial: Trial, verdict: Verdict, grace: float) -> Counter[str]:
    """The requests beyond the clean run's: cut off by a kill, or asked for again.

    Each kill's requests are counted on `verdict` as completed, near the kill or cut off, and
    those asked for again are listed there.
    """
    segments = trial.segments
    # A request belongs to the last process started before it arrived: the next process of
    # a trial starts only after the killed one is reaped, so nothing it sent comes later.
    owner = [
        max(n for n, s in enumerate(segments) if s.launched <= r.started) for r in trial.requests
    ]
    extra: Counter[str] = Counter()
    for n, segment in enumerate(segments):
        if segment.killed is None or segment.kill_sent is None:
            continue
        completed: dict[str, float] = {}
        near: dict[str, float] = {}
        for request, where in zip(trial.requests, owner, strict=True):
            if where != n:
                continue
            if request.finished and request.finished <= segment.killed - grace:
                verdict.completed_at_kill += 1
                completed[request.body] = request.finished
            elif request.finished and request.finished <= segment.kill_sent + SLACK:
                verdict.near_kill += 1
                near[request.body] = request.finished
            else:
                verdict.cut_off += 1
                extra[request.body] += 1
        for request, where in zip(trial.requests, owner, strict=True):
            if where <= n:
                continue
            if request.body in completed:
                before = segment.killed - completed.pop(request.body)
                verdict.rerequested_completed.append((request.label, before))
                extra[request.body] += 1
            elif request.body in near:
                before = segment.killed - near.pop(request.body)
                verdict.rerequested_near_kill.append((request.label, before))
                extra[request.body] += 1
    return extra


def _diff(shown: dict[str, Any], baseline: Baseline) -> str:
    now = comparable(shown["values"])
    keys = sorted(k for k in now | baseline.state if now.get(k) != baseline.state.get(k))
    return "; ".join(
        f"{k}: {json.dumps(now.get(k))[:300]} != {json.dumps(baseline.state.get(k))[:300]}"
        for k in keys
    )


def describe(verdict: Verdict) -> str:
    """The trial as a reproduction: what was killed when, what the stub saw, what show says."""
    trial, baseline = verdict.trial, verdict.baseline
    plan = trial.plan
    lines = [
        f"{plan.pattern} thread {plan.thread}: kill offsets {[round(o, 3) for o in trial.planned]}"
        f" s after the endpoint check (clean run: {baseline.working:.3f} s working, "
        f"{baseline.requests} requests)"
    ]
    origin = next((s.endpoint_check for s in trial.segments if s.endpoint_check), 0.0)
    for n, s in enumerate(trial.segments):
        what = "ran to its end" if s.killed is None else f"SIGKILLed at {s.killed - origin:.3f} s"
        check = f"{s.endpoint_check - origin:.3f}" if s.endpoint_check else "-"
        lines.append(
            f"  process {n}: quorum {' '.join(s.command[:2])}, endpoint check at {check} s, "
            f"{what}, exit {s.exit_code}"
        )
    lines.append("  requests (arrived -> reply written, s from the first endpoint check):")
    for r in trial.requests:
        written = f"{r.finished - origin:7.3f}" if r.finished else "  never"
        lines.append(f"    {r.started - origin:7.3f} -> {written}  {r.label}")
    shown = trial.shown
    lines.append(f"  show: status {shown.get('status')}, error {shown.get('error')}")
    lines.append(f"  usage {json.dumps(shown.get('usage'))}")
    lines += [f"  problem: {p}" for p in verdict.problems]
    return "\n".join(lines)
