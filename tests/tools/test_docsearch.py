"""Document search on the sample corpus: the right file ranks first, and edits are re-indexed."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from quorum.settings import get_settings
from quorum.tools.docsearch import document_index, sample_corpus
from tests.tools.invoke import invoke

# A question a user might ask, and the sample document that answers it.
QUERIES = [
    ("boiling point of water on Everest", "water-boiling-point.md"),
    ("how often should I feed my sourdough starter", "sourdough-starter.md"),
    ("who deciphered Egyptian hieroglyphs", "rosetta-stone.html"),
    ("slow start congestion window", "tcp-congestion-control.md"),
    ("how long until my money doubles", "compound-interest.md"),
    ("first crack roasting temperature", "coffee-roasting.html"),
    ("hotel limit per night in London", "expense-policy.md"),
    ("why is high tide later each day", "tides.txt"),
    ("waggle dance direction of food", "honeybees.txt"),
    ("melatonin and blue light in the evening", "sleep-circadian.txt"),
    ("are passkeys safer than SMS codes", "password-hygiene.md"),
    ("which volcanoes are most dangerous", "volcano-types.md"),
    ("Gutenberg movable type ink", "printing-press.html"),
    ("how to taper before a marathon", "marathon-training.txt"),
    ("RuBisCO Calvin cycle", "photosynthesis.txt"),
    ("solar panel efficiency in hot weather", "solar-panels.md"),
]


@pytest.mark.parametrize(("query", "expected"), QUERIES, ids=[e for _, e in QUERIES])
async def test_the_right_document_ranks_first(query: str, expected: str) -> None:
    status, result = await invoke("search_documents", query=query, max_results=3)

    assert status == "success"
    assert result["documents"] == len(list(sample_corpus().iterdir()))
    top = result["hits"][0]
    assert top["path"] == expected
    assert top["score"] > 0 and top["title"] and "**" in top["snippet"]
    assert [hit["score"] for hit in result["hits"]] == sorted(
        (hit["score"] for hit in result["hits"]), reverse=True
    )


async def test_titles_come_from_headings_and_html() -> None:
    _, result = await invoke("search_documents", query="Rosetta Stone Champollion")

    assert result["hits"][0]["title"] == "The Rosetta Stone and the decipherment of hieroglyphs"


async def test_index_lives_under_the_data_folder() -> None:
    await invoke("search_documents", query="tides")

    assert list((get_settings().data_dir / "docsearch").glob("*.sqlite3"))


@pytest.fixture
def docs(tmp_path: Path, configure: Callable[..., None]) -> Path:
    folder = tmp_path / "docs"
    shutil.copytree(sample_corpus(), folder)
    configure(docs_dir=folder)
    return folder


async def test_changed_added_and_removed_files_are_reindexed(docs: Path) -> None:
    index = document_index()
    assert index.refresh().added == 16
    assert (await invoke("search_documents", query="zeppelin"))[1]["hits"] == []

    tides = docs / "tides.txt"
    tides.write_text(tides.read_text() + "\nA zeppelin once measured the tides from the air.\n")
    (docs / "airships.md").write_text("# Airships\n\nThe zeppelin was a rigid airship.\n")
    (docs / "volcano-types.md").unlink()

    _, result = await invoke("search_documents", query="zeppelin rigid airship")
    assert [hit["path"] for hit in result["hits"]] == ["airships.md", "tides.txt"]
    _, volcano = await invoke("search_documents", query="stratovolcano pyroclastic")
    assert volcano["hits"] == []
    assert result["documents"] == 16


async def test_same_size_edit_and_touch(docs: Path) -> None:
    index = document_index()
    index.refresh()
    honey = docs / "honeybees.txt"
    text = honey.read_text()
    assert "waggle" in text

    # Same length, new content, and a timestamp bumped past any file system granularity.
    honey.write_text(text.replace("waggle", "wiggle"))
    stat = honey.stat()
    os.utime(honey, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    assert index.refresh().updated == 1
    _, result = await invoke("search_documents", query="wiggle dance")
    assert result["hits"][0]["path"] == "honeybees.txt"

    # Touched but unchanged: hashed, found equal, not re-indexed.
    os.utime(honey, ns=(stat.st_atime_ns, stat.st_mtime_ns + 4_000_000_000))
    changes = index.refresh()
    assert (changes.updated, changes.unchanged) == (0, 16)


async def test_read_document_pages_the_indexed_text() -> None:
    status, first = await invoke("read_document", path="honeybees.txt", max_chars=500)
    _, rest = await invoke("read_document", path="honeybees.txt", offset=first["next_offset"])

    assert status == "success" and first["title"] == "Life in a honeybee colony"
    whole = (sample_corpus() / "honeybees.txt").read_text()
    assert first["text"] + rest["text"] == whole and rest["next_offset"] is None


@pytest.mark.parametrize("path", ["../settings.py", "/etc/passwd", "corpus/tides.txt", ""])
async def test_read_document_serves_only_indexed_paths(path: str) -> None:
    status, result = await invoke("read_document", path=path)

    assert status == "error" and "no document" in result["error"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('water" OR NEAR(', "success"),
        ("title:*", "success"),
        ("AND OR NOT", "success"),
        ("-", "error"),
        ("^* ()", "error"),
    ],
)
async def test_query_syntax_is_never_fts5_syntax(query: str, expected: str) -> None:
    status, result = await invoke("search_documents", query=query)

    assert status == expected
    if expected == "error":
        assert "no words" in result["error"] and result["retryable"] is False


async def test_missing_folder_is_a_clear_error(
    tmp_path: Path, configure: Callable[..., None]
) -> None:
    configure(docs_dir=tmp_path / "nowhere")

    status, result = await invoke("search_documents", query="tides")

    assert status == "error" and "does not exist" in result["error"]
    assert "QUORUM_DOCS_DIR" in result["suggestion"]


# A word problem's numbers are not in any document: a 1.5B agent searched for them, read
# strays that shared "and", "give" and "after" with its query, and answered that it could not
# answer. Nothing found now says so, and what the folder holds.
@pytest.mark.parametrize(
    "query",
    [
        "Mia's apple count after buying and giving away",
        "total cookies baked = cookies per friend * number of friends + leftover cookies",
        "math expression",
    ],
)
async def test_a_query_no_document_answers_gets_no_hits_but_what_the_folder_holds(
    query: str,
) -> None:
    status, result = await invoke("search_documents", query=query, max_results=1)

    assert status == "success"
    assert result["hits"] == [] and result["documents"] == 16
    note = result["note"]
    assert note.startswith("No document here is about ")
    assert " and " not in note.split(":")[0]  # stop words are not what it searched for
    assert "Keeping a sourdough starter healthy" in note and "Kinds of volcano" in note
    assert note.endswith("its answer is not in any document: compute it with the calculator.")


async def test_a_hit_names_the_keywords_it_holds_and_stop_words_are_not_keywords() -> None:
    _, result = await invoke("search_documents", query="boiling point of water on Everest")

    top = result["hits"][0]
    assert top["path"] == "water-boiling-point.md" and result["note"] is None
    assert top["matched"] == ["boiling", "point", "water", "everest"]
    # Later hits hold a common word only; they come along once one document answers.
    assert all(hit["matched"] == ["water"] for hit in result["hits"][1:])


async def test_rare_words_find_a_document_among_a_questions_filler() -> None:
    _, found = await invoke("search_documents", query="how much do I get back on a hotel in London")
    _, only_stop_words = await invoke("search_documents", query="what is it")

    assert found["hits"][0]["path"] == "expense-policy.md"
    assert {"hotel", "london"} <= set(found["hits"][0]["matched"])
    # A query of stop words alone is searched with them, not refused.
    assert {word for hit in only_stop_words["hits"] for word in hit["matched"]} == {
        "what",
        "is",
        "it",
    }
