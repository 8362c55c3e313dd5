"""Readable text from HTML, for tools that hand web pages and HTML documents to a model.

The `html-text` library (lxml underneath) does the work: it parses malformed markup without
raising, drops scripts, styles and comments, and lays block elements out on lines as a
browser would. Here: the page title is kept apart, and what a reader never sees (the head,
noscript fallbacks, templates, inline SVG and MathML) is dropped before the text is taken.
"""

from __future__ import annotations

from dataclasses import dataclass

import html_text

_INVISIBLE = "//head | //noscript | //template | //svg | //math"


@dataclass(frozen=True)
class HtmlText:
    """What a reader sees of an HTML page."""

    title: str
    text: str


def html_to_text(html: str) -> HtmlText:
    """The title and visible text of `html`."""
    tree = html_text.parse_html(html)
    title = " ".join((tree.findtext(".//title") or "").split())
    for hidden in tree.xpath(_INVISIBLE):
        hidden.drop_tree()  # keeps the text that follows the element
    return HtmlText(title=title, text=html_text.extract_text(tree).strip())
