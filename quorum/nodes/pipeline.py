"""The pipeline's four stage agents: research, summarize, fact-check, format.

Each stage takes a typed input from the state and returns a typed output (the pydantic
models in `quorum.state`), so a stage can be understood, tested and replaced on its own.
Research and fact-check use tools: each is a tool-use subgraph (`quorum.graphs.tool_loop`)
whose `*_brief` node sets up the conversation and whose last node writes the typed output.
"""

from __future__ import annotations

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from pydantic import BaseModel, ConfigDict, Field

from quorum.answers import said_once
from quorum.context import QuorumContext
from quorum.models import ask, ask_reasoned, ask_structured
from quorum.state import (
    FactCheck,
    FactCheckInput,
    FactCheckState,
    PipelineState,
    ResearchInput,
    ResearchNotes,
    ResearchState,
    Summary,
)
from quorum.tools import tools_for

RESEARCH_PROMPT = """You are a researcher. Collect the key facts about the topic the user gives.
Look them up with your tools first (search the documents before the web); do not guess.
For each fact give the claim and its source (a document path, a URL, or 'general knowledge')."""

NOTES_REQUEST = "Now write your research notes as JSON: each fact with its source."

SUMMARY_PROMPT = """You are a summarizer. Write a short, accurate summary of the research notes
below, in plain prose: a few sentences, using only facts from the notes. Write the summary
alone, with no heading and no preamble."""

CLAIMS_REQUEST = """Now list, as JSON, each factual claim your summary makes: one short sentence
each, as the summary states it."""

REVISION_NOTE = """A fact-checker found these claims unsupported by the notes; remove or fix
them:
{claims}"""

FACT_CHECK_PROMPT = """You are a fact-checker. Compare each claim of the summary with the
research notes, and check doubtful claims against the documents with your tools. A claim is
supported only if the notes or the documents state it."""

VERDICT_REQUEST = """Now give your verdict as JSON: list the unsupported claims exactly as
written, or none if all are supported."""

FACT_CHECK_TOOLS = ("search_documents", "read_document")

FORMAT_PROMPT = """You are an editor. Format the summary as a markdown document: a title, the
summary as short paragraphs or bullets, and a 'Sources' section from the notes. Reply with
the markdown document alone."""


class Claims(BaseModel):
    """The factual claims a summary makes."""

    model_config = ConfigDict(extra="forbid")

    claims: list[str] = Field(description="Each factual claim the summary makes.")


def _notes(notes: ResearchNotes) -> str:
    return "\n".join(f"- {f.claim} (source: {f.source})" for f in notes.findings)


async def research_brief(state: ResearchInput, runtime: Runtime[QuorumContext]) -> dict:
    """Set up the researcher: the topic, and the tools research is offered."""
    return {
        "agent": "research",
        "tools": [tool.name for tool in await tools_for("research", runtime.context)],
        "max_rounds": runtime.context.max_tool_calls,
        "messages": [SystemMessage(RESEARCH_PROMPT), HumanMessage(f"Topic: {state['input']}")],
    }


async def research_notes(state: ResearchState, runtime: Runtime[QuorumContext]) -> dict:
    """Write what the research found as typed notes."""
    notes = await ask_structured(
        "research",
        runtime.context,
        [*state["messages"], HumanMessage(NOTES_REQUEST)],
        ResearchNotes,
    )
    return {"notes": notes}


async def summarize(state: PipelineState, runtime: Runtime[QuorumContext]) -> dict:
    """Summarize the notes, fixing the claims a fact-check rejected if there was one."""
    messages = [
        SystemMessage(SUMMARY_PROMPT),
        HumanMessage(f"Topic: {state['input']}\nResearch notes:\n{_notes(state['notes'])}"),
    ]
    check = state.get("fact_check")
    if check and check.unsupported_claims:
        claims = "\n".join(f"- {c}" for c in check.unsupported_claims)
        messages.append(HumanMessage(REVISION_NOTE.format(claims=claims)))
    text, listed = await ask_reasoned(
        "summarize", runtime.context, messages, Claims, request=CLAIMS_REQUEST
    )
    summary = Summary(text=text.strip(), claims=listed.claims)
    return {"summary": summary, "revisions": state.get("revisions", -1) + 1}


async def fact_check_brief(state: FactCheckInput, runtime: Runtime[QuorumContext]) -> dict:
    """Set up the fact-checker: the notes, the summary's claims, and document search."""
    summary = state["summary"]
    claims = "\n".join(f"- {c}" for c in summary.claims)
    return {
        "agent": "fact_check",
        "tools": list(FACT_CHECK_TOOLS),
        "max_rounds": runtime.context.max_tool_calls,
        "messages": [
            SystemMessage(FACT_CHECK_PROMPT),
            HumanMessage(
                f"Research notes:\n{_notes(state['notes'])}\n\n"
                f"Summary:\n{summary.text}\n\nClaims:\n{claims}"
            ),
        ],
    }


async def fact_check_verdict(state: FactCheckState, runtime: Runtime[QuorumContext]) -> dict:
    """Give the fact-check's verdict as typed output."""
    check = await ask_structured(
        "fact_check",
        runtime.context,
        [*state["messages"], HumanMessage(VERDICT_REQUEST)],
        FactCheck,
    )
    return {"fact_check": check}


async def format_report(state: PipelineState, runtime: Runtime[QuorumContext]) -> dict:
    """Format the checked summary as markdown: prose, so no schema stands in its way."""
    document = await ask(
        "format_report",
        runtime.context,
        [
            SystemMessage(FORMAT_PROMPT),
            HumanMessage(
                f"Topic: {state['input']}\nSummary:\n{state['summary'].text}\n\n"
                f"Notes:\n{_notes(state['notes'])}"
            ),
        ],
    )
    return {"output": said_once(document.text)}
