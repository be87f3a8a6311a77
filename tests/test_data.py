"""Data layer: title cleaning, 5-core filter, preprocessing, errors naming file and line, download."""

import hashlib
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from recsys.data import Catalog, load_dataset
from recsys.data.errors import DataFileError
from recsys.data.movielens import RawMovie, build_dataset, read_ml_latest_small
from recsys.data.preprocess import Rating, k_core, tie_key
from recsys.data import sources
from recsys.data.sources import DATASETS, download, find_dataset_dir
from recsys.data.titles import alternative_titles, clean_title, split_year
from tests.helpers.data import needs_data

ML_FIXTURE = Path(__file__).parent / "fixtures" / "ml-latest-small"


@pytest.mark.parametrize("raw, cleaned", [
    ("Matrix, The (1999)", "The Matrix (1999)"),
    ("City of Lost Children, The (Cité des enfants perdus, La) (1995)", "The City of Lost Children (1995)"),
    ("Shawshank Redemption, The (1994)", "The Shawshank Redemption (1994)"),
    ("American President, An (1995)", "An American President (1995)"),
    ("Toy Story (1995)", "Toy Story (1995)"),
    ("Babylon 5", "Babylon 5"),
    ("Stranger Things (2016) ", "Stranger Things (2016)"),
    ("(500) Days of Summer (2009)", "(500) Days of Summer (2009)"),  # parentheses that are the title stay
    ("Evangelion: 3.0 You Can (Not) Redo (2012)", "Evangelion: 3.0 You Can (Not) Redo (2012)"),
    ("Misérables, Les (1995)", "Les Misérables (1995)"),
    ("Dolce Vita, La (1960)", "La Dolce Vita (1960)"),
    ("Auberge espagnole, L' (2002)", "L'Auberge espagnole (2002)"),
    ("Boot, Das (Boat, The) (1981)", "Das Boot (1981)"),
    ("300 (2007)", "300 (2007)"),
    # a trailing group that belongs to the title: what the film is part of, a plural written onto the word, an "and"
    ("Hotel Chevalier (Part 1 of 'The Darjeeling Limited') (2007)",
     "Hotel Chevalier (Part 1 of 'The Darjeeling Limited') (2007)"),
    ("Frontière(s) (2007)", "Frontière(s) (2007)"),
    ("Hommage à Zgougou (et salut à Sabine Mamou) (2002)", "Hommage à Zgougou (et salut à Sabine Mamou) (2002)"),
    # a subtitle after a word that must go on is the rest of the title, not another name
    ("Birdman: Or (The Unexpected Virtue of Ignorance) (2014)",
     "Birdman: Or (The Unexpected Virtue of Ignorance) (2014)"),
    ("Killer, The (Die xue shuang xiong) (1989)", "The Killer (1989)"),  # a moved article does not go on
    ("Me and you (io e te) (2012)", "Me and you (2012)"),  # a lower-case other name is still another name
])
def test_clean_title(raw, cleaned):
    assert clean_title(raw) == cleaned


def test_alternative_titles_are_kept_for_search():
    assert alternative_titles("Boot, Das (Boat, The) (1981)") == ["The Boat"]
    assert alternative_titles("Léon: The Professional (a.k.a. The Professional) (Léon) (1994)") == [
        "The Professional", "Léon"]
    assert alternative_titles("School of Flesh, The (École de la chair, L') (1998)") == ["L'École de la chair"]
    assert alternative_titles("(500) Days of Summer (2009)") == []
    assert alternative_titles("European Vacation (aka National Lampoon's European Vacation) (1985)") == [
        "National Lampoon's European Vacation"]


def test_committed_catalog_has_real_titles():
    from recsys.data.catalog import Catalog
    from recsys.retriever.checkpoint import DEFAULT_CHECKPOINT

    titles = {m.title: m for m in Catalog.load(DEFAULT_CHECKPOINT).items}
    assert "(500) Days of Summer (2009)" in titles and "Days of Summer (2009)" not in titles
    assert "Les Misérables (1995)" in titles and "Das Boot (1981)" in titles
    assert titles["Das Boot (1981)"].alternative_titles == ("The Boat",)


def test_split_year():
    assert split_year("Heat (1995)") == ("Heat", 1995)
    assert split_year("Cosmos") == ("Cosmos", None)


def _ratings(pairs):
    return [Rating(u, i, t) for t, (u, i) in enumerate(pairs)]


def test_k_core_is_iterative():
    # users 1..5 rate items 1..5 (a 5-core); user 6 rates items 1..4 and 6: item 6 has one rating,
    # so it goes; then user 6 has 4 ratings and goes too, which a single pass would have kept.
    pairs = [(u, i) for u in range(1, 6) for i in range(1, 6)] + [(6, i) for i in (1, 2, 3, 4, 6)]
    kept = k_core(_ratings(pairs), k=5)
    assert {r.user for r in kept} == {1, 2, 3, 4, 5}
    assert {r.item for r in kept} == {1, 2, 3, 4, 5}


