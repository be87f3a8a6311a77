"""The watch history: search, add, remove, presets and test users. The history handlers return a `HistoryView` (Add,
Enter and a picked match an `AddView`: the search box too), whose fields name the components `history_panel`
(`recsys.demo.panels`) wires them to; search returns the matches list."""

from __future__ import annotations

import os

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import gradio as gr
import pandas as pd

from recsys.data.catalog import Item
from recsys.demo.markdown import plain
from recsys.demo.search import TitleSearch
from recsys.demo.visit import Visit
from recsys.demo.words import words_for
from recsys.plots import short_label
from recsys.pipeline import Pipeline
from recsys.retrieval import MAX_INPUT_ITEMS

MAX_LINKED = 500  # movies a shared link or a saved history may carry (a link stays well under browsers' URL limits)
MAX_OFFERED = 10  # matches shown to pick from, while typing and after an Add that was not exactly one title

MAX_QUERY_SHOWN = 40  # characters of the typed text the matches list and notices name (longer text ends in "…")

MAX_TYPED = 200  # characters of typed text read (a title is at most ~160); the rest is ignored

MAX_USER_CHOICES = 1000  # test users offered (a page with Amazon's 22,332 in one list would load slowly)
PRESETS = {  # classroom histories named by taste, oldest viewing first
    "Sci-fi fan": ["The Terminator (1984)", "Alien (1979)", "Blade Runner (1982)",
                   "Star Wars: Episode IV - A New Hope (1977)", "Back to the Future (1985)", "The Matrix (1999)",
                   "Inception (2010)", "Interstellar (2014)"],
    "Animation & family": ["Beauty and the Beast (1991)", "Aladdin (1992)", "The Lion King (1994)", "Toy Story (1995)",
                           "Toy Story 2 (1999)", "Monsters, Inc. (2001)", "Shrek (2001)", "Finding Nemo (2003)"],
    "Crime classics": ["The Godfather (1972)", "The Godfather: Part II (1974)", "Goodfellas (1990)",
                       "Reservoir Dogs (1992)", "Pulp Fiction (1994)", "Heat (1995)", "The Usual Suspects (1995)",
                       "Fargo (1996)"],
    "Romantic comedies": ["When Harry Met Sally... (1989)", "Pretty Woman (1990)", "Sleepless in Seattle (1993)",
                          "Four Weddings and a Funeral (1994)", "Notting Hill (1999)", "Love Actually (2003)"],
    "Horror night": ["The Exorcist (1973)", "Halloween (1978)", "The Shining (1980)",
                     "The Silence of the Lambs (1991)", "Scream (1996)"],
    "World cinema": ["Seven Samurai (1954)", "Cinema Paradiso (1989)", "Life Is Beautiful (1997)",
                     "Crouching Tiger, Hidden Dragon (2000)", "Amelie (2001)", "Spirited Away (2001)",
                     "Pan's Labyrinth (2006)"],
}


def shown_query(text: str) -> str:
    """Typed `text` as the page quotes it: one line, single spaces, at most MAX_QUERY_SHOWN characters ("…" ends a
    longer one)."""
    return short_label(" ".join(text.split()), MAX_QUERY_SHOWN)


SPACE_ID_ENV = "SPACE_ID"  # "owner/name", set by Hugging Face on a Space


def page_address(request: gr.Request | None) -> str:
    """The address a shared link starts with. On a Space, the Space's page on the Hub (it passes its query on to the
    app it frames; a link to the app's own *.hf.space frame would open outside the Hub: no sign-in for a larger GPU
    quota, another browser storage). Elsewhere the page the browser shows (its Referer, query and fragment cut), or
    the address the request came to (an API client sends no Referer); "" without a request."""
    if space := os.environ.get(SPACE_ID_ENV):
        return f"https://huggingface.co/spaces/{space}"
    if request is None:
        return ""
    if referer := request.headers.get("referer"):
        return referer.split("?")[0].split("#")[0]
    host = request.headers.get("x-forwarded-host") or request.headers.get("host")
    scheme = request.headers.get("x-forwarded-proto") or "http"
    return f"{scheme}://{host}/" if host else ""


class HistoryView(NamedTuple):
    """The outputs of a history event."""

    visit: Visit  # the visitor's new state
    history: pd.DataFrame  # the history table
    removable: Any  # the "Movie to remove" dropdown's update
    notice: str  # what happened, in Markdown
    matches: Any  # the matches list's update
    saved: list[int | str]  # the history as source ids (MovieLens ids, ASINs), kept by the browser for reloads


class AddView(NamedTuple):
    """The outputs of an add event: the history's, and the search box (emptied once the movie was added)."""

    visit: Visit
    history: pd.DataFrame
    removable: Any
    notice: str
    matches: Any
    saved: list[int | str]
    movie: Any  # the search box's new text, or gr.skip()


