"""The checkpoint schema: every pattern's state and every output stored in it.

Everything a checkpoint holds is declared here, so the strict deserialiser can find every
type it may revive by walking these classes, and node modules read the state they need from
here instead of from the graph modules that wire them. Each pattern's state extends
`QuorumState`, so the CLI, the Python API and Studio find a run's input, answer and usage
under the same keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, NotRequired

from langchain_core.messages import AnyMessage, ToolCall
from langgraph.channels import DeltaChannel
from pydantic import BaseModel, ConfigDict, Field, with_config
from typing_extensions import TypedDict

from quorum.framework import messages_delta_reducer

# --- Usage -----------------------------------------------------------------------------------


class Usage(TypedDict):
    """What one agent has spent so far."""

    calls: int
    """Model calls answered (a call retried three times counts once)."""
    input_tokens: int
    output_tokens: int
    attempts: NotRequired[int]
    """Requests sent for those calls, failed ones included."""
    cost_usd: NotRequired[float]
    """What those calls cost, from the price table (0 for self-hosted models)."""
    seconds: NotRequired[float]
    """Time spent waiting for those calls' replies."""


def sum_usage(seen: Usage, usage: Usage) -> Usage:
    """Two spends as one: the one way usage is added up (per agent, per run, per eval row)."""
    return Usage(
        calls=seen["calls"] + usage["calls"],
        input_tokens=seen["input_tokens"] + usage["input_tokens"],
        output_tokens=seen["output_tokens"] + usage["output_tokens"],
        attempts=seen.get("attempts", seen["calls"]) + usage.get("attempts", usage["calls"]),
        cost_usd=round(seen.get("cost_usd", 0.0) + usage.get("cost_usd", 0.0), 8),
        seconds=round(seen.get("seconds", 0.0) + usage.get("seconds", 0.0), 3),
    )


NO_USAGE = Usage(calls=0, input_tokens=0, output_tokens=0, attempts=0, cost_usd=0.0, seconds=0.0)


def add_usage(left: dict[str, Usage] | None, right: dict[str, Usage] | None) -> dict[str, Usage]:
    """Reducer: sum usage per agent, so parallel workers can each report their own."""
    merged = dict(left or {})
    for agent, usage in (right or {}).items():
        seen = merged.get(agent)
        merged[agent] = usage if seen is None else sum_usage(seen, usage)
    return merged


def total_usage(usage: Mapping[str, Usage]) -> Usage:
    """What every agent of `usage` spent, together."""
    total = NO_USAGE
    for spent in usage.values():
        total = sum_usage(total, spent)
    return total


def total_tokens(usage: Mapping[str, Usage]) -> int:
    """Input plus output tokens over every agent."""
    total = total_usage(usage)
    return total["input_tokens"] + total["output_tokens"]


def merge(left: dict | None, right: dict | None) -> dict:
    """Reducer: each writer adds or replaces its own entries (a worker's step, a side)."""
    return {**(left or {}), **(right or {})}


# A conversation is stored as what each step added, not copied whole into every checkpoint:
# LangGraph's DeltaChannel keeps a step's new messages in its writes and rebuilds the list from
# them (with a full snapshot every `snapshot_frequency` updates, which bounds the replay). A
# 100-round ReAct thread then keeps 0.79 MB instead of 16.7 MB, and a checkpoint's write
# time no longer grows with the conversation (bench/storage.py). The reducer has add_messages'
# semantics (ids replace, RemoveMessage deletes) in a form that may replay writes in batches.
Messages = Annotated[list[AnyMessage], DeltaChannel(messages_delta_reducer)]


def append(left: list[str] | None, right: list[str] | None) -> list[str]:
    """Reducer: keep every entry, so a count of them can bound a loop."""
    return [*(left or []), *(right or [])]


class QuorumOutput(TypedDict, total=False):
    """What every pattern returns: its answer and what it spent."""

    output: str
    """The final answer, as markdown."""
    usage: Annotated[dict[str, Usage], add_usage]
    """Model calls and tokens per agent."""


class QuorumState(QuorumOutput, total=False):
    """Keys every pattern has."""

    input: str
    """The goal, topic, question or task the run was given."""


# --- What a run is given: each pattern's input schema (Studio draws its form from it) -------
# Only views of the state: `input` is the state's own channel, so checkpoints are unchanged.
# Unknown keys are refused (a typo must not run with no input), and empty text too.

RunText = Annotated[str, Field(min_length=1, pattern=r"\S")]


# --- Tool use: an agent <-> tool loop, one graph step per model turn and per tool call -------