def test_build_dataset_order_reindex_and_split():
    movies = [RawMovie(i, f"Movie {i}, The ({1990 + i})", ("Drama",)) for i in (10, 20, 30, 40, 50)]
    movies.append(RawMovie(60, "", ()))  # untitled: dropped
    # newer items first in time, except that user 7 saw items 20 and 10 at the same time 0
    ratings = [Rating(u, i, 0 if (u, i) in ((7, 10), (7, 20)) else 100 - i)
               for u in (7, 8, 9, 11, 12) for i in (20, 10, 30, 40, 50, 60)]
    dataset = build_dataset("toy", ratings, movies)
    assert dataset.num_users == 5 and dataset.num_items == 5
    assert dataset.catalog.title(1) == "The Movie 10 (2000)"
    # user 7 (dense 1): items 10 and 20 at t=0 (by id), then 50, 40, 30 by time
    assert dataset.sequences[1] == [1, 2, 5, 4, 3]
    assert dataset.train(1) == [1, 2, 5]
    assert dataset.val_input(1) == ([1, 2, 5], 4)
    assert dataset.test_input(1) == ([1, 2, 5, 4], 3)


def test_hash_tie_order_reorders_only_equal_timestamps_and_is_stable():
    movies = [RawMovie(i, f"Movie {i} ({1990 + i // 10})", ("Drama",)) for i in (10, 20, 30, 40, 50, 60)]
    time_of = {10: 0, 20: 0, 30: 5, 40: 5, 50: 5, 60: 9}  # two ties, then one item alone
    ratings = [Rating(u, i, time_of[i]) for u in range(1, 9) for i in (60, 50, 40, 30, 20, 10)]
    by_item = build_dataset("toy", ratings, movies)
    by_hash = build_dataset("toy", ratings, movies, tie_order="hash")
    assert all(seq == [1, 2, 3, 4, 5, 6] for seq in by_item.sequences.values())  # the paper's order: item ids
    raw_id = {m.item_id: m.source_id for m in by_hash.catalog.items}
    for _user, seq in by_hash.sequences.items():
        times = [time_of[raw_id[i]] for i in seq]
        assert times == sorted(times)  # time order kept: only items at the same time move
        assert sorted(seq[:2]) == [1, 2] and sorted(seq[2:5]) == [3, 4, 5] and seq[5] == 6
    assert any(seq != [1, 2, 3, 4, 5, 6] for seq in by_hash.sequences.values())
    assert len({tuple(seq) for seq in by_hash.sequences.values()}) > 1  # per user, not one global order
    assert build_dataset("toy", ratings, movies, tie_order="hash").sequences == by_hash.sequences
    with pytest.raises(ValueError, match="tie_order must be one of item, hash"):
        build_dataset("toy", ratings, movies, tie_order="random")


def test_tie_key_does_not_depend_on_python_hash_salt():
    script = "from recsys.data.preprocess import tie_key; print(tie_key(7, 10), tie_key(10, 7))"
    outputs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert outputs == {f"{tie_key(7, 10)} {tie_key(10, 7)}\n"} and tie_key(7, 10) != tie_key(10, 7)


@needs_data("ml-latest-small")
def test_ml_latest_small_statistics_match_the_paper():
    dataset = load_dataset("ml-latest-small")
    stats = dataset.statistics()
    assert (stats["users"], stats["items"], stats["avg_length"]) == (610, 3650, 147.99)


@pytest.mark.parametrize("name", ["beauty", "games"])
@needs_data("beauty", "games")
def test_amazon_statistics_match_the_paper(name):
    expected = {"beauty": (22332, 12086, 8.88), "games": (15264, 7676, 9.69)}[name]
    stats = load_dataset(name).statistics()
    assert (stats["users"], stats["items"], stats["avg_length"]) == expected


def test_raw_movielens_files_give_the_papers_dataset_and_its_catalog_round_trips(tmp_path):
    dataset = load_dataset("ml-latest-small", ML_FIXTURE)  # the raw format, made up (tests/fixtures)
    assert dataset.statistics()["users"] == 7 and dataset.num_items == 7  # movie 8's single rating: 5-core drops it
    assert dataset.sequences[1][:3] == [2, 3, 4]  # user 1 rated movies 2, 3, 4, ... in time order
    dataset.catalog.save(tmp_path)
    loaded = Catalog.load(tmp_path)
    assert loaded.items == dataset.catalog.items
    assert loaded.titles(range(1, 8)) == [
        "Toy Story (1995)", "The Matrix (1999)", "The City of Lost Children (1995)", "Heat (1995)",
        "(500) Days of Summer (2009)", "Das Boot (1981)", "Les Misérables (1995)"]
    assert loaded[6].alternative_titles == ("The Boat",) and loaded[1].genres[0] == "Adventure"


