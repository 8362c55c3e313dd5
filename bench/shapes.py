"""What the suite runs: scripts for Quorum's patterns and raw LangGraph graphs of the same shape.

The raw graphs are what a LangGraph user would write by hand for the same work: the same
nodes, edges and `Send` fan-out, the same scripted model (so the model costs the same on
both sides), tools bound once, no checkpointer, no journal, no metering, no tool contract.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Send
from pydantic import BaseModel

from quorum.context import QuorumContext
from quorum.nodes.react import REACT_PROMPT
from quorum.nodes.workers import WORKERS
from quorum.state import Plan
from quorum.testing import Script, ScriptedChatModel, plan_of
from quorum.tools import all_tools

INPUTS = {
    "orchestrator": "Compare SQLite and PostgreSQL for a small team",
    "pipeline": "Why does water boil at 100 C?",
    "debate": "Tabs or spaces?",
    "react": "What is 6 * 7?",
}
FOUR_WORKERS = plan_of(
    ("s1", "researcher", []),
    ("s2", "analyst", []),
    ("s3", "analyst", []),
    ("s4", "writer", ["s1", "s2", "s3"]),
)


def react_script(rounds: int, pad: int = 0, delay: float = 0.0) -> Script:
    """A ReAct agent that calls the calculator `rounds` times, then answers.

    `pad` characters of reasoning go with every tool call, so the history grows by about
    that much a round.
    """

    def agent(name: str, messages: list[BaseMessage]) -> AIMessage:
        done = sum(isinstance(m, ToolMessage) for m in messages)
        if done >= rounds:
            return AIMessage("The answer is 42.")
        call = {"name": "calculator", "args": {"expression": "6 * 7"}, "id": f"c{done}"}
        return AIMessage("x" * pad, tool_calls=[call])

    return Script(delay=delay).on("agent", agent)


def orchestrator_script(plan: dict[str, Any], delay: float = 0.0) -> Script:
    """An orchestrator whose planner always gives `plan`."""
    return Script(delay=delay).on("planner", lambda a, m: plan)


def parallel_plan(workers: int) -> dict[str, Any]:
    """A plan of `workers` independent analyst steps."""
    return plan_of(*((f"s{k}", "analyst", []) for k in range(1, workers + 1)))


def context_for(pattern: str, *, rounds: int = 1, plan_steps: int = 8) -> QuorumContext:
    """Run settings that let the scripted run finish."""
    if pattern == "react":
        return QuorumContext(max_steps=min(rounds + 1, 200))
    return QuorumContext(max_plan_steps=max(plan_steps, 8))


def recursion_limit(rounds: int) -> int:
    """Supersteps a run of `rounds` tool rounds may need (LangGraph stops at the limit)."""
    return 2 * rounds + 50


# --- raw LangGraph, ReAct ---------------------------------------------------------------------


class RawReactState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def raw_react(script: Script, chat: BaseChatModel | None = None) -> Any:
    """ReAct by hand: agent -> one `tool` task per call -> agent ... -> END.

    `chat` replaces the scripted model (ChatOpenAI against a stub server, say).
    """
    tools = all_tools()  # Quorum's own: the bench configures no MCP server
    chat = chat or ScriptedChatModel(agent="agent", script=script)
    model = chat.bind_tools(tools)
    by_name = {t.name: t for t in tools}

    async def agent(state: RawReactState) -> dict:
        reply = await model.ainvoke([SystemMessage(REACT_PROMPT), *state["messages"]])
        return {"messages": [reply]}

    def route(state: RawReactState) -> Any:
        last = state["messages"][-1]
        return [Send("tool", call) for call in last.tool_calls] or END

    async def tool(call: dict) -> dict:
        out = await by_name[call["name"]].ainvoke(call["args"])
        text = out.model_dump_json() if isinstance(out, BaseModel) else json.dumps(out)
        return {"messages": [ToolMessage(text, tool_call_id=call["id"])]}

    builder = StateGraph(RawReactState)
    builder.add_node(agent)
    builder.add_node(tool)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", route, ["tool", END])
    builder.add_edge("tool", "agent")
    return builder.compile()


# --- raw LangGraph, orchestrator --------------------------------------------------------------


def _merge(a: dict, b: dict) -> dict:
    return {**a, **b}


class RawOrchestratorState(TypedDict, total=False):
    input: str
    plan: Plan
    results: Annotated[dict[str, str], _merge]
    output: str


class RawWorkerState(TypedDict, total=False):
    step_id: str
    worker: str
    task: str
    inputs: dict[str, str]
    messages: Annotated[list[AnyMessage], add_messages]
    results: Annotated[dict[str, str], _merge]


def raw_orchestrator(script: Script) -> Any:
    """Orchestrator-worker by hand: planner -Send-> worker subgraph -> dispatch -> synthesizer."""
    models = {
        name: ScriptedChatModel(agent=name, script=script)
        for name in ("planner", "synthesizer", *WORKERS)
    }
    planner, synthesizer = _raw_lead_nodes(models)

    async def dispatch(state: RawOrchestratorState) -> dict:
        return {}

    def route(state: RawOrchestratorState) -> Any:
        done = state.get("results", {})
        ready = [
            s
            for s in state["plan"].steps
            if s.id not in done and all(d in done for d in s.dependencies)
        ]
        if not ready:
            return "synthesizer"
        return [
            Send(
                "worker",
                {
                    "step_id": s.id,
                    "worker": s.worker,
                    "task": s.task,
                    "inputs": {d: done[d] for d in s.dependencies},
                },
            )
            for s in ready
        ]

    builder = StateGraph(RawOrchestratorState)
    builder.add_node(planner)
    builder.add_node(dispatch)
    builder.add_node("worker", _raw_worker(models))
    builder.add_node(synthesizer)
    builder.add_edge(START, "planner")
    # As Quorum's orchestrator does: the first wave goes out from the planner.
    builder.add_conditional_edges("planner", route, ["worker", "synthesizer"])
    builder.add_conditional_edges("dispatch", route, ["worker", "synthesizer"])
    builder.add_edge("worker", "dispatch")
    builder.add_edge("synthesizer", END)
    return builder.compile()


def _raw_lead_nodes(models: dict[str, ScriptedChatModel]) -> tuple[Any, Any]:
    """The raw orchestrator's `planner` and `synthesizer` nodes, each on its scripted model."""

    async def planner(state: RawOrchestratorState) -> dict:
        # As Quorum's planner does: think in text, then write the plan.
        asked = [SystemMessage("Plan."), HumanMessage(f"Goal: {state['input']}")]
        working = await models["planner"].ainvoke(asked)
        reply = await models["planner"].ainvoke(
            [*asked, AIMessage(working.text), HumanMessage("Now the plan as JSON.")]
        )
        return {"plan": Plan.model_validate_json(reply.text)}

    async def synthesizer(state: RawOrchestratorState) -> dict:
        merged = "\n".join(f"{k}: {v}" for k, v in state["results"].items())
        reply = await models["synthesizer"].ainvoke([SystemMessage("Merge."), HumanMessage(merged)])
        return {"output": reply.text}

    return planner, synthesizer


def _raw_worker(models: dict[str, ScriptedChatModel]) -> Any:
    """The raw orchestrator's worker subgraph, compiled: brief -> act -> report, one plan step."""

    async def brief(state: RawWorkerState) -> dict:
        spec = WORKERS[state["worker"]]
        text = f"Your task: {state['task']}\n" + "".join(
            f"\nResult of step {k}:\n{v}\n" for k, v in state["inputs"].items()
        )
        return {"messages": [SystemMessage(spec.prompt), HumanMessage(text)]}

    async def act(state: RawWorkerState) -> dict:
        return {"messages": [await models[state["worker"]].ainvoke(state["messages"])]}

    async def report(state: RawWorkerState) -> dict:
        return {"results": {state["step_id"]: state["messages"][-1].text}}

    worker = StateGraph(RawWorkerState)
    worker.add_node(brief)
    worker.add_node(act)
    worker.add_node(report)
    worker.add_edge(START, "brief")
    worker.add_edge("brief", "act")
    worker.add_edge("act", "report")
    worker.add_edge("report", END)
    return worker.compile(name="worker")
