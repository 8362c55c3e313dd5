"""Document search: full-text search over a local folder of text, markdown and HTML files.

The folder (`QUORUM_DOCS_DIR`, by default the sample corpus shipped in `corpus/`) is indexed
into an SQLite FTS5 table under the data folder and ranked with BM25, title matches weighing
more than body matches. Every search first brings the index up to date: a file whose
modification time and size are unchanged is skipped, a changed one is hashed and re-indexed
only if its content differs, and files that disappeared are dropped. Agents read a whole
document with `read_document`, which serves the indexed text, so it can reach nothing
outside the folder.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field

from quorum.settings import get_settings
from quorum.tools.contract import TextPart, ToolError, agent_tool
from quorum.tools.html_text import html_to_text

SUFFIXES = frozenset({".txt", ".md", ".markdown", ".html", ".htm"})
"""Which files are indexed; others in the folder are ignored."""

MAX_FILE_BYTES = 5_000_000
"""Larger files are left out of the index rather than slowing every search."""

_SCHEMA_VERSION = 1
_MAX_QUERY_TERMS = 32
_TITLE_WEIGHT = 10.0
_WORD = re.compile(r"\w+")


class DocumentHit(BaseModel):
    """One document that matches a search."""

    title: str = Field(description="The document's title.")
    path: str = Field(description="Its path inside the document folder; give it to read_document.")
    snippet: str = Field(description="The best-matching passage, matched words in **bold**.")
    score: float = Field(description="BM25 relevance; higher is better.")


class DocumentSearch(BaseModel):
    """The result of a document search, best match first."""

    query: str = Field(description="The query as given.")
    hits: list[DocumentHit] = Field(description="Matching documents, best first.")
    documents: int = Field(description="How many documents the folder holds.")


class DocumentText(TextPart):
    """Part of one document's text."""

    path: str = Field(description="The document's path inside the document folder.")
    title: str = Field(description="The document's title.")


@dataclass(frozen=True)
class IndexChanges:
    """What one refresh of the index did."""

    added: int
    updated: int
    removed: int
    unchanged: int


def sample_corpus() -> Path:
    """The folder of sample documents shipped with Quorum."""
    return Path(__file__).with_name("corpus")


