"""What a resume spends again: model calls and tokens of completed steps.

Each pattern runs once cleanly, then again with its last agent failing on its last call;
`quorum.resume` finishes the thread. Calls are counted at the scripted model (outside
Quorum's own records): everything beyond the clean run's calls was spent again. The
crash-by-SIGKILL version of this is `bench/bench_crash.py` (`python -m bench bench_crash`).
"""

from __future__ import annotations

from langchain_core.messages import BaseMessage

from bench.rows import Row, Target
from bench.runs import Databases
from bench.shapes import INPUTS
from quorum import runner
from quorum.errors import RunFailed
from quorum.testing import DEFAULT_RESPONDERS, Script, scripted

LAST_AGENT = {
    "orchestrator": "synthesizer",
    "pipeline": "format_report",
    "debate": "judge",
    "react": "agent",
}
TOKENS_PER_CALL = 15
"""What the scripted model reports for every call."""


def _failing_once(agent: str, at_call: int) -> Script:
    seen: list[int] = []

    def respond(name: str, messages: list[BaseMessage]) -> object:
        seen.append(1)
        if len(seen) == at_call:
            raise RuntimeError(f"{name} is out (benchmark fault)")
        return DEFAULT_RESPONDERS[name](name, messages)

    return Script().on(agent, respond)


async def resume_cost(databases: Databases) -> list[Row]:
    """Calls and tokens spent again by a resume after a failed last step, per pattern."""
    rows = []
    for label, kind in databases.targets():
        for pattern, agent in LAST_AGENT.items():
            target = databases.new(kind)
            clean = Script()
            with scripted(clean):
                await runner.run(pattern, INPUTS[pattern], database=target)
            last_call = clean.count(agent)
            faulty = _failing_once(agent, last_call)
            with scripted(faulty):
                try:
                    failed = await runner.run(pattern, INPUTS[pattern], database=target)
                    raise AssertionError(f"the fault did not stop {failed.thread_id}")
                except RunFailed as error:
                    assert error.thread_id is not None
                    resumed = await runner.resume(error.thread_id, database=target)
            assert resumed.status == "completed", resumed.status
            # The failed call was never answered: it is asked again, and is not "spent again".
            again = len(faulty.calls) - len(clean.calls) - 1
            rows.append(
                Row(
                    f"calls repeated by a resume after a failed last step ({pattern})",
                    again,
                    None,
                    "calls",
                    Target("==", 0, of="quorum"),
                    database=label,
                    note=f"tokens spent again: {again * TOKENS_PER_CALL}",
                )
            )
    return rows
