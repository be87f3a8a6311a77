"""MovieLens: readers of the raw files into plain rows (errors name the file and line), and the preprocessed dataset."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from recsys.data.catalog import Catalog, Item
from recsys.data.errors import DataFileError
from recsys.data.preprocess import Rating, SequenceDataset, sequences_from_ratings
from recsys.data.titles import alternative_titles, clean_title, split_year

ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western")


@dataclass(frozen=True)
class RawMovie:
    """One raw movie row (title as in the file)."""

    item: int
    title: str
    genres: tuple[str, ...]


def _open(path: Path, encoding: str):
    if not path.is_file():
        raise DataFileError(path, "file not found")
    return path.open(newline="", encoding=encoding)


def _csv_rows(path: Path, header: list[str]):
    """Yield (line number, row) of a CSV file whose header must start with `header`."""
    with _open(path, "utf-8") as handle:
        reader = csv.reader(handle)
        first = next(reader, None)
        if first is None or [c.strip() for c in first[: len(header)]] != header:
            raise DataFileError(path, f"expected columns {header}, found {first}", 1)
        for row in reader:
            if row:
                yield reader.line_num, row


def _ints(path: Path, line: int, values) -> list[int]:
    try:
        return [int(float(v)) if "." in v else int(v) for v in values]
    except ValueError as error:
        raise DataFileError(path, f"expected numbers, found {list(values)}", line) from error


def read_ml_latest_small(folder: Path) -> tuple[list[Rating], list[RawMovie]]:
    """Read ratings.csv and movies.csv of ml-latest-small."""
    ratings_path, movies_path = folder / "ratings.csv", folder / "movies.csv"
    ratings = []
    for line, row in _csv_rows(ratings_path, ["userId", "movieId", "rating", "timestamp"]):
        if len(row) != 4:
            raise DataFileError(ratings_path, f"expected 4 fields, found {len(row)}", line)
        user, item, timestamp = _ints(ratings_path, line, (row[0], row[1], row[3]))
        ratings.append(Rating(user, item, timestamp))
    movies = []
    for line, row in _csv_rows(movies_path, ["movieId", "title", "genres"]):
        if len(row) != 3:
            raise DataFileError(movies_path, f"expected 3 fields, found {len(row)}", line)
        (item,) = _ints(movies_path, line, (row[0],))
        genres = tuple(g for g in row[2].split("|") if g and g != "(no genres listed)")
        movies.append(RawMovie(item, row[1].strip(), genres))
    return ratings, movies


def read_ml_100k(folder: Path) -> tuple[list[Rating], list[RawMovie]]:
    """Read u.data (tab-separated) and u.item (pipe-separated, latin-1) of classic ml-100k."""
    data_path, item_path = folder / "u.data", folder / "u.item"
    ratings = []
    with _open(data_path, "utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            fields = text.split("\t")
            if len(fields) != 4:
                raise DataFileError(data_path, f"expected 4 tab-separated fields, found {len(fields)}", line)
            user, item, _, timestamp = _ints(data_path, line, [f.strip() for f in fields])
            ratings.append(Rating(user, item, timestamp))
    movies = []
    with _open(item_path, "latin-1") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            fields = text.rstrip("\n").split("|")
            if len(fields) != 5 + len(ML100K_GENRES):
                raise DataFileError(item_path, f"expected {5 + len(ML100K_GENRES)} '|'-separated fields, "
                                    f"found {len(fields)}", line)
            (item,) = _ints(item_path, line, fields[:1])
            flags = fields[5:]
            genres = tuple(g for g, f in zip(ML100K_GENRES, flags) if f.strip() == "1" and g != "unknown")
            movies.append(RawMovie(item, fields[1].strip(), genres))
    return ratings, movies


READERS = {"ml-latest-small": read_ml_latest_small, "ml-100k": read_ml_100k}


def build_dataset(name: str, ratings: list[Rating], movies: list[RawMovie], tie_order: str = "item") -> SequenceDataset:
    """Apply the paper's preprocessing to raw MovieLens rows and return the dataset with its catalog.

    Each user's items are sorted by timestamp; `tie_order` (one of `TIE_ORDERS`) orders equal timestamps.
    Catalog titles are cleaned as the paper does (`recsys.data.titles.clean_title`).
    """
    titled = {m.item: m for m in movies if m.title}
    sequences, item_map, _ = sequences_from_ratings(ratings, set(titled), tie_order)
    catalog_rows = []
    for raw_id, item_id in item_map.items():
        raw = titled[raw_id]
        catalog_rows.append(Item(item_id, clean_title(raw.title), split_year(raw.title)[1], raw.genres, raw_id,
                                 tuple(alternative_titles(raw.title))))
    return SequenceDataset(name, sequences, Catalog(catalog_rows, name))