class DocumentIndex:
    """An FTS5 index of one folder, kept in one SQLite file.

    Every method opens its own connection, so one index can serve several threads; callers
    in async code run the methods in a worker thread.
    """

    def __init__(self, folder: Path, database: Path) -> None:
        self.folder = folder
        self.database = database

    def refresh(self) -> IndexChanges:
        """Bring the index up to date with the folder."""
        if not self.folder.is_dir():
            raise ToolError(
                f"the document folder {self.folder} does not exist",
                retryable=False,
                suggestion="ask the operator to set QUORUM_DOCS_DIR to a folder of documents",
            )
        on_disk = dict(_documents(self.folder))
        added = updated = unchanged = 0
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")  # one writer at a time; readers go on (WAL)
            stored = {
                row[0]: row[1:]
                for row in db.execute("SELECT path, mtime_ns, size, digest, doc_id FROM files")
            }
            for relative, stat in on_disk.items():
                known = stored.get(relative)
                if known is not None and known[:2] == (stat.st_mtime_ns, stat.st_size):
                    unchanged += 1
                    continue
                try:
                    data = (self.folder / relative).read_bytes()
                except OSError:
                    continue  # vanished or unreadable since the walk: the next refresh sees it
                digest = hashlib.sha256(data).hexdigest()
                if known is not None:
                    doc_id = known[3]
                    if known[2] == digest:
                        unchanged += 1  # touched, not changed
                    else:
                        title, body = _extract(relative, data)
                        db.execute(
                            "UPDATE docs SET title = ?, body = ? WHERE rowid = ?",
                            (title, body, doc_id),
                        )
                        updated += 1
                else:
                    title, body = _extract(relative, data)
                    cursor = db.execute(
                        "INSERT INTO docs(title, body) VALUES (?, ?)", (title, body)
                    )
                    doc_id = cursor.lastrowid
                    added += 1
                db.execute(
                    "INSERT OR REPLACE INTO files(path, mtime_ns, size, digest, doc_id) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (relative, stat.st_mtime_ns, stat.st_size, digest, doc_id),
                )
            gone = [(path, row[3]) for path, row in stored.items() if path not in on_disk]
            for path, doc_id in gone:
                db.execute("DELETE FROM docs WHERE rowid = ?", (doc_id,))
                db.execute("DELETE FROM files WHERE path = ?", (path,))
            db.execute("COMMIT")
        return IndexChanges(added, updated, len(gone), unchanged)

    def search(self, query: str, limit: int) -> list[DocumentHit]:
        """The documents best matching `query`, best first."""
        terms = [word.lower() for word in _WORD.findall(query)][:_MAX_QUERY_TERMS]
        if not terms:
            raise ToolError(
                f"the query {query!r} has no words to search for",
                retryable=False,
                suggestion="search with a few keywords, e.g. 'boiling point altitude'",
            )
        # Each word is quoted so nothing in the query is read as FTS5 syntax; OR lets a
        # document match some of the words, and BM25 ranks those matching more higher.
        match = " OR ".join(f'"{term}"' for term in dict.fromkeys(terms))
        with self._connect() as db:
            rows = db.execute(
                "SELECT files.path, docs.title, "
                "snippet(docs, 1, '**', '**', ' … ', 24), bm25(docs, ?, 1.0) AS rank "
                "FROM docs JOIN files ON files.doc_id = docs.rowid "
                "WHERE docs MATCH ? ORDER BY rank, files.path LIMIT ?",
                (_TITLE_WEIGHT, match, limit),
            ).fetchall()
        return [
            DocumentHit(title=title, path=path, snippet=snippet, score=round(-rank, 4))
            for path, title, snippet, rank in rows
        ]

    def count(self) -> int:
        """How many documents are indexed."""
        with self._connect() as db:
            return int(db.execute("SELECT count(*) FROM files").fetchone()[0])

    def document(self, path: str) -> tuple[str, str] | None:
        """The title and text of the indexed document at `path`, if there is one."""
        with self._connect() as db:
            row = db.execute(
                "SELECT docs.title, docs.body FROM files JOIN docs ON docs.rowid = files.doc_id "
                "WHERE files.path = ?",
                (path,),
            ).fetchone()
        return None if row is None else (row[0], row[1])

    def _connect(self) -> closing[sqlite3.Connection]:
        self.database.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are the explicit BEGIN/COMMIT in refresh.
        db = sqlite3.connect(self.database, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        if db.execute("PRAGMA user_version").fetchone()[0] != _SCHEMA_VERSION:
            # An index is a cache of the folder: an old layout is dropped, not migrated.
            db.executescript(
                f"""
                BEGIN IMMEDIATE;
                DROP TABLE IF EXISTS files;
                DROP TABLE IF EXISTS docs;
                CREATE TABLE files (
                    path TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL, size INTEGER NOT NULL,
                    digest TEXT NOT NULL, doc_id INTEGER NOT NULL
                );
                CREATE VIRTUAL TABLE docs USING fts5(
                    title, body, tokenize = 'porter unicode61 remove_diacritics 2'
                );
                PRAGMA user_version = {_SCHEMA_VERSION};
                COMMIT;
                """
            )
        return closing(db)


def document_index() -> DocumentIndex:
    """The index of the configured document folder, kept under the data folder."""
    settings = get_settings()
    folder = (settings.docs_dir or sample_corpus()).expanduser().resolve()
    # One index file per folder, so pointing QUORUM_DOCS_DIR elsewhere starts a fresh one.
    name = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    return DocumentIndex(folder, settings.data_dir / "docsearch" / f"{name}.sqlite3")


def _documents(folder: Path) -> Iterator[tuple[str, os.stat_result]]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root, name)
            if name.startswith(".") or path.suffix.lower() not in SUFFIXES:
                continue
            # Symlinks are skipped: a link could pull a file from anywhere into the index.
            stat = path.lstat()
            if path.is_symlink() or stat.st_size > MAX_FILE_BYTES:
                continue
            yield path.relative_to(folder).as_posix(), stat


def _extract(relative: str, data: bytes) -> tuple[str, str]:
    text = data.decode("utf-8", errors="replace")
    suffix = Path(relative).suffix.lower()
    if suffix in (".html", ".htm"):
        page_text = html_to_text(text)
        return (page_text.title or _first_line(page_text.text) or relative), page_text.text
    if suffix in (".md", ".markdown"):
        heading = next(
            (line[2:].strip() for line in text.splitlines() if line.startswith("# ")), ""
        )
        return (heading or _first_line(text) or relative), text
    return (_first_line(text) or relative), text


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")[:200]


@agent_tool(untrusted=True)
async def search_documents(
    query: Annotated[
        str, Field(max_length=500, description="Keywords or a question to search for.")
    ],
    max_results: Annotated[int, Field(ge=1, le=10, description="How many hits to return.")] = 5,
) -> DocumentSearch:
    """Search the local document collection and return the best-matching documents.

    Use for: facts, policies, notes and reference material kept in the documents folder;
    try it first, before the web. Each hit has a title, a path, a snippet and a BM25 score;
    read a whole document with read_document(path=...).
    Do not use for: the live web or recent news (use web_search), computing (use calculator),
    or files the team is working on (use list_files and read_file).
    Example: search_documents(query="boiling point of water at altitude", max_results=3)
    """
    index = document_index()

    def run() -> DocumentSearch:
        index.refresh()
        hits = index.search(query, max_results)
        return DocumentSearch(query=query, hits=hits, documents=index.count())

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
