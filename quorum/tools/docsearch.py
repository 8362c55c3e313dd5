"""Document search: the tools that search and read a local folder of text, markdown and HTML.

The folder (`QUORUM_DOCS_DIR`, by default the sample corpus shipped in `corpus/`) is indexed
into an SQLite FTS5 table under the data folder (`quorum.tools.doc_index`: ranking, stop
words, and the "not here" note a query no document answers gets). Every search first brings
the index up to date. Agents read a whole document with `read_document`, which serves the
indexed text, so it can reach nothing outside the folder.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field

from quorum.settings import get_settings
from quorum.tools.contract import TextPart, ToolError, agent_tool
from quorum.tools.doc_index import DocumentHit, DocumentIndex


class DocumentSearch(BaseModel):
    """The result of a document search, best match first."""

    query: str = Field(description="The query as given.")
    note: str | None = Field(
        default=None, description="Why nothing was found, what the folder holds, what to do."
    )
    hits: list[DocumentHit] = Field(description="Matching documents, best first.")
    documents: int = Field(description="How many documents the folder holds.")


class DocumentText(TextPart):
    """Part of one document's text."""

    path: str = Field(description="The document's path inside the document folder.")
    title: str = Field(description="The document's title.")


def sample_corpus() -> Path:
    """The folder of sample documents shipped with Quorum."""
    return Path(__file__).with_name("corpus")


def document_index() -> DocumentIndex:
    """The index of the configured document folder, kept under the data folder."""
    settings = get_settings()
    folder = (settings.docs_dir or sample_corpus()).expanduser().resolve()
    # One index file per folder, so pointing QUORUM_DOCS_DIR elsewhere starts a fresh one.
    name = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    return DocumentIndex(folder, settings.data_dir / "docsearch" / f"{name}.sqlite3")


@agent_tool(untrusted=True)
async def search_documents(
    query: Annotated[
        str, Field(max_length=500, description="Keywords or a question to search for.")
    ],
    max_results: Annotated[int, Field(ge=1, le=10, description="How many hits to return.")] = 5,
) -> DocumentSearch:
    """Search the local document collection and return the best-matching documents.

    Use for: facts, policies, notes and reference material kept in the documents folder;
    look here before the web. Each hit has a title, a path, a snippet, a BM25 score and
    the keywords it contains; read a whole document with read_document(path=...). No hits
    and a note listing what the folder is about: nothing there answers the query.
    Do not use for: the live web or recent news (use web_search), computing (use calculator),
    or files the team is working on (use list_files and read_file).
    Example: search_documents(query="boiling point of water at altitude", max_results=3)
    """
    index = document_index()

    def run() -> DocumentSearch:
        index.refresh()
        found = index.search(query, max_results)
        return DocumentSearch(
            query=query, note=found.note, hits=found.hits, documents=index.count()
        )

    return await asyncio.to_thread(run)


@agent_tool(untrusted=True)
async def read_document(
    path: Annotated[
        str,
        Field(max_length=1000, description="A document path exactly as search_documents gave it."),
    ],
    offset: Annotated[int, Field(ge=0, description="Character to start from, to read on.")] = 0,
    max_chars: Annotated[
        int, Field(ge=100, le=3000, description="Most characters to return.")
    ] = 3000,
) -> DocumentText:
    """Read the text of one document that search_documents found.

    Use for: reading a whole document after a search hit, to quote or check it; long
    documents come in parts: call again with offset=next_offset to read on.
    Do not use for: finding documents (use search_documents first) or files in the
    workspace (use read_file).
    Example: read_document(path="water-boiling-point.md")
    """
    index = document_index()

    def run() -> tuple[str, str] | None:
        index.refresh()
        return index.document(path)

    found = await asyncio.to_thread(run)
    if found is None:
        raise ToolError(
            f"there is no document {path!r} in the collection",
            retryable=False,
            suggestion="use a path exactly as search_documents returned it",
        )
    title, text = found
    return DocumentText(path=path, title=title, **TextPart.of(text, offset, max_chars))


TOOLS = [search_documents, read_document]
