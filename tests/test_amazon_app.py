"""The app on Amazon Beauty and Games: `python app.py --dataset NAME` reads the catalog and the test users from the
data set's files (never committed), serves the retriever and the prior chosen on its validation users, and says in
one sentence where it looked for the files when they are missing."""

from __future__ import annotations

import subprocess
import sys

import pytest

import app
from recsys.demo.handlers import DemoHandlers
from recsys.demo.results import TITLES_COLUMN
from recsys.demo.visit import Visit
from recsys.ranker.base_model import converted_dir
from tests.helpers.data import needs_data

needs_model = pytest.mark.skipif(not (converted_dir() / "model.safetensors").is_file(), reason="default base model "
                                 "not prepared (python -m recsys.ranker.base_model --prepare)")


@needs_model
@needs_data("games")
def test_games_answers_a_recommend_for_a_test_user_in_its_own_words():
    pipeline = app.load_pipeline(app.parse_args(["--dataset", "games"]))
    handlers = DemoHandlers.of(pipeline)
    assert pipeline.catalog.dataset == "games" and len(pipeline.catalog) == 7676 and not handlers.history.presets
    label, user = handlers.history.user_choices()[0]
    assert label.endswith(" games)")
    session = handlers.history.load_test_user(Visit(), user).visit
    view = handlers.results.recommend(session)
    summary, table = view.summary, view.table
    assert len(table) == 20 and "verbalizer ranking" in summary and "games" in summary
    assert "purchase history in chronological order, recommend a game from" in view.prompt  # the LLM reads games
    assert pipeline.fusion.cowatch > 0 and pipeline.fusion.llm == 0  # the prior validation chose; the LLM shown
    assert table["LLM"].notna().all()
    # validation gave title likelihood a weight here: every Recommend computes it, in the served score form
    assert pipeline.fusion.titles > 0 and pipeline.llm.title_config.per_token and table[TITLES_COLUMN].notna().all()
    assert handlers.history.item_named("")[1] == "⚠️ Name a game: a title or an ASIN."
    assert handlers.history.load_preset(session, "Sci-fi fan").notice.startswith(
        "⚠️ This data set has no presets: load a test user or find games by title.")
    assert list(handlers.history.history_view(session).history.columns) == ["#", "Title"]  # no genres to show


def test_missing_amazon_files_give_one_sentence_with_where_and_how(tmp_path):
    env_script = (f"import sys; from recsys.data import sources; sources.REPO_ROOT = __import__('pathlib').Path("
                  f"{str(tmp_path)!r}); sys.argv = ['app.py', '--dataset', 'beauty']; import app; app.main()")
    done = subprocess.run([sys.executable, "-c", env_script], capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RECSYS_CACHE_DIR": str(tmp_path)})
    assert done.returncode != 0 and "Traceback" not in done.stderr
    message = done.stderr.strip().splitlines()
    assert message[0].startswith("Cannot start the demo: the files of beauty (items.csv, sequences.csv) are not found")
    assert "python -m recsys.data.download beauty" in done.stderr
