"""The data sets: where their files are found, how they are read, and the explicit download for users with internet.

MovieLens (ml-latest-small, the paper's "ML-100k"; classic ml-100k) is read from GroupLens' raw files. Amazon
Beauty and Video Games are read from the preprocessed CSV form (`recsys.data.amazon`); their download fetches the
raw files and writes that form.
"""

from __future__ import annotations

import hashlib
import io
import os
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from recsys.data import amazon
from recsys.data.movielens import READERS, build_dataset
from recsys.data.preprocess import SequenceDataset

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_VAR = "RECSYS_DATA_DIR"
GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens"


@dataclass(frozen=True)
class DatasetFiles:
    """The files a data set is read from, relative to its folder, and the folder's usual name."""

    name: str  # folder name, e.g. "amazon-beauty"
    required: tuple[str, ...]
    domain: str  # what its items are, for the app's words: "movie", "product" or "game"
    # whether derived files that hold its titles or users' histories may be committed (ml-latest-small's license
    # allows it); for the others only weights and counts over item ids are
    redistributable: bool = False


DATASETS = {
    "ml-latest-small": DatasetFiles("ml-latest-small", ("ratings.csv", "movies.csv"), "movie", redistributable=True),
    "ml-100k": DatasetFiles("ml-100k", ("u.data", "u.item"), "movie"),
    "beauty": DatasetFiles("amazon-beauty", (amazon.ITEMS_FILE, amazon.SEQUENCES_FILE), "product"),
    "games": DatasetFiles("amazon-games", (amazon.ITEMS_FILE, amazon.SEQUENCES_FILE), "game"),
}


def _check_name(name: str) -> DatasetFiles:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]


def candidate_dirs(name: str, data_dir: str | Path | None = None) -> list[Path]:
    """Folders searched for `name`: a given `data_dir` (--data-dir) alone, so that a mistyped one is never replaced
    by files found elsewhere; else, in order, $RECSYS_DATA_DIR, data/<folder>, ../shared/data/<folder>.

    A given directory may be the dataset folder itself or its parent.
    """
    folder = _check_name(name).name
    if data_dir:
        return [Path(data_dir), Path(data_dir) / folder]
    dirs: list[Path] = []
    if base := os.environ.get(ENV_VAR):
        dirs += [Path(base), Path(base) / folder]
    return dirs + [REPO_ROOT / "data" / folder, REPO_ROOT.parent / "shared" / "data" / folder]


def find_dataset_dir(name: str, data_dir: str | Path | None = None) -> Path:
    """Return the first folder holding all raw files of `name` (`candidate_dirs`), or raise FileNotFoundError saying
    where it looked and how to get them."""
    spec = _check_name(name)
    searched = candidate_dirs(name, data_dir)
    # Beauty's and Games' folders hold files of the same names: another data set's folder, named as it, is refused
    others = {files.name: other for other, files in DATASETS.items() if files.name != spec.name}
    for folder in searched:
        if all((folder / f).is_file() for f in spec.required):
            if folder.name in others:
                raise FileNotFoundError(f"{folder} is the folder of {others[folder.name]}, not of {name}: pass its "
                                        f"parent, or {name}'s own folder ({spec.name}), with --data-dir")
            return folder
    looked = "\n  ".join(str(d) for d in searched)
    remedy = ("Pass the folder that holds them with --data-dir" if data_dir else
              f"Pass their folder with --data-dir, set {ENV_VAR}")
    raise FileNotFoundError(
        f"the files of {name} ({', '.join(spec.required)}) are not found; looked in:\n  {looked}\n"
        f"{remedy}, or run (with internet): python -m recsys.data.download {name}")


def load_dataset(name: str = "ml-latest-small", data_dir: str | Path | None = None,
                 tie_order: str = "item") -> SequenceDataset:
    """Find the files of `name` (see `find_dataset_dir`), read and preprocess them as the paper does.

    `tie_order` orders MovieLens interactions with equal timestamps (see `recsys.data.preprocess.TIE_ORDERS`); the
    Amazon files carry their order already, so only "item" (the paper's, which made them) is accepted there.
    """
    folder = find_dataset_dir(name, data_dir)
    if name in amazon.SOURCES:
        if tie_order != "item":
            raise ValueError(f"{name} is read in the order its preprocessed files give; tie_order must be 'item'")
        return amazon.read_preprocessed(name, folder)
    ratings, movies = READERS[name](folder)
    return build_dataset(name, ratings, movies, tie_order)


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (explicit user command)
        return response.read()


def download(name: str, dest: str | Path | None = None, base_url: str | None = None) -> Path:
    """Download `name` into `dest` (default `data/` in the repository) and return its folder.

    MovieLens: the official GroupLens zip, verified against the MD5 GroupLens publishes beside it, unpacked.
    Amazon: the raw ratings and metadata files (into `<folder>/raw`), preprocessed into the CSV form the app reads.
    `base_url` replaces where the files are published (a mirror; the tests' local server). Raises OSError
    (urllib's URLError) when the files cannot be reached.
    """
    _check_name(name)
    dest = Path(dest) if dest else REPO_ROOT / "data"
    if name in amazon.SOURCES:
        return _download_amazon(name, dest, base_url)
    base_url = base_url or GROUPLENS_URL
    archive = _fetch(f"{base_url}/{name}.zip")
    published = _fetch(f"{base_url}/{name}.zip.md5").decode().split()
    expected = published[0].lower() if published else ""
    actual = hashlib.md5(archive).hexdigest()  # noqa: S324 (GroupLens publishes MD5 only)
    if actual != expected:
        raise ValueError(f"checksum mismatch for {name}.zip: got md5 {actual}, published {expected or 'nothing'}")
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        for member in zipped.namelist():
            target = (dest / member).resolve()
            if not target.is_relative_to(dest.resolve()):
                raise ValueError(f"{name}.zip: refusing path outside the destination: {member}")
        zipped.extractall(dest)
    return find_dataset_dir(name, dest)


def _download_amazon(name: str, dest: Path, base_url: str | None) -> Path:
    source = amazon.SOURCES[name]
    folder = dest / DATASETS[name].name
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for url, file in ((source.ratings_url, source.ratings_file), (source.metadata_url, source.metadata_file)):
        url = f"{base_url}/{file}" if base_url else url
        if not (raw / file).is_file():  # a rerun after a failure fetches only what is missing
            partial = raw / f"{file}.part"
            partial.write_bytes(_fetch(url))
            partial.rename(raw / file)
    amazon.prepare_from_raw(name, raw, folder)
    return folder
