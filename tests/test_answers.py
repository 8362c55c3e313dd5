"""An answer says each paragraph once: whole (`said_once`) and as it streams (`SaidOnce`)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from quorum.answers import SaidOnce, said_once

PARAGRAPHS = ["Use SQLite.", "- small\n- local", "Use PostgreSQL when many write.", "use sqlite."]


def test_a_paragraph_repeated_word_for_word_is_dropped() -> None:
    text = "Use SQLite.\n\n- small\n- local\n\nTrade-offs:\n\n- small\n-  local\n\nUSE SQLITE."
    assert said_once(text) == "Use SQLite.\n\n- small\n- local\n\nTrade-offs:"


@given(
    st.lists(st.sampled_from(PARAGRAPHS), min_size=1, max_size=8),
    st.sampled_from(["\n\n", "\n\n\n", "\n \n"]),
    st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=40),
)
def test_streamed_text_shows_what_said_once_keeps(
    paragraphs: list[str], gap: str, cuts: list[int]
) -> None:
    """Cut anywhere, the stream's output is the whole text's `said_once`, and nothing of a
    copy is shown before it is known to be one."""
    text = gap.join(paragraphs) + "\n"
    filtered, shown, start = SaidOnce(), "", 0
    for size in cuts * (len(text) // sum(cuts) + 1):
        piece, start = text[start : start + size], start + size
        shown += filtered.feed(piece)
        if start >= len(text):
            break
    shown += filtered.close()

    assert " ".join(shown.split()) == " ".join(said_once(text).split())
    assert shown.strip().split("\n\n") == said_once(text).split("\n\n")
