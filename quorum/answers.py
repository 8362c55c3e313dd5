"""What makes an agent's prose an answer: each paragraph said once, whole or as it streams.

A small model asked to say each thing once still copies a paragraph or a list under a
second heading now and then (the default model did, in one main job of several); a reader
gains nothing from the copy. The patterns' answer writers (`quorum.graphs.ANSWER_WRITERS`)
give `said_once(text)` as the answer, and the CLI, which prints that answer as it is
written, filters the stream with `SaidOnce`, so what a person watched arrive is the answer
the thread keeps.
"""

from __future__ import annotations

import re

PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def _key(paragraph: str) -> str:
    """What two paragraphs share when one repeats the other: words, case aside."""
    return " ".join(paragraph.split()).lower()


def said_once(text: str) -> str:
    """`text` without paragraphs that repeat an earlier one word for word."""
    seen: set[str] = set()
    kept = []
    for paragraph in PARAGRAPH_BREAK.split(text.strip()):
        key = _key(paragraph)
        if key and key in seen:
            continue
        seen.add(key)
        kept.append(paragraph)
    return "\n\n".join(kept)


class SaidOnce:
    """`said_once` over text that arrives a few tokens at a time.

    Text is let through as soon as it cannot be part of a repeat: a paragraph is held only
    while what has come of it is the start of an earlier one, and dropped if it ends as a
    copy. What `feed` and `close` return, joined, is `said_once` of everything fed, up to
    whitespace at the ends of paragraphs.
    """

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._paragraph = ""
        """The current paragraph as it has come so far."""
        self._out = ""
        """What has been let through of it."""
        self._any = False
        """A paragraph has been let through: the next one is set off by a blank line."""

    def feed(self, text: str) -> str:
        """Take the next piece of the text; return what may be shown of it now."""
        self._paragraph += text
        shown = ""
        while match := PARAGRAPH_BREAK.search(self._paragraph):
            shown += self._end(self._paragraph[: match.start()])
            self._paragraph = self._paragraph[match.end() :]
        key = _key(self._paragraph)
        if key and not any(earlier.startswith(key) for earlier in self._seen):
            # Whitespace at its end waits for what follows: it may end the paragraph.
            shown += self._show(self._paragraph.strip())
        return shown

    def close(self) -> str:
        """The text has ended: return the rest of what may be shown."""
        shown = self._end(self._paragraph)
        self._paragraph = ""
        return shown

    def _end(self, paragraph: str) -> str:
        key = _key(paragraph)
        if not key or (key in self._seen and not self._out):
            shown = ""  # nothing, or a copy of an earlier paragraph (held whole)
        else:
            self._seen.add(key)
            shown = self._show(paragraph.strip())
        self._out = ""
        return shown

    def _show(self, target: str) -> str:
        """Let the paragraph through up to `target` (what may be shown of it by now)."""
        start = "\n\n" if self._any and not self._out and target else ""
        shown = start + target[len(self._out) :]
        if len(target) > len(self._out):
            self._out = target
            self._any = True
        return shown
