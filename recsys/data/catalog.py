"""The catalog: dense item id -> display title (with year and genres for movies), saved as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from recsys.data.errors import one_line

CATALOG_FILE = "catalog.json"


@dataclass(frozen=True)
class Item:
    """One catalog entry (a movie or a product); `item_id` is the dense id (1..num_items) the models use."""

    item_id: int
    title: str  # display title: "The Matrix (1999)"; a product's name with HTML entities unescaped
    year: int | None  # movies only
    genres: tuple[str, ...]  # movies only
    source_id: int | str  # the raw id: MovieLens movieId, or a product's ASIN
    alternative_titles: tuple[str, ...] = ()  # other names in the raw MovieLens title, for search


class Catalog:
    """Read-only lookup of items by dense item id (1..len(catalog))."""

    def __init__(self, items: list[Item], dataset: str):
        ids = [m.item_id for m in items]
        if ids != list(range(1, len(items) + 1)):
            raise ValueError("catalog item ids must be 1..N in order")
        self.items = items
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, item_id: int) -> Item:
        if not 1 <= item_id <= len(self.items):
            raise KeyError(f"unknown item id {item_id} (catalog has 1..{len(self.items)})")
        return self.items[item_id - 1]

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, int) and 1 <= item_id <= len(self.items)

    def title(self, item_id: int) -> str:
        """Display title of `item_id`."""
        return self[item_id].title

    def titles(self, item_ids) -> list[str]:
        """Display titles of several item ids, in order."""
        return [self[int(i)].title for i in item_ids]

    def save(self, folder: str | Path) -> Path:
        """Write `catalog.json` into `folder` and return its path."""
        path = Path(folder) / CATALOG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [[m.item_id, m.title, m.year, list(m.genres), m.source_id, list(m.alternative_titles)]
                for m in self.items]
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
            items = [Item(int(i), str(t), None if y is None else int(y), tuple(g),
                          s if isinstance(s, str) else int(s), tuple(str(a) for a in (alt[0] if alt else ())))
                     for i, t, y, g, s, *alt in payload["movies"]]
            return cls(items, payload["dataset"])
        except (ValueError, KeyError, TypeError) as error:  # ValueError covers bad JSON and bad UTF-8
            raise ValueError(f"{path}: corrupt catalog ({one_line(error)})") from error
