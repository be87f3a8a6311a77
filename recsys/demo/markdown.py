"""Text the demo renders as Markdown: titles and typed text shown literally, the held-out movie marked."""

from __future__ import annotations

import re

HELD_OUT = "★ held out"

# What makes markup inside a line of Markdown: emphasis, code, links and images (their brackets), HTML tags,
# strike-through, tables, headings. Parentheses, dots and dashes only do so after these or at a line's start.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>~|#])")

_AUTOLINK = re.compile(r"(?i)(https?|ftp|www)([:.])")  # where GitHub-style Markdown starts a bare link


def plain(text: str) -> str:
    """`text` (a title, or what someone typed) shown literally in Markdown: every character Markdown or HTML would
    read as markup is backslash-escaped ("M*A*S*H" stays M*A*S*H, "[x](http://...)" is no link)."""
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.split()))  # one line: no list or heading can start
    return _AUTOLINK.sub(r"\1\\\2", text)  # "http\://", "www\.": shown as typed, never made a link


def marked(text: str, item_id: int, target: int | None) -> str:
    """`text` with the held-out marker when `item_id` is the session's held-out movie."""
    return f"{text}  {HELD_OUT}" if item_id == target else text
