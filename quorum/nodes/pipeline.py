"""The pipeline's four stage agents: research, summarize, fact-check, format.

Each stage takes a typed input from the state and returns a typed output (the pydantic
models below), so a stage can be understood, tested and replaced on its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from pydantic import BaseModel, ConfigDict, Field

from quorum.context import QuorumContext
from quorum.models import ask_structured
from quorum.nodes.tool_use import use_tools_then_answer
from quorum.tools import default_tools, tools_named

if TYPE_CHECKING:
    from quorum.graphs.pipeline import PipelineState

RESEARCH_PROMPT = """You are a researcher. Collect the key facts about the topic the user gives.
Look them up with your tools first (search the documents before the web); do not guess.
For each fact give the claim and its source (a document path, a URL, or 'general knowledge')."""

NOTES_REQUEST = "Now write your research notes as JSON: each fact with its source."

SUMMARY_PROMPT = """You are a summarizer. Write a short, accurate summary of the research notes
below, and list each factual claim the summary makes. Use only facts from the notes.
Reply with JSON only."""

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
JSON only."""


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


class Document(BaseModel):
    """Output of the format stage."""

    model_config = ConfigDict(extra="forbid")

    markdown: str = Field(description="The finished markdown document.")


def _notes(notes: ResearchNotes) -> str:
    return "\n".join(f"- {f.claim} (source: {f.source})" for f in notes.findings)


async def research(state: PipelineState, runtime: Runtime[QuorumContext]) -> dict:
    """Research the topic with tools, then write typed notes."""
    notes, usage = await use_tools_then_answer(
        "research",
        runtime.context,
        [SystemMessage(RESEARCH_PROMPT), HumanMessage(f"Topic: {state['input']}")],
        default_tools(),
        NOTES_REQUEST,
        ResearchNotes,
    )
    return {"notes": notes, "usage": usage}


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
    summary, usage = await ask_structured("summarize", runtime.context, messages, Summary)
    return {"summary": summary, "revisions": state.get("revisions", -1) + 1, "usage": usage}


async def fact_check(state: PipelineState, runtime: Runtime[QuorumContext]) -> dict:
    """Check every claim of the summary against the notes."""
    summary = state["summary"]
    claims = "\n".join(f"- {c}" for c in summary.claims)
    check, usage = await use_tools_then_answer(
        "fact_check",
        runtime.context,
        [
            SystemMessage(FACT_CHECK_PROMPT),
            HumanMessage(
                f"Research notes:\n{_notes(state['notes'])}\n\n"
                f"Summary:\n{summary.text}\n\nClaims:\n{claims}"
            ),
        ],
        tools_named(FACT_CHECK_TOOLS),
        VERDICT_REQUEST,
        FactCheck,
    )
    return {"fact_check": check, "usage": usage}


async def format_report(state: PipelineState, runtime: Runtime[QuorumContext]) -> dict:
    """Format the checked summary as markdown."""
    document, usage = await ask_structured(
        "format_report",
        runtime.context,
        [
            SystemMessage(FORMAT_PROMPT),
            HumanMessage(
                f"Topic: {state['input']}\nSummary:\n{state['summary'].text}\n\n"
                f"Notes:\n{_notes(state['notes'])}"
            ),
        ],
        Document,
    )
    return {"output": document.markdown, "usage": usage}