class ToolTask(TypedDict):
    """One tool call, sent to the `tool` node as its own task (and its own checkpoint)."""

    call: ToolCall
    tools: list[str]
    """The tools the agent was offered: a call to any other is refused."""
    agent: str
    tainted: NotRequired[list[str]]
    """The tools whose untrusted output the agent had read before this call: an irreversible
    call then waits for a person even when approved in advance."""


class ToolLoopState(QuorumState, total=False):
    """The conversation of one agent that may call tools before it answers."""

    agent: str
    """Whose turn it is: picks the model and labels the usage."""
    label: str
    """How traces name the agent's steps when its name alone is not enough ('researcher (s2)')."""
    tools: list[str]
    """Names of the tools the agent is offered."""
    max_rounds: int
    """Rounds of tool calls allowed; the turn after the last one offers no tools."""
    messages: Messages


# --- Orchestrator-worker -----------------------------------------------------------------------


class PlanStep(BaseModel):
    """One step of a plan."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Short unique id for the step, e.g. 's1'.")
    worker: str = Field(description="The worker that runs this step, by name.")
    task: str = Field(description="What the worker must do; self-contained.")
    dependencies: list[str] = Field(
        description="Ids of the steps whose results this step needs; [] if none."
    )


class Plan(BaseModel):
    """A plan: steps forming a directed acyclic graph."""

    model_config = ConfigDict(extra="forbid")

    steps: list[PlanStep] = Field(description="The steps, in any order.")


class OrchestratorState(QuorumState, total=False):
    """State of an orchestrator run; `input` is the goal."""

    plan: Plan | None
    plan_feedback: Annotated[list[str], append]
    results: Annotated[dict[str, str], merge]
    """Each finished step's result, by step id."""


@with_config(ConfigDict(extra="forbid"))
class OrchestratorInput(TypedDict):
    """What an orchestrator run is given."""

    input: Annotated[
        RunText, Field(description="The goal: what the team should find out or produce.")
    ]


class OrchestratorOutput(QuorumOutput, total=False):
    """What an orchestrator run returns: the answer, the plan and each step's result."""

    plan: Plan | None
    results: Annotated[dict[str, str], merge]


class WorkerTask(TypedDict):
    """What one worker is sent: the goal, its step and its dependencies' results, nothing else."""

    step_id: str
    worker: str
    task: str
    inputs: dict[str, str]
    """Results of the steps this one depends on, by step id."""
    goal: NotRequired[str]
    """The run's goal: a task a small planner wrote as "compare both" still says what both
    are. (Absent in sends checkpointed before it was added.)"""


def step_label(task: Any) -> str | None:
    """How a step sent its own input is named everywhere: progress, traces, spans, previews.

    `researcher (s2)` for a worker sent a plan step, `tool calculator` for a tool call; None
    for any other step (it goes by its node's name).
    """
    if isinstance(task, Mapping) and {"step_id", "worker"} <= task.keys():
        return f"{task['worker']} ({task['step_id']})"
    if isinstance(task, Mapping) and {"call", "tools"} <= task.keys():
        call = task["call"]
        return f"tool {call.get('name', '?') if isinstance(call, Mapping) else '?'}"
    return None


class WorkerState(ToolLoopState, total=False):
    """A worker's own state while it runs one step."""

    step_id: str
    worker: str
    task: str
    inputs: dict[str, str]
    results: Annotated[dict[str, str], merge]


class WorkerOutput(TypedDict, total=False):
    """What a worker hands back to the orchestrator."""

    results: Annotated[dict[str, str], merge]
    usage: Annotated[dict[str, Usage], add_usage]


# --- Pipeline ----------------------------------------------------------------------------------


class Finding(BaseModel):
    """One researched fact."""

    model_config = ConfigDict(extra="forbid")

    claim: str = Field(description="The fact, in one sentence.")
    source: str = Field(description="Where it comes from.")


class ResearchNotes(BaseModel):
    """Output of the research stage."""

    model_config = ConfigDict(extra="forbid")

    findings: list[Finding] = Field(description="The facts found about the topic.")


class Summary(BaseModel):
    """Output of the summary stage."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="The summary, a few sentences.")
    claims: list[str] = Field(description="Each factual claim the summary makes.")


class FactCheck(BaseModel):
    """Output of the fact-check stage."""

    model_config = ConfigDict(extra="forbid")

    verdict: Literal["supported", "unsupported"] = Field(
        description="'supported' if every claim is backed by the notes."
    )
    unsupported_claims: list[str] = Field(description="Claims the notes do not back.")


class PipelineState(QuorumState, total=False):
    """State of a pipeline run; `input` is the topic."""

    notes: ResearchNotes
    summary: Summary
    fact_check: FactCheck
    revisions: int
    """How many times the summary was revised after a fact-check."""


@with_config(ConfigDict(extra="forbid"))
class PipelineInput(TypedDict):
    """What a pipeline run is given."""

    input: Annotated[RunText, Field(description="The topic to research, summarize and check.")]


class PipelineOutput(QuorumOutput, total=False):
    """What a pipeline run returns: the report and each stage's typed output."""

    notes: ResearchNotes
    summary: Summary
    fact_check: FactCheck


