"""The movie catalog: dense item id -> cleaned title, year and genres, saved as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from recsys.data.errors import one_line

CATALOG_FILE = "catalog.json"


@dataclass(frozen=True)
class Movie:
    """One catalog entry; `item_id` is the dense id (1..num_items) the models use."""

    item_id: int
    title: str  # cleaned title with year, e.g. "The Matrix (1999)"
    year: int | None
    genres: tuple[str, ...]
    source_id: int  # the raw MovieLens movieId
    alternative_titles: tuple[str, ...] = ()  # other names in the raw MovieLens title, for search


class Catalog:
    """Read-only lookup of movies by dense item id (1..len(catalog))."""

    def __init__(self, movies: list[Movie], dataset: str):
        ids = [m.item_id for m in movies]
        if ids != list(range(1, len(movies) + 1)):
            raise ValueError("catalog item ids must be 1..N in order")
        self.movies = movies
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.movies)

    def __getitem__(self, item_id: int) -> Movie:
        if not 1 <= item_id <= len(self.movies):
            raise KeyError(f"unknown item id {item_id} (catalog has 1..{len(self.movies)})")
        return self.movies[item_id - 1]

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, int) and 1 <= item_id <= len(self.movies)

    def title(self, item_id: int) -> str:
        """Cleaned title with year of `item_id`."""
        return self[item_id].title

    def titles(self, item_ids) -> list[str]:
        """Cleaned titles of several item ids, in order."""
        return [self[int(i)].title for i in item_ids]

    def save(self, folder: str | Path) -> Path:
        """Write `catalog.json` into `folder` and return its path."""
        path = Path(folder) / CATALOG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [[m.item_id, m.title, m.year, list(m.genres), m.source_id, list(m.alternative_titles)]
                for m in self.movies]
        payload = {"dataset": self.dataset, "columns": ["item_id", "title", "year", "genres", "source_id",
                                                        "alternative_titles"], "movies": rows}
        path.write_text(json.dumps(payload, ensure_ascii=False, separators=(",", ":")))
        return path

    @classmethod
    def load(cls, folder_or_file: str | Path) -> Catalog:
        """Load a catalog saved by `save` (a folder holding catalog.json, or the file itself)."""
        path = Path(folder_or_file)
        if path.is_dir():
            path = path / CATALOG_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path}: catalog not found")
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            movies = [Movie(int(i), str(t), None if y is None else int(y), tuple(g), int(s),
                            tuple(str(a) for a in (alt[0] if alt else ())))
                      for i, t, y, g, s, *alt in payload["movies"]]
            return cls(movies, payload["dataset"])
        except (ValueError, KeyError, TypeError) as error:  # ValueError covers bad JSON and bad UTF-8
            raise ValueError(f"{path}: corrupt catalog ({one_line(error)})") from error
