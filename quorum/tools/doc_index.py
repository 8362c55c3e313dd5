"""The index behind document search: an SQLite FTS5 table of one folder's text, kept fresh.

`DocumentIndex.refresh` brings the table up to date with the folder (a file whose
modification time and size are unchanged is skipped, a changed one is hashed and re-indexed
only if its content differs, and files that disappeared are dropped); `search` ranks with
BM25, title matches weighing more than body matches, and names the query's keywords each hit
holds. A query's stop words are left out, and when no document among the best matches holds
a third of what the query asks (its keywords weighed by how rare each is in the folder), the
search finds nothing but says what the documents are about.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from quorum.tools.contract import ToolError
from quorum.tools.html_text import html_to_text

SUFFIXES = frozenset({".txt", ".md", ".markdown", ".html", ".htm"})
"""Which files are indexed; others in the folder are ignored."""

MAX_FILE_BYTES = 5_000_000
"""Larger files are left out of the index rather than slowing every search."""

_SCHEMA_VERSION = 1
_MAX_QUERY_TERMS = 32
_TITLE_WEIGHT = 10.0
_CANDIDATES = 10
"""The best matches checked for the query's keywords, however few hits were asked for."""
_TITLES_SHOWN = 20
"""Titles a search that found nothing lists, so an agent sees what the folder is about."""
_WORD = re.compile(r"\w+")

# Words that say nothing about a topic. Matched with OR, they made every document a hit: a
# small model's "Mia's apple count after buying and giving away" ranked a sourdough page
# first on "and", "give" and "after" (the porter stemmer folds "giving" into "give").
_STOPWORDS = frozenset(
    """a about after all also am an and any are as at be been before being but by can could
    did do does doing down during each few for from further had has have having he her here
    hers him his how i if in into is it its just may me might more most must my no nor not
    of off on once only or other our out over own same she should so some such than that the
    their them then there these they this those through to too under until up very was we
    were what when where which while who whom why will with would you your""".split()
)


class DocumentHit(BaseModel):
    """One document that matches a search."""

    title: str = Field(description="The document's title.")
    path: str = Field(description="Its path inside the document folder; give it to read_document.")
    snippet: str = Field(description="The best-matching passage, matched words in **bold**.")
    score: float = Field(description="BM25 relevance; higher is better.")
    matched: list[str] = Field(description="The query's keywords this document contains.")


@dataclass(frozen=True)
class Found:
    """What one search found: the hits to show, and the note when none matched well."""

    hits: list[DocumentHit]
    note: str | None = None


@dataclass(frozen=True)
class IndexChanges:
    """What one refresh of the index did."""

    added: int
    updated: int
    removed: int
    unchanged: int


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

    def search(self, query: str, limit: int) -> Found:
        """The documents best matching `query`, best first.

        None when no document among the best matches holds a third of what the query asks:
        then the note says what the folder holds instead, so an agent stops searching it.
        """
        words = [word.lower() for word in _WORD.findall(query)]
        if not words:
            raise ToolError(
                f"the query {query!r} has no words to search for",
                retryable=False,
                suggestion="search with a few keywords, e.g. 'boiling point altitude'",
            )
        keywords = list(dict.fromkeys(w for w in words if w not in _STOPWORDS and len(w) > 1))
        # A query of stop words alone ("who is the one") still searches with them.
        keywords = (keywords or list(dict.fromkeys(words)))[:_MAX_QUERY_TERMS]
        # Each word is quoted so nothing in the query is read as FTS5 syntax; OR lets a
        # document match some of the words, and BM25 ranks those matching more higher.
        match = " OR ".join(f'"{term}"' for term in keywords)
        with self._connect() as db:
            rows = db.execute(
                "SELECT docs.rowid, files.path, docs.title, "
                "snippet(docs, 1, '**', '**', ' … ', 24), bm25(docs, ?, 1.0) AS rank "
                "FROM docs JOIN files ON files.doc_id = docs.rowid "
                "WHERE docs MATCH ? ORDER BY rank, files.path LIMIT ?",
                (_TITLE_WEIGHT, match, max(limit, _CANDIDATES)),
            ).fetchall()
            matched = _matched(db, [row[0] for row in rows], keywords)
            weight = _rarity(db, keywords)
            covered = {rowid: sum(weight[t] for t in found) for rowid, found in matched.items()}
            # A match holds a third of what the query asks, each keyword weighed by how rare
            # it is here: "hotel" and "london" find the expense policy for "how much do I get
            # back on a hotel in London" (0.44); "giving" and "away" are strays for "Mia's
            # apple count after buying and giving away" (0.28).
            if covered and max(covered.values()) >= sum(weight.values()) / 3:
                return Found(
                    [
                        DocumentHit(
                            title=title,
                            path=path,
                            snippet=snippet,
                            score=round(-rank, 4),
                            matched=matched[rowid],
                        )
                        for rowid, path, title, snippet, rank in rows[:limit]
                    ]
                )
            closest = max(matched.values(), key=len, default=[])
            return Found([], _nothing_about(keywords, closest, self._titles(db)))

    def _titles(self, db: sqlite3.Connection) -> list[str]:
        return [
            row[0]
            for row in db.execute(
                "SELECT docs.title FROM files JOIN docs ON docs.rowid = files.doc_id "
                "ORDER BY files.path"
            )
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


def _matched(
    db: sqlite3.Connection, rowids: list[int], keywords: list[str]
) -> dict[int, list[str]]:
    """Which of `keywords` each of the documents `rowids` contains (as FTS5 matches them)."""
    found: dict[int, list[str]] = {rowid: [] for rowid in rowids}
    if not rowids:
        return found
    among = ", ".join("?" * len(rowids))
    for term in keywords:
        for (rowid,) in db.execute(
            f"SELECT rowid FROM docs WHERE docs MATCH ? AND rowid IN ({among})",
            (f'"{term}"', *rowids),
        ):
            found[rowid].append(term)
    return found


def _rarity(db: sqlite3.Connection, keywords: list[str]) -> dict[str, float]:
    """Each keyword's inverse document frequency in the folder.

    A keyword in every document weighs nearly nothing; one in no document weighs what one
    in a single document does (the query asks for it; nothing says how much).
    """
    (documents,) = db.execute("SELECT count(*) FROM docs").fetchone()
    weight = {}
    for term in keywords:
        (holding,) = db.execute(
            "SELECT count(*) FROM docs WHERE docs MATCH ?", (f'"{term}"',)
        ).fetchone()
        weight[term] = math.log((documents + 1) / (max(holding, 1) + 0.5))
    return weight


def _nothing_about(keywords: list[str], closest: list[str], titles: list[str]) -> str:
    closest_has = (
        f"the closest holds only {', '.join(closest)}" if closest else "none holds any of them"
    )
    shown = "; ".join(titles[:_TITLES_SHOWN])
    more = f"; and {len(titles) - _TITLES_SHOWN} more" if len(titles) > _TITLES_SHOWN else ""
    return (
        f"No document here is about {', '.join(keywords)}: {closest_has}. The {len(titles)} "
        f"documents are about: {shown}{more}. Search again with other keywords, or answer "
        "without the documents. If the task gives you the numbers, its answer is not in any "
        "document: compute it with the calculator."
    )


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")[:200]
