"""Readable text from HTML, for tools that hand web pages and HTML documents to a model.

Built on the standard library's `html.parser`: scripts, styles and other invisible parts are
dropped, block elements become line breaks, and the page title is kept apart. It never raises
on malformed markup, since pages on the web and files in a folder are often malformed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

_INVISIBLE = frozenset(
    {"script", "style", "noscript", "template", "svg", "math", "iframe", "object", "head"}
)
_BLOCK = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt",
        "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
        "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "td",
        "th", "tr", "ul",
    }
)  # fmt: skip
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")
_TAGS = re.compile(r"<[^>]*>")


@dataclass(frozen=True)
class HtmlText:
    """What a reader sees of an HTML page."""

    title: str
    text: str


def html_to_text(html: str) -> HtmlText:
    """The title and visible text of `html`."""
    parser = _TextParser()
    try:
        parser.feed(html)
        parser.close()
    except Exception:
        # html.parser still raises on a few malformed declarations; a crude strip of the
        # tags is better than no text at all.
        return HtmlText(title="", text=_tidy(_TAGS.sub(" ", html)))
    return HtmlText(title=_tidy(" ".join(parser.title)), text=_tidy("".join(parser.text)))


def _tidy(text: str) -> str:
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title: list[str] = []
        self.text: list[str] = []
        self._hidden: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in _INVISIBLE:
            self._hidden.append(tag)
        if tag in _BLOCK:
            self.text.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK:
            self.text.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self._hidden:
            # Close up to the matching open tag: unclosed children must not hide the rest.
            while self._hidden and self._hidden.pop() != tag:
                pass
        if tag in _BLOCK:
            self.text.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._hidden:
            self.text.append(data)