class ResearchInput(TypedDict):
    """What the research stage reads."""

    input: str


class ResearchState(ToolLoopState, total=False):
    """The research stage's own state: its conversation, then its notes."""

    notes: ResearchNotes


class ResearchOutput(TypedDict, total=False):
    """What the research stage hands on."""

    notes: ResearchNotes
    usage: Annotated[dict[str, Usage], add_usage]


class FactCheckInput(TypedDict):
    """What the fact-check stage reads."""

    notes: ResearchNotes
    summary: Summary


class FactCheckState(ToolLoopState, total=False):
    """The fact-check stage's own state: its conversation, then its verdict."""

    notes: ResearchNotes
    summary: Summary
    fact_check: FactCheck


class FactCheckOutput(TypedDict, total=False):
    """What the fact-check stage hands on."""

    fact_check: FactCheck
    usage: Annotated[dict[str, Usage], add_usage]


# --- Debate ------------------------------------------------------------------------------------

Side = Literal["a", "b"]
Phase = Literal["answer", "critique", "revise", "judge"]


class Position(BaseModel):
    """A debater's answer."""

    model_config = ConfigDict(extra="forbid")

    # Reasoning first: a model writes the fields in order, and one that commits to an answer
    # before reasoning argues for whatever it wrote first.
    reasoning: str = Field(description="Why, briefly: the working that leads to the answer.")
    answer: str = Field(description="The answer to the question.")
    kept: bool = Field(
        default=False, description="True when a revision stated no answer and this one stood."
    )


class Verdict(BaseModel):
    """The judge's decision."""

    model_config = ConfigDict(extra="forbid")

    # The rationale first, for the same reason as `Position.reasoning`.
    rationale: str = Field(description="Weigh both answers: which is better supported, and why.")
    final_answer: str = Field(description="The answer the judge settles on.")
    winner: Literal["a", "b", "tie"] = Field(description="Which debater argued better.")
    confidence: float = Field(ge=0, le=1, description="How sure the judge is, 0 to 1.")


class DebateState(QuorumState, total=False):
    """State of a debate; `input` is the question."""

    phase: Phase
    round: int
    positions: Annotated[dict[str, Position], merge]
    critiques: Annotated[dict[str, str], merge]
    """Critique of each side's answer, written by the other side."""
    agreement: Annotated[dict[str, bool], merge]
    verdict: Verdict


@with_config(ConfigDict(extra="forbid"))
class DebateInput(TypedDict):
    """What a debate is given."""

    input: Annotated[RunText, Field(description="The question the debaters argue over.")]


class DebateOutput(QuorumOutput, total=False):
    """What a debate returns: the judge's answer, the verdict and the rounds it took."""

    round: int
    positions: Annotated[dict[str, Position], merge]
    verdict: Verdict


# --- ReAct -------------------------------------------------------------------------------------


class ReactState(QuorumState, total=False):
    """State of a ReAct run; `input` is the task."""

    messages: Messages
    steps: int
    """Act steps taken (rounds of tool calls)."""
    status: Literal["running", "answered", "step_limit"]


@with_config(ConfigDict(extra="forbid"))
class ReactInput(TypedDict):
    """What a ReAct run is given."""

    input: Annotated[RunText, Field(description="The task to solve with tools, step by step.")]


class ReactOutput(QuorumOutput, total=False):
    """What a ReAct run returns: the answer, how it ended and the whole conversation."""

    messages: Messages
    steps: int
    status: Literal["running", "answered", "step_limit"]


# --- Evaluation ----------------------------------------------------------------------------------


AnswerKind = Literal["number", "text"]
"""What an eval question's answer is: a number (numeric checker) or text."""


class EvalState(QuorumState, total=False):
    """State of one evaluated question (`quorum eval`); `input` is the question.

    Plain types only: the answer is stored as text, so the strict deserialiser needs nothing
    more than the patterns' own types.
    """

    kind: AnswerKind
    """What the answer is, so it is taken out as that type."""
    answer: str
    """The final answer, taken out of the strategy's working; "" when it reached none."""
    reasoning: str
    samples: Annotated[list[str], append]
    """Self-consistency: each sampled answer."""


class SampleTask(TypedDict):
    """What one self-consistency sample gets."""

    input: str
    kind: AnswerKind
    sample: int
