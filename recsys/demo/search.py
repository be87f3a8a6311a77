"""Forgiving title search: accents, case, punctuation and a moved article ("Matrix, The") do not matter."""

from __future__ import annotations

import re
import unicodedata

from recsys.data.catalog import Catalog, Movie

_MOVED_ARTICLE = re.compile(r"^(?P<rest>.*?),\s*(?P<article>the|a|an)\b(?P<tail>\s*(\(\d{4}\))?)$")
_LEADING_ARTICLE = re.compile(r"^(the|a|an)\s+")
_YEAR = re.compile(r"\s*\(?\b\d{4}\b\)?\s*$")


def search_key(text: str) -> str:
    """`text` reduced for matching: no accents, lower case, a trailing ", The" moved to the front, then the
    leading article and all punctuation dropped, spaces collapsed ("Amélie" -> "amelie", "Matrix, The" -> "matrix")."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower().strip()
    moved = _MOVED_ARTICLE.match(text)
    if moved:
        text = f"{moved['article']} {moved['rest']}{moved['tail']}"
    text = re.sub(r"['’]", "", text)  # "Bug's" -> "bugs"
    text = re.sub(r"[^\w\s]", " ", text).replace("_", " ")
    text = re.sub(r"\s+", " ", text).strip()
    return _LEADING_ARTICLE.sub("", text)


class TitleSearch:
    """Finds catalog movies by a typed title; exact matches (with or without the year) win over partial ones."""

    def __init__(self, catalog: Catalog):
        self.keys = [(search_key(m.title), m) for m in catalog.movies]

    def find(self, text: str) -> list[Movie]:
        """Movies matching `text`: the exact matches when there are any, else every title containing it."""
        query = search_key(text)
        if not query:
            return []
        exact = [m for key, m in self.keys if key == query or _YEAR.sub("", key) == query]
        if exact:
            return exact
        return [m for key, m in self.keys if query in key]