class HistoryHandlers:
    """The history's event handlers over one shared, read-only pipeline."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self.catalog = pipeline.catalog
        self.search = TitleSearch(self.catalog)
        self.by_source_id = {m.source_id: m.item_id for m in self.catalog.items}  # MovieLens movieId or ASIN -> item id
        # the history table's columns: Amazon's catalogs have no genres, so no empty column
        self.columns = ["#", "Title", *(["Genres"] if any(m.genres for m in self.catalog.items) else [])]
        self.presets = {name: ids for name, titles in PRESETS.items()
                        if (ids := [m[0].item_id for t in titles if len(m := self.search.find(t)) == 1])}

    # --- links and the browser's copy ------------------------------------------------------------------------------

    def source_ids(self, visit: Visit) -> list[int | str]:
        """The visit's history as source ids, MovieLens movieIds or ASINs (what a link and the browser's copy carry:
        stable across catalog rebuilds, unlike the models' dense item ids)."""
        return [self.catalog[i].source_id for i in visit.history]

    def share(self, visit: Visit, request: gr.Request | None = None) -> str:
        """A link to this page that opens with the visit's history (`?history=` MovieLens movieIds, oldest
        first; `page_address`); a notice when the history is empty."""
        if not visit.history:
            return f"⚠️ The history is empty: add {words_for(self.catalog.dataset).items} first, then share."
        return f"{page_address(request)}?history={','.join(str(i) for i in self.source_ids(visit)[-MAX_LINKED:])}"

    def restore(self, saved, request: gr.Request | None = None) -> HistoryView:
        """The page's first history: the link's `?history=` when it has one, else the one this browser kept from
        its last visit, else empty. Unknown movieIds are dropped with a notice; nothing here raises."""
        linked = None if request is None else request.query_params.get("history")
        if linked is not None:
            ids, notice = self.from_source_ids(linked.split(","), "the link")
        elif saved:
            ids, notice = self.from_source_ids(saved if isinstance(saved, list) else [], "this browser's last visit")
        else:
            return self.history_view(Visit())
        return self.history_view(Visit(ids), notice)

    def item_of_source_id(self, value) -> int | None:
        """The dense item id of a source id as a link or a client writes it (an ASIN, a MovieLens id as a number or
        text), or None when the catalog has none."""
        if isinstance(value, bool):
            return None
        text = str(value).strip()
        if text in self.by_source_id:
            return self.by_source_id[text]
        try:
            number = float(text)
        except ValueError:
            return None
        return self.by_source_id.get(int(number)) if number.is_integer() else None

    def from_source_ids(self, values: list, source: str) -> tuple[list[int], str]:
        """(dense item ids, a notice) of source ids (MovieLens movieIds, ASINs) read from `source`: at most
        MAX_LINKED, each once (the latest viewing kept), unknown or malformed ones dropped and counted."""
        ids, dropped = [], 0
        for value in values[-MAX_LINKED:]:
            if (item_id := self.item_of_source_id(value)) is None:
                dropped += 1
            else:
                ids.append(item_id)
        ids = list(dict.fromkeys(reversed(ids)))[::-1]
        words = words_for(self.catalog.dataset)
        notice = f"Loaded {words.count(len(ids))} from {source}."
        if dropped:
            notice += f" ⚠️ {dropped} unknown {words.source_id}{'s were' if dropped != 1 else ' was'} left out."
        return ids, notice

    def warm_presets(self) -> None:
        """Compute every preset's results at the served weights (shared with whoever loads one and clicks Recommend:
        `Pipeline.shared`). A preset the model fails on is left to be computed on its click."""
        for ids in self.presets.values():
            self.pipeline.recommend(ids)

    def user_choices(self) -> list[tuple[str, str]]:
        """(label, user id) for the test-user dropdown; the id as text, as Gradio's API describes a dropdown's
        values (an int value made the API's own example, "17", fail Gradio's choice check)."""
        users = self.pipeline.test_users
        if users is None:
            return []
        words = words_for(self.catalog.dataset)
        return [(f"User {u} ({words.count(len(users[u].history))})", str(u)) for u in users.ids()[:MAX_USER_CHOICES]]

    def matches_update(self, movies: list[Item], text: str = ""):
        """The matches list showing the first MAX_OFFERED of `movies` to pick from (hidden when there are none).

        The label names the typed `text` the matches answer, so a person (and a browser test) can tell a list
        that follows the latest keystroke from one still answering an earlier prefix.
        """
        shown = movies[:MAX_OFFERED]
        more = f" ({len(shown)} of {len(movies)}: type more of the title)" if len(movies) > len(shown) else ""
        shown_text = shown_query(text)
        query = f" for “{shown_text}”" if shown_text else ""
        words = words_for(self.catalog.dataset)
        labels = [self.search.label(m, text) for m in shown]
        repeated = {label for label in labels if labels.count(label) > 1}  # same-named items: told apart by id
        by_id = text.strip().casefold()  # an ASIN typed: its item shows it
        choices = [(f"{label} ({words.source_id} {m.source_id})"
                    if label in repeated or (isinstance(m.source_id, str) and m.source_id.casefold() == by_id)
                    else label, m.source_id) for label, m in zip(labels, shown)]
        if text.strip() and not shown:  # said, not a silently hidden list
            return gr.update(choices=[], value=None, visible=True,
                             label=f"No {words.item} matches “{shown_text}”: type less of it, or other words")
        return gr.update(choices=choices, value=None, visible=bool(shown),
                         label=f"Matches{query}{more}: click the {words.item} you mean")

    def suggest(self, text: str):
        """The matches list for the text typed so far, by the forgiving search: exact titles first, then partial."""
        text = (text or "")[:MAX_TYPED]
        return self.matches_update(self.search.search(text).ranked, text)

    def history_view(self, visit: Visit, notice: str = "", offered: Sequence[Item] = (),
                     query: str = "") -> HistoryView:
        """The outputs after a history event (`HistoryView`: visit, table, remove list, notice, matches, the
        browser's copy).

        `offered` are the matches of the typed `query` to pick from (the matches list is hidden when there are none).
        """
        history = visit.history
        columns = {"#": range(1, len(history) + 1), "Title": self.catalog.titles(history)}
        if "Genres" in self.columns:
            columns["Genres"] = [", ".join(self.catalog[i].genres) for i in history]
        table = pd.DataFrame(columns)
        notes = [notice] if notice else []
        if len(history) > self.pipeline.retrieval.window:
            notes.append(f"LRURec reads only the latest {self.pipeline.retrieval.window} of these {len(history)} "
                         f"{words_for(self.catalog.dataset).items} "
                         "(the oldest are dropped from its input).")
        if visit.user is not None:
            notes.append(f"Test user {visit.user}: the held-out next {words_for(self.catalog.dataset).item} is "
                         "hidden until you click Recommend, then marked ★ in every result.")
        remove = gr.update(choices=[(f"{n}. {self.catalog[i].title}", self.catalog[i].source_id)
                                    for n, i in enumerate(history, start=1)], value=None)
        return HistoryView(visit, table, remove, "\n\n".join(notes), self.matches_update(list(offered), query),
                           self.source_ids(visit))

    def item_named(self, value, within: Sequence[int] | None = None) -> tuple[Item | None, str]:
        """(the catalog item `value` names, "") or (None, why not): `value` is a source id (a MovieLens id as a number,
        an ASIN) or a title naming exactly one item as the search reads it (case, accents and articles aside); digits
        sent as text are a title first ("300"), else a MovieLens id. A typo's "did you mean" offers only items
        `within` these ids, when given (the history's, to remove one)."""
        words = words_for(self.catalog.dataset)
        if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
            return None, f"⚠️ Name a {words.item}: a title or {words.a_source_id}."
        if isinstance(value, (int, float)):  # a number is an id: typed text is always a title ("300")
            if (item_id := self.item_of_source_id(value)) is None:
                return None, f"⚠️ Unknown {words.source_id} {plain(str(value))}: it is not in the catalog."
            return self.catalog[item_id], ""
        text = str(value)[:MAX_TYPED].strip()
        found = self.search.search(text)  # a title, or an ASIN
        if len(found.exact) == 1:
            return found.exact[0], ""
        if not found.exact and text.isdigit() and (item_id := self.item_of_source_id(text)) is not None:
            return self.catalog[item_id], ""  # digits that name no title: an id sent as text ("2571")
        named = f"'{plain(shown_query(text))}'"
        if found.exact:
            return None, (f"⚠️ {named} names {len(found.exact)} {words.items}: "
                          + "; ".join(f"{plain(m.title)} ({words.source_id} {m.source_id})" for m in found.exact[:5])
                          + f". Name one by its {words.source_id}.")
        return None, f"⚠️ Unknown title {named}: it is not in the catalog.{self.did_you_mean(text, within)}"

    def did_you_mean(self, text: str, within: Sequence[int] | None = None) -> str:
        """" Did you mean …?" with the titles closest to a typo (`TitleSearch.similar`; only items `within` these ids
        when given), or "" when none is close."""
        close = [m for m in self.search.similar(text) if within is None or m.item_id in within]
        return f" Did you mean {' or '.join(f'**{plain(m.title)}**' for m in close)}?" if close else ""

    def add(self, visit: Visit, text):
        """Add the item typed `text` names exactly (a title, with or without its year; never an id: "300" is the film
        300). Text that names several items, or only part of a title, adds nothing: its matches are offered to pick
        from instead; a typo gets the closest titles."""
        text = "" if text is None else str(text)[:MAX_TYPED].strip()
        words = words_for(self.catalog.dataset)
        if not text:
            return self.history_view(visit, "⚠️ Type a title in the search box first.")
        found = self.search.search(text)
        if len(found.exact) == 1:
            item = found.exact[0]
            return self.append(visit, item.item_id,
                               "" if text == item.title else f"Added '{plain(self.search.label(item, text))}'.")
        offered = found.ranked
        if not offered:
            return self.history_view(visit, f"⚠️ Unknown title '{plain(shown_query(text))}': it is not in the "
                                              f"catalog.{self.did_you_mean(text)} Type part of it and pick a "
                                              f"{words.item} from the matches.", self.search.similar(text), text)
        count = f"{words.count(len(offered))} match{'es' if len(offered) == 1 else ''}"
        return self.history_view(visit, f"'{plain(shown_query(text))}' is not exactly one title; {count}. "
                                          "Click the one you mean under **Matches**: nothing was added.", offered, text)

    def add_and_clear(self, visit: Visit, text):
        """`add`, plus the search box's update: emptied once the history took the item (so Enter cannot add it again
        by accident), left as typed when nothing was added."""
        return self.with_search_box(visit, self.add(visit, text))

    def pick(self, visit: Visit, item):
        """Add the item picked from the matches (its source id), or named by an API client (a title or source id);
        the search box is emptied once it was added."""
        found, problem = self.item_named(item)
        if found is None:
            return AddView._make((*self.history_view(visit, problem), gr.skip()))
        return self.with_search_box(visit, self.append(visit, found.item_id, f"Added '{plain(found.title)}'."))

    @staticmethod
    def with_search_box(visit: Visit, outputs: HistoryView) -> AddView:
        """`outputs` and the search box's update: emptied when the history changed, left as typed when not."""
        return AddView._make((*outputs, "" if outputs.visit.history != visit.history else gr.skip()))

    def append(self, visit: Visit, item_id: int, notice: str = ""):
        """History outputs with `item_id` appended; a repeat moves it to the latest viewing."""
        history = list(visit.history)
        words = words_for(self.catalog.dataset)
        if item_id in history:
            history.remove(item_id)
            notice = (f"'{plain(self.catalog.title(item_id))}' was already in the {words.history}: moved to the "
                      "latest place.")
        if len(history) >= MAX_INPUT_ITEMS:
            return self.history_view(visit, f"⚠️ The {words.history} is full ({len(history)} {words.items}): "
                                              "remove some first.")
        history.append(item_id)
        return self.history_view(replace(visit, history=history), notice)

    def remove(self, visit: Visit, item):
        """Remove one item of the history: the one picked in the list (its source id), or named by an API client (a
        title or source id)."""
        words = words_for(self.catalog.dataset)
        if not visit.history:
            return self.history_view(visit, f"⚠️ The {words.history} is empty: nothing to remove.")
        found, problem = self.item_named(item, within=visit.history)
        if found is None:
            return self.history_view(visit, problem)
        if found.item_id not in visit.history:
            return self.history_view(visit, f"⚠️ '{plain(found.title)}' is not in the {words.history}: pick a "
                                              f"{words.item} of the {words.history} to remove.")
        return self.history_view(replace(visit, history=[i for i in visit.history if i != found.item_id]),
                                 f"Removed '{plain(found.title)}'.")

    def clear(self, visit: Visit):
        """Empty the history and forget any test user."""
        return self.history_view(Visit(), "History cleared.")

    def load_test_user(self, visit: Visit, user):
        """Replace the history with a real test user's; their held-out next movie is kept for the results."""
        users = self.pipeline.test_users
        if users is None:
            return self.history_view(visit, "⚠️ No test users in this checkpoint; create them with: "
                                              "python -m recsys.data.test_users")
        try:
            test_user = users[int(user)]
        except (KeyError, TypeError, ValueError):
            return self.history_view(visit, f"⚠️ Unknown test user {user!r}: pick one from the list.")
        return self.history_view(Visit(list(test_user.history), test_user.target, test_user.user),
                                 f"Loaded test user {test_user.user}.")

    def load_preset(self, visit: Visit, name):
        """Replace the history with a preset named by taste."""
        if not self.presets:
            return self.history_view(visit, "⚠️ This data set has no presets: load a test user or find "
                                            f"{words_for(self.catalog.dataset).items} by title.")
        if name not in self.presets:
            return self.history_view(visit, f"⚠️ Unknown preset {name!r}: pick one from the list.")
        return self.history_view(Visit(list(self.presets[name])), f"Loaded preset '{name}'.")
