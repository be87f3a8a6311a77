"""The one loader of ranker folders: what it reads from the committed folder, zero-shot and prior-only folders, and
the one error it raises for each kind of unusable file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from recsys import NUM_CANDIDATES
from recsys.errors import CheckpointError
from recsys.ranker.artefacts import (PRIOR_FILE, RANKER_CONFIG_FILE, TITLE_CONFIG_FILE, CatalogArtefacts,
                                     RankerArtefacts)
from recsys.ranker.cowatch import COUNTS_FILE, CoWatchConfig
from recsys.ranker.fusion import FusionWeights
from recsys.ranker.model import DEFAULT_ADAPTER, TRAIN_COMMAND
from recsys.ranker.title_likelihood import TitleConfig


def copy_adapter(tmp_path: Path, *names: str) -> Path:
    """A copy of the committed ranker folder, or of only `names` of its files."""
    folder = tmp_path / "ranker"
    if not names:
        return Path(shutil.copytree(DEFAULT_ADAPTER, folder))
    folder.mkdir()
    for name in names:
        shutil.copyfile(DEFAULT_ADAPTER / name, folder / name)
    return folder


def test_no_folder_is_the_llm_alone_on_the_papers_stage_one():
    ranker = RankerArtefacts.load(None)
    assert ranker.fusion == FusionWeights(retriever=0.0, cowatch=0.0, llm=1.0)
    assert ranker.adapter is None and ranker.counts is None and ranker.pool == NUM_CANDIDATES
    assert not ranker.zero_shot


def test_the_committed_folder_reads_as_saved():
    ranker = RankerArtefacts.load(DEFAULT_ADAPTER)
    config = json.loads((DEFAULT_ADAPTER / RANKER_CONFIG_FILE).read_text())
    prior = json.loads((DEFAULT_ADAPTER / PRIOR_FILE).read_text())
    assert ranker.fusion == FusionWeights(**config["fusion"]) and ranker.adapter == DEFAULT_ADAPTER
    assert ranker.prompt.max_history == config["prompt"]["max_history"]
    assert ranker.pool == prior["pool"] == 50 and ranker.require_prior().cowatch == CoWatchConfig(**prior["cowatch"])
    assert ranker.counts is not None and ranker.counts.config == ranker.require_prior().cowatch
    assert ranker.training["loss"] == config["training"]["loss"] and "test" in ranker.metrics


def test_a_folder_without_weights_is_zero_shot(tmp_path):
    folder = copy_adapter(tmp_path, RANKER_CONFIG_FILE, PRIOR_FILE, COUNTS_FILE)
    ranker = RankerArtefacts.load(folder)
    assert ranker.zero_shot and ranker.adapter is None and ranker.pool == 50


def test_a_prior_only_folder_is_what_training_reads(tmp_path):
    """`python -m recsys.ranker.prior --write --output F` writes only the prior and the counts."""
    ranker = RankerArtefacts.load(copy_adapter(tmp_path, PRIOR_FILE, COUNTS_FILE))
    assert ranker.require_prior().pool == 50 and ranker.counts is not None
    assert ranker.fusion.llm == 1.0 and ranker.fusion.cowatch == 0.0  # no ranker_config.json: the LLM alone


def test_a_folder_of_something_else_says_what_a_ranker_folder_holds(tmp_path):
    (tmp_path / "notes.txt").write_text("not a ranker")
    with pytest.raises(CheckpointError, match="not a ranker folder") as raised:
        RankerArtefacts.load(tmp_path)
    assert TRAIN_COMMAND in str(raised.value) and str(tmp_path) in str(raised.value)


def test_missing_counts_name_the_file_and_the_command(tmp_path):
    folder = copy_adapter(tmp_path)
    (folder / COUNTS_FILE).unlink()
    with pytest.raises(CheckpointError, match="cowatch.safetensors not found.*recsys.ranker.prior --write"):
        RankerArtefacts.load(folder)


def test_counts_made_for_another_window_are_refused(tmp_path):
    folder = copy_adapter(tmp_path)
    prior = json.loads((folder / PRIOR_FILE).read_text())
    prior["cowatch"]["window"] += 1
    (folder / PRIOR_FILE).write_text(json.dumps(prior))
    with pytest.raises(CheckpointError, match="cowatch.safetensors is corrupt.*counted with"):
        RankerArtefacts.load(folder)


@pytest.mark.parametrize("pool", [5, 101, "50", True, None])
def test_a_pool_out_of_range_names_prior_json(tmp_path, pool):
    folder = copy_adapter(tmp_path)
    prior = json.loads((folder / PRIOR_FILE).read_text())
    prior["pool"] = pool
    (folder / PRIOR_FILE).write_text(json.dumps(prior))
    with pytest.raises(CheckpointError, match="prior.json is corrupt.*pool must be"):
        RankerArtefacts.load(folder)


def test_a_prior_without_a_prior_json_is_asked_for_by_name(tmp_path):
    ranker = RankerArtefacts.load(copy_adapter(tmp_path, "adapter_config.json", "adapter_model.safetensors"))
    with pytest.raises(CheckpointError, match="prior.json not found"):
        ranker.require_prior()


def catalog_folder(tmp_path: Path) -> Path:
    """A folder with (empty) adapter files: the loader only needs them present, peft reads them."""
    folder = tmp_path / "catalog"
    folder.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (folder / name).write_text("{}")
    return folder


def test_the_title_choice_is_read_beside_the_catalog_adapter(tmp_path):
    folder = catalog_folder(tmp_path)
    assert CatalogArtefacts.load(folder) == CatalogArtefacts(folder, TitleConfig(), 0.0)  # no choice: weight 0
    (folder / TITLE_CONFIG_FILE).write_text(json.dumps({"title": {"per_token": True}, "weight": 0.5}))
    assert CatalogArtefacts.load(folder) == CatalogArtefacts(folder, TitleConfig(per_token=True), 0.5)


@pytest.mark.parametrize("broken", ["{", json.dumps([1]), json.dumps({"title": {"colour": 1}, "weight": 1}),
                                    json.dumps({"title": {}, "weight": -1})])
def test_a_damaged_title_choice_names_the_file_and_the_fix(tmp_path, broken):
    folder = catalog_folder(tmp_path)
    (folder / TITLE_CONFIG_FILE).write_text(broken)
    with pytest.raises(CheckpointError, match="title_config.json is corrupt.*llm_rankers.py"):
        CatalogArtefacts.load(folder)


def test_a_catalog_folder_without_an_adapter_says_how_to_make_one(tmp_path):
    with pytest.raises(CheckpointError, match="recsys.ranker.catalog_lm"):
        CatalogArtefacts.load(tmp_path)


def test_the_committed_catalog_adapter_reads():
    from recsys.pipeline import DEFAULT_CATALOG_ADAPTER

    saved = json.loads((DEFAULT_CATALOG_ADAPTER / TITLE_CONFIG_FILE).read_text())
    assert CatalogArtefacts.load(DEFAULT_CATALOG_ADAPTER).weight == saved["weight"]
