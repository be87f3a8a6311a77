"""Where raw MovieLens files are found, and the explicit download for users with internet."""

from __future__ import annotations

import hashlib
import io
import os
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_VAR = "RECSYS_DATA_DIR"
GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens"


@dataclass(frozen=True)
class DatasetFiles:
    """The raw files a dataset needs, relative to its folder."""

    name: str
    required: tuple[str, ...]


DATASETS = {
    "ml-latest-small": DatasetFiles("ml-latest-small", ("ratings.csv", "movies.csv")),
    "ml-100k": DatasetFiles("ml-100k", ("u.data", "u.item")),
}


def _check_name(name: str) -> DatasetFiles:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]


def candidate_dirs(name: str, data_dir: str | Path | None = None) -> list[Path]:
    """Folders searched for `name`, in order: --data-dir, $RECSYS_DATA_DIR, data/<name>, ../shared/data/<name>.

    A given directory may be the dataset folder itself or its parent.
    """
    dirs: list[Path] = []
    for base in (data_dir, os.environ.get(ENV_VAR)):
        if base:
            dirs += [Path(base), Path(base) / name]
    dirs += [REPO_ROOT / "data" / name, REPO_ROOT.parent / "shared" / "data" / name]
    return dirs


def find_dataset_dir(name: str, data_dir: str | Path | None = None) -> Path:
    """Return the first folder holding all raw files of `name`, or raise FileNotFoundError saying where it looked."""
    spec = _check_name(name)
    searched = candidate_dirs(name, data_dir)
    for folder in searched:
        if all((folder / f).is_file() for f in spec.required):
            return folder
    looked = "\n  ".join(str(d) for d in searched)
    raise FileNotFoundError(
        f"raw files of {name} ({', '.join(spec.required)}) not found; looked in:\n  {looked}\n"
        f"Pass --data-dir, set {ENV_VAR}, or run: python -m recsys.data.download {name}")


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (explicit user command)
        return response.read()


def download(name: str, dest: str | Path | None = None, base_url: str = GROUPLENS_URL) -> Path:
    """Download the official GroupLens zip of `name`, verify it against the published MD5, unpack it.

    The checksum file `<name>.zip.md5` is the one GroupLens publishes beside each zip. Returns the
    dataset folder (default `data/<name>` in the repository).
    """
    _check_name(name)
    dest = Path(dest) if dest else REPO_ROOT / "data"
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