def _write_ml_small(folder, ratings_text, movies_text="movieId,title,genres\n1,Heat (1995),Action\n"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text(ratings_text)
    (folder / "movies.csv").write_text(movies_text)
    return folder


def test_bad_line_names_file_and_line(tmp_path):
    folder = _write_ml_small(tmp_path / "ml-latest-small",
                             "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,abc,4.0,964981247\n")
    with pytest.raises(DataFileError, match=r"ratings\.csv, line 3"):
        read_ml_latest_small(folder)


def test_wrong_columns_named(tmp_path):
    folder = _write_ml_small(tmp_path / "ml-latest-small", "user,item,rating,time\n1,1,4.0,1\n")
    with pytest.raises(DataFileError, match=r"ratings\.csv, line 1: expected columns"):
        read_ml_latest_small(folder)


def test_missing_file_is_named(tmp_path, monkeypatch):
    folder = tmp_path / "ml-latest-small"
    folder.mkdir()
    (folder / "movies.csv").write_text("movieId,title,genres\n")
    with pytest.raises(DataFileError, match=r"ratings\.csv: file not found"):
        read_ml_latest_small(folder)
    monkeypatch.setattr(sources, "REPO_ROOT", tmp_path / "repo")  # hide data/ and ../shared
    monkeypatch.delenv(sources.ENV_VAR, raising=False)
    with pytest.raises(FileNotFoundError, match="recsys.data.download"):
        find_dataset_dir("ml-latest-small", tmp_path / "nowhere")


def test_data_dir_takes_precedence(tmp_path):
    folder = _write_ml_small(tmp_path / "ml-latest-small", "userId,movieId,rating,timestamp\n")
    assert find_dataset_dir("ml-latest-small", tmp_path) == folder


def test_a_given_data_dir_without_the_files_is_refused_never_replaced(tmp_path, monkeypatch):
    found = _write_ml_small(tmp_path / "repo" / "data" / "ml-latest-small", "userId,movieId,rating,timestamp\n")
    monkeypatch.setattr(sources, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.delenv(sources.ENV_VAR, raising=False)
    assert find_dataset_dir("ml-latest-small") == found  # without one, the usual places
    with pytest.raises(FileNotFoundError, match=r"(?s)looked in:\n  \S*typo\n  \S*typo/ml-latest-small\nPass the "
                                                r"folder that holds them with --data-dir"):
        find_dataset_dir("ml-latest-small", tmp_path / "typo")


def test_another_data_sets_folder_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.delenv(sources.ENV_VAR, raising=False)
    for folder in ("amazon-games", "my-beauty"):  # Beauty's and Games' files have the same names
        for name in DATASETS["beauty"].required:
            (tmp_path / folder).mkdir(exist_ok=True)
            (tmp_path / folder / name).write_text("")
    with pytest.raises(FileNotFoundError, match=r"amazon-games is the folder of games, not of beauty: pass its "
                                                r"parent, or beauty's own folder \(amazon-beauty\), with --data-dir"):
        find_dataset_dir("beauty", tmp_path / "amazon-games")
    assert find_dataset_dir("games", tmp_path / "amazon-games") == tmp_path / "amazon-games"
    assert find_dataset_dir("beauty", tmp_path / "my-beauty") == tmp_path / "my-beauty"  # any other name is taken


def _zip_bytes():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("ml-latest-small/ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,1\n")
        zipped.writestr("ml-latest-small/movies.csv", "movieId,title,genres\n1,Heat (1995),Action\n")
    return buffer.getvalue()


def test_download_verifies_checksum_and_unpacks(local_server, tmp_path):
    root, url = local_server
    archive = _zip_bytes()
    (root / "ml-latest-small.zip").write_bytes(archive)
    (root / "ml-latest-small.zip.md5").write_text(f"{hashlib.md5(archive).hexdigest()}  ml-latest-small.zip\n")
    folder = download("ml-latest-small", tmp_path / "data", base_url=url)
    assert (folder / "ratings.csv").read_text().startswith("userId")


def test_download_rejects_a_bad_checksum(local_server, tmp_path):
    root, url = local_server
    (root / "ml-latest-small.zip").write_bytes(_zip_bytes())
    (root / "ml-latest-small.zip.md5").write_text("0" * 32 + "  ml-latest-small.zip\n")
    with pytest.raises(ValueError, match="checksum mismatch"):
        download("ml-latest-small", tmp_path / "data", base_url=url)
    assert not (tmp_path / "data" / "ml-latest-small").exists()
