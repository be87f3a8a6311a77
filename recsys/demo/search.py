"""Forgiving title search: accents, case, punctuation, a moved article ("Matrix, The", "Misérables, Les") and the
alternative titles MovieLens gives ("The Boat" for Das Boot) do not matter; exact titles beat partial matches."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from recsys.data.catalog import Catalog, Item
from recsys.data.titles import search_key, split_year


@dataclass(frozen=True)
class SearchResult:
    """What a typed text finds: the movies it names exactly, and the others whose names contain it."""

    exact: list[Item]  # the display title or an alternative title, with or without the year
    partial: list[Item]  # names that start with the text first, then names that contain it; by title within each

    @property
    def best(self) -> list[Item]:
        """The exact matches when there are any, else the partial ones."""
        return self.exact or self.partial

    @property
    def ranked(self) -> list[Item]:
        """Every match, exact ones first: the order a list of matches shows them in."""
        return self.exact + self.partial


@dataclass(frozen=True)
class _Entry:
    movie: Item
    names: tuple[str, ...]  # search keys of the display title (with year) and of each alternative title
    bare_names: tuple[str, ...]  # the same without the year: what a number alone is matched against
    exact_keys: frozenset[str]  # each name with and without the year


def _entry(movie: Item) -> _Entry:
    bare_title, year = split_year(movie.title)
    title_keys = {search_key(movie.title), search_key(bare_title)}
    alternative_keys = {search_key(title) for title in movie.alternative_titles} - {""}
    exact = title_keys | alternative_keys | ({f"{key} {year}" for key in alternative_keys} if year else set())
    return _Entry(movie, (search_key(movie.title), *sorted(alternative_keys)),
                  (search_key(bare_title), *sorted(alternative_keys)), frozenset(exact - {""}))


SIMILAR_CUTOFF = 0.75  # difflib similarity of search keys a title needs to be offered as "did you mean"


class TitleSearch:
    """Finds catalog movies by a typed title or alternative title; exact matches win over partial ones."""

    def __init__(self, catalog: Catalog):
        self.entries = [_entry(movie) for movie in catalog.items]
        # an ASIN names its product whatever its case; a MovieLens id is never typed (digits are a title: "300")
        self.by_source_id = {item.source_id.casefold(): item for item in catalog.items
                             if isinstance(item.source_id, str)}
        self._by_name: dict[str, list[Item]] | None = None  # every name's key -> its items, built on the first typo

    def search(self, text: str) -> SearchResult:
        """The items `text` names exactly (by a title, or by its ASIN) and, apart from those, the items whose names
        contain it."""
        query = search_key(text)
        if not query:
            return SearchResult([], [])
        named = self.by_source_id.get(text.strip().casefold())
        exact = [named] if named else []
        exact += [e.movie for e in self.entries if query in e.exact_keys and e.movie is not named]
        exact_ids = {m.item_id for m in exact}
        numbers_only = query.replace(" ", "").isdigit()  # "10" is part of a title ("10 Things..."), not of a year
        partial = [e for e in self.entries if e.movie.item_id not in exact_ids
                   and any(query in name for name in (e.bare_names if numbers_only else e.names))]
        partial.sort(key=lambda e: (not any(name.startswith(query) for name in e.names), e.movie.title.casefold()))
        return SearchResult(exact, [e.movie for e in partial])

    @staticmethod
    def label(movie: Item, text: str) -> str:
        """The movie as a list of matches for `text` shows it: its title, and the alternative title that `text`
        found when the title itself does not contain it ("The Postman (1994), also known as Il Postino")."""
        query = search_key(text)
        bare_title, year = split_year(movie.title)
        if query and query not in search_key(bare_title):  # the title's year alone does not explain a match
            for alternative in movie.alternative_titles:
                if any(query in key for key in (search_key(alternative), search_key(f"{alternative} {year}"))):
                    return f"{movie.title}, also known as {alternative}"
        return movie.title

    def find(self, text: str) -> list[Item]:
        """Movies matching `text`: the exact matches when there are any, else every movie whose name contains it."""
        return self.search(text).best

    def similar(self, text: str, count: int = 3) -> list[Item]:
        """Up to `count` items whose names are closest to `text` (a typo: "Pulp Fictoin" -> Pulp Fiction), by difflib
        similarity of search keys (with and without the year) of at least SIMILAR_CUTOFF; closest first."""
        query = search_key(text)
        if not query:
            return []
        if self._by_name is None:
            by_name: dict[str, list[Item]] = {}
            for entry in self.entries:
                for name in {*entry.names, *entry.bare_names}:
                    by_name.setdefault(name, []).append(entry.movie)
            self._by_name = by_name
        found: list[Item] = []
        for name in difflib.get_close_matches(query, self._by_name, n=count, cutoff=SIMILAR_CUTOFF):
            found += [item for item in self._by_name[name] if item not in found]
        return found[:count]
