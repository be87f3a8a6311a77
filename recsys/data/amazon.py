"""Amazon Beauty and Video Games as LlamaRec uses them: the preprocessed CSV form, and the raw files it comes from.

The preprocessed form (as in `../shared/data/amazon-*`) is two CSV files: `items.csv` (item_id, asin, title) and
`sequences.csv` (user_id, reviewer_id, train_items, val_item, test_item). `read_preprocessed` reads it into a
`SequenceDataset`. A user with internet downloads the raw files instead (`python -m recsys.data.download beauty`):
the 2014 "ratings only" CSV (user, item, rating, timestamp; no header) and the metadata, one record a line (Beauty's
2014 file writes each as a Python literal, read with `ast.literal_eval`, never `eval`; the paper's Games metadata is
the 2018 release's JSON lines). `preprocess_raw` applies the paper's rules to them (see `recsys.data.preprocess`) and
`write_preprocessed` writes the CSV form, so both routes end in the same reader.

Titles are stored as the metadata gives them (stripped); the catalog unescapes HTML entities ("&amp;" -> "&"), so
people and the LLM read the same text.
"""

from __future__ import annotations

import ast
import csv
import gzip
import html
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from recsys.data.catalog import Catalog, Item
from recsys.data.errors import DataFileError
from recsys.data.preprocess import Rating, SequenceDataset, sequences_from_ratings

ITEMS_FILE = "items.csv"
SEQUENCES_FILE = "sequences.csv"
ITEM_COLUMNS = ["item_id", "asin", "title"]
SEQUENCE_COLUMNS = ["user_id", "reviewer_id", "train_items", "val_item", "test_item"]


@dataclass(frozen=True)
class AmazonSource:
    """Where one Amazon category's raw files are published, and how its metadata lines are written."""

    ratings_url: str
    metadata_url: str
    metadata_format: str  # "python" (2014: one Python literal a line) or "json" (2018: JSON lines)

    @property
    def ratings_file(self) -> str:
        return self.ratings_url.rsplit("/", 1)[1]

    @property
    def metadata_file(self) -> str:
        return self.metadata_url.rsplit("/", 1)[1]


_SNAP_2014 = "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles"
SOURCES = {
    "beauty": AmazonSource(f"{_SNAP_2014}/ratings_Beauty.csv", f"{_SNAP_2014}/meta_Beauty.json.gz", "python"),
    # the paper's code takes Games titles from the 2018 metadata: the 2014 file lacks many
    "games": AmazonSource(f"{_SNAP_2014}/ratings_Video_Games.csv",
                          "https://jmcauley.ucsd.edu/data/amazon_v2/metaFiles2/meta_Video_Games.json.gz", "json"),
}


def _csv_rows(path: Path, header: list[str]) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, row) of a UTF-8 CSV file whose header must be `header`."""
    if not path.is_file():
        raise DataFileError(path, "file not found")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        first = next(reader, None)
        if first is None or [c.strip() for c in first] != header:
            raise DataFileError(path, f"expected columns {header}, found {first}", 1)
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise DataFileError(path, f"expected {len(header)} fields, found {len(row)}", reader.line_num)
            yield reader.line_num, row


def _int(path: Path, line: int, text: str) -> int:
    try:
        return int(text)
    except ValueError as error:
        raise DataFileError(path, f"expected an item id, found {text!r}", line) from error


def read_preprocessed(name: str, folder: str | Path) -> SequenceDataset:
    """Read `items.csv` and `sequences.csv` of an Amazon data set in `folder` into a `SequenceDataset`.

    Each user's sequence is train_items + [val_item, test_item], so the dataset's leave-one-out splits give back
    the files' splits. Raises DataFileError (naming the file and line) for a malformed file, an item id outside
    1..len(items) or item ids that are not 1..N in order.
    """
    folder = Path(folder)
    items_path, sequences_path = folder / ITEMS_FILE, folder / SEQUENCES_FILE
    items: list[Item] = []
    for line, (item_id, asin, title) in _csv_rows(items_path, ITEM_COLUMNS):
        if _int(items_path, line, item_id) != len(items) + 1:
            raise DataFileError(items_path, f"item ids must be 1..N in order, found {item_id}", line)
        items.append(Item(len(items) + 1, display_title(title), None, (), asin.strip()))
    sequences: dict[int, list[int]] = {}
    for line, (user_id, _, train_items, val_item, test_item) in _csv_rows(sequences_path, SEQUENCE_COLUMNS):
        sequence = [_int(sequences_path, line, t) for t in (*train_items.split(), val_item, test_item)]
        if not all(1 <= item <= len(items) for item in sequence):
            raise DataFileError(sequences_path, f"item id outside 1..{len(items)}", line)
        sequences[_int(sequences_path, line, user_id)] = sequence
    return SequenceDataset(name, sequences, Catalog(items, name))


def display_title(raw_title: str) -> str:
    """A product title as people and the prompt read it: HTML entities unescaped, whitespace collapsed."""
    return " ".join(html.unescape(raw_title).split())


def read_raw_ratings(path: str | Path) -> list[Rating]:
    """Read a 2014 "ratings only" CSV (reviewer id, ASIN, rating, Unix time; no header) into ratings."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(path, "file not found")
    ratings = []
    with path.open(newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.reader(handle), start=1):
            if not row:
                continue
            if len(row) != 4:
                raise DataFileError(path, f"expected 4 fields (user, item, rating, timestamp), found {len(row)}", line)
            try:
                timestamp = int(float(row[3]))
            except ValueError as error:
                raise DataFileError(path, f"expected a Unix time, found {row[3]!r}", line) from error
            ratings.append(Rating(row[0], row[1], timestamp))
    return ratings


