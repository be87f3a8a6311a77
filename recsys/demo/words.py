"""The words the page uses for a data set's items: movies on MovieLens, products on Amazon Beauty, games on Games."""

from __future__ import annotations

from dataclasses import dataclass

from recsys.data.sources import DATASETS


@dataclass(frozen=True)
class Words:
    """How the page names an item, its history and what search may be given."""

    item: str  # "movie"
    items: str  # "movies"
    history: str  # "watch history"
    order: str  # what orders the history: "viewing order"
    search_example: str  # the search box's placeholder
    source_id: str  # what the raw id of an item is called (in links and the CSV)
    search_forgives: str  # what a typed search may get wrong, or give instead of a title

    def count(self, number: int) -> str:
        """`number` items in words: "1 game", "3 games"."""
        return f"{number} {self.item if number == 1 else self.items}"

    @property
    def a_source_id(self) -> str:
        """The raw id's name with its article: "a MovieLens id", "an ASIN"."""
        return f"{'an' if self.source_id[0] in 'AEIOU' else 'a'} {self.source_id}"


WORDS = {
    "movie": Words("movie", "movies", "watch history", "viewing order", "e.g. Amélie, Matrix, The, The Boat, 300",
                   "MovieLens id", "accents, case, a moved article ('Misérables, Les') and alternative titles ('The "
                                   "Boat') don't matter"),
    "product": Words("product", "products", "purchase history", "review order",
                     "e.g. shampoo, eyeshadow palette, nail polish", "ASIN",
                     "accents, case and punctuation don't matter, and an ASIN finds its product"),
    "game": Words("game", "games", "purchase history", "review order", "e.g. a game's title, a console, a controller",
                  "ASIN", "accents, case and punctuation don't matter, and an ASIN finds its game"),
}


def words_for(dataset: str) -> Words:
    """The words of `dataset` (a catalog's data set name); a data set the app does not know is a movie one."""
    spec = DATASETS.get(dataset)
    return WORDS[spec.domain if spec else "movie"]
