"""The test users of ml-latest-small, saved compactly beside the retriever so the demo runs without raw files.

`python -m recsys.data.test_users` preprocesses the raw data (`load_dataset`) and writes, into the
retriever checkpoint folder:

- `test_users.json`: per user, the test-input history (train + validation items, dense item ids,
  oldest first) and the held-out next item, with the GroupLens license notice and citation;
- `DATA_LICENSE.txt`: the same notice. ml-latest-small's license allows redistributing
  transformations of the data under the same conditions.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path

from recsys.data.catalog import Catalog
from recsys.data.errors import one_line
from recsys.data.preprocess import SequenceDataset
from recsys.data.sources import load_dataset
from recsys.data.sources import find_dataset_dir
from recsys.folders import retriever_folder

TEST_USERS_FILE = "test_users.json"
LICENSE_FILE = "DATA_LICENSE.txt"
DATASET = "ml-latest-small"
DEFAULT_FOLDER = retriever_folder(DATASET)
COMMAND = "python -m recsys.data.test_users"
ATTRIBUTION = ("Derived from the MovieLens ml-latest-small data set (GroupLens Research, University of "
               "Minnesota, https://grouplens.org/datasets/movielens/), preprocessed as in LlamaRec "
               "(5-core, dense item ids, time order, leave-one-out). Distributed under the data set's "
               "own license conditions, reproduced below.")
_LICENSE_SECTIONS = ("Usage License", "Citation")


@dataclass(frozen=True)
class TestUser:
    """One test user: their history (dense item ids, oldest first) and the held-out next item."""

    __test__ = False

    user: int
    history: tuple[int, ...]
    target: int


class TestUsers:
    """Read-only test users by user id, with the license notice they were saved with."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, users: list[TestUser], dataset: str, license_text: str):
        self.by_id = {u.user: u for u in users}
        self.dataset = dataset
        self.license_text = license_text

    def __len__(self) -> int:
        return len(self.by_id)

    def __getitem__(self, user: int) -> TestUser:
        if user not in self.by_id:
            raise KeyError(f"no test user {user} (ids {min(self.by_id)}..{max(self.by_id)})")
        return self.by_id[user]

    def ids(self) -> list[int]:
        """All user ids, ascending."""
        return sorted(self.by_id)


def license_notice(readme_path: str | Path) -> str:
    """The "Usage License" and "Citation" sections of a GroupLens README.txt, verbatim."""
    text = Path(readme_path).read_text(encoding="utf-8")
    sections = []
    for title in _LICENSE_SECTIONS:
        match = re.search(rf"^{re.escape(title)}\n=+\n(.*?)(?=^\S[^\n]*\n=+\n|\Z)", text, re.S | re.M)
        if match is None:
            raise ValueError(f"{readme_path}: section {title!r} not found")
        sections.append(f"{title}\n{'=' * len(title)}\n\n{match.group(1).strip()}\n")
    return "\n\n".join(sections)


def build_payload(dataset: SequenceDataset, notice: str) -> dict:
    """The JSON payload of test users: dataset name, attribution, license and [user, history, target] rows."""
    rows = []
    for user in sorted(dataset.sequences):
        history, target = dataset.test_input(user)
        rows.append([user, history, target])
    return {"dataset": dataset.name, "attribution": ATTRIBUTION, "license": notice,
            "columns": ["user", "history", "target"], "users": rows}


def check_catalog(dataset: SequenceDataset, folder: Path) -> None:
    """Refuse to write test users whose item ids would not match the checkpoint's catalog."""
    saved = folder / "catalog.json"
    if not saved.is_file():
        return
    catalog = Catalog.load(saved)
    if [m.title for m in catalog.items] != [m.title for m in dataset.catalog.items]:
        raise ValueError(f"{saved} does not match the preprocessed {dataset.name} catalog: "
                         "retrain the retriever (python -m recsys.retriever.train) first")


def write_test_users(dataset: SequenceDataset, folder: str | Path, notice: str) -> Path:
    """Write test_users.json and DATA_LICENSE.txt into `folder`; return the JSON path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    check_catalog(dataset, folder)
    path = folder / TEST_USERS_FILE
    path.write_text(json.dumps(build_payload(dataset, notice), ensure_ascii=False, separators=(",", ":")))
    (folder / LICENSE_FILE).write_text(f"{ATTRIBUTION}\n\n{notice}", encoding="utf-8")
    return path


def test_users_of(dataset: SequenceDataset) -> TestUsers:
    """The test users of a data set read from its files (a data set whose users' histories may not be committed:
    the app reads them where it reads the catalog)."""
    users = [TestUser(user, tuple(history), target)
             for user in sorted(dataset.sequences) for history, target in [dataset.test_input(user)]]
    return TestUsers(users, dataset.name, "")


def load_test_users(folder_or_file: str | Path = DEFAULT_FOLDER) -> TestUsers:
    """Load test users saved by `write_test_users` (a folder holding test_users.json, or the file).

    Raises FileNotFoundError or ValueError, with a one-line message naming the file and the command
    that re-creates it.
    """
    path = Path(folder_or_file)
    if path.is_dir():
        path = path / TEST_USERS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; create it with: {COMMAND}")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        users = [TestUser(int(u), tuple(int(i) for i in h), int(t)) for u, h, t in payload["users"]]
        return TestUsers(users, payload["dataset"], payload["license"])
    except (ValueError, KeyError, TypeError) as error:  # ValueError covers bad JSON and bad UTF-8
        raise ValueError(f"{path}: corrupt test users file ({one_line(error)}); "
                         f"re-create it with: {COMMAND}") from error


def main(argv=None) -> Path:
    """Preprocess the raw data and write the test users and license notice into the checkpoint folder."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="folder holding ml-latest-small's raw files")
    parser.add_argument("--output", default=str(DEFAULT_FOLDER), help="retriever checkpoint folder")
    args = parser.parse_args(argv)
    dataset = load_dataset(DATASET, args.data_dir)
    notice = license_notice(find_dataset_dir(DATASET, args.data_dir) / "README.txt")
    path = write_test_users(dataset, args.output, notice)
    print(f"{dataset.num_users} test users -> {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return path


if __name__ == "__main__":
    main()