def read_raw_titles(path: str | Path, metadata_format: str) -> dict[str, str]:
    """ASIN -> title (stripped, as the paper keeps it) of a metadata file (gzip or plain), one record a line.

    `metadata_format` is "python" (2014: Python literals, parsed with `ast.literal_eval`) or "json" (2018).
    Records without a title, or with an empty one, are left out.
    """
    if metadata_format not in ("python", "json"):
        raise ValueError(f"metadata_format must be 'python' or 'json', got {metadata_format!r}")
    path = Path(path)
    if not path.is_file():
        raise DataFileError(path, "file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    titles = {}
    with opener(path, "rt", encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                record = ast.literal_eval(text) if metadata_format == "python" else json.loads(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError) as error:
                raise DataFileError(path, f"not a {metadata_format} record ({type(error).__name__})", line) from error
            if not isinstance(record, dict) or "asin" not in record:
                raise DataFileError(path, "expected a record with an 'asin'", line)
            title = record.get("title")
            if isinstance(title, str) and title.strip():
                titles[str(record["asin"])] = title.strip()
    return titles


def preprocess_raw(name: str, ratings: list[Rating], titles: dict[str, str]) -> tuple[SequenceDataset, dict[int, str]]:
    """The paper's preprocessing of raw Amazon rows: untitled items dropped, iterative 5-core, no rating threshold,
    dense ids (in raw id order), each user's items in (timestamp, item id) order; catalog titles as `display_title`.

    Returns the dataset and its dense user id -> reviewer id.
    """
    sequences, item_map, user_map = sequences_from_ratings(ratings, set(titles))
    if not sequences:
        raise ValueError(f"{name}: no user and item keep 5 interactions among titled items: nothing is left")
    items = [Item(item_id, display_title(titles[str(asin)]), None, (), str(asin)) for asin, item_id in item_map.items()]
    return SequenceDataset(name, sequences, Catalog(items, name)), {u: str(user) for user, u in user_map.items()}


def write_preprocessed(dataset: SequenceDataset, folder: str | Path, raw_titles: dict[str, str],
                       reviewer_ids: dict[int, str]) -> Path:
    """Write `dataset` in the preprocessed CSV form (`raw_titles`: ASIN -> title as the metadata gives it;
    `reviewer_ids`: dense user id -> reviewer id). Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ITEMS_FILE).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(ITEM_COLUMNS)
        for item in dataset.catalog.items:
            writer.writerow([item.item_id, item.source_id, raw_titles[str(item.source_id)]])
    with (folder / SEQUENCES_FILE).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(SEQUENCE_COLUMNS)
        for user, sequence in sorted(dataset.sequences.items()):
            writer.writerow([user, reviewer_ids[user], " ".join(map(str, sequence[:-2])), sequence[-2], sequence[-1]])
    return folder


def prepare_from_raw(name: str, raw_folder: str | Path, output: str | Path) -> Path:
    """The raw files of `name` in `raw_folder` -> the preprocessed CSV form in `output` (returned)."""
    source = SOURCES[name]
    raw_folder = Path(raw_folder)
    titles = read_raw_titles(raw_folder / source.metadata_file, source.metadata_format)
    dataset, reviewer_ids = preprocess_raw(name, read_raw_ratings(raw_folder / source.ratings_file), titles)
    return write_preprocessed(dataset, output, titles, reviewer_ids)
