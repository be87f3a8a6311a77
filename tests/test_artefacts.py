"""The one loader of ranker folders: what it reads from the committed folder, zero-shot and prior-only folders, and
the one error it raises for each kind of unusable file."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from recsys import NUM_CANDIDATES
from recsys.errors import CheckpointError
from recsys.ranker.artefacts import (PRIOR_FILE, TITLE_CONFIG_FILE, TRAINING_CONFIG_FILE, CatalogArtefacts,
                                     RankerArtefacts)
from recsys.ranker.cowatch import COUNTS_FILE, CoWatchConfig
from recsys.ranker.fusion import FusionWeights
from recsys.ranker.model import DEFAULT_ADAPTER, TRAIN_COMMAND
from recsys.ranker.prompt import PromptConfig
from recsys.ranker.served import SERVED_COMMAND, SERVED_CONFIG_FILE, ServedConfig
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
    served = json.loads((DEFAULT_ADAPTER / SERVED_CONFIG_FILE).read_text())
    training = json.loads((DEFAULT_ADAPTER / TRAINING_CONFIG_FILE).read_text())
    assert ranker.fusion == FusionWeights(**served["fusion"]) and ranker.adapter == DEFAULT_ADAPTER
    assert ranker.prompt == PromptConfig(**served["prompt"]) and ranker.pool == served["pool"] == 50
    assert ranker.counts is not None and ranker.counts.config == CoWatchConfig(**served["cowatch"])
    assert ranker.require_prior().cowatch == ranker.counts.config  # the prior training reads was counted so too
    assert ranker.training["loss"] == training["loss"] and "test" in ranker.metrics
    assert ranker.served == ServedConfig.from_pretrained(DEFAULT_ADAPTER)


def test_a_folder_without_weights_is_zero_shot(tmp_path):
    folder = copy_adapter(tmp_path, SERVED_CONFIG_FILE, PRIOR_FILE, COUNTS_FILE)
    ranker = RankerArtefacts.load(folder)
    assert ranker.zero_shot and ranker.adapter is None and ranker.pool == 50 and ranker.title is None


def test_a_zero_shot_folder_says_how_its_title_weight_was_scored(tmp_path):
    folder = copy_adapter(tmp_path, SERVED_CONFIG_FILE, PRIOR_FILE, COUNTS_FILE)
    title = {"max_history": 20, "max_title_tokens": 32, "years": True, "per_token": True, "domain": "product"}
    (folder / TITLE_CONFIG_FILE).write_text(json.dumps({"title": title, "validation": {"chosen_weight": 0.25}}))
    assert RankerArtefacts.load(folder).title == TitleConfig(**title)
    (folder / TITLE_CONFIG_FILE).write_text(json.dumps({"title": {**title, "domain": "book"}}))
    with pytest.raises(CheckpointError, match="title_config.json is corrupt.*recsys.ranker.title_weight"):
        RankerArtefacts.load(folder)


def test_a_trained_folder_scores_titles_with_the_base_model_only_when_its_title_config_says_so(tmp_path):
    folder = copy_adapter(tmp_path, SERVED_CONFIG_FILE, PRIOR_FILE, COUNTS_FILE, "adapter_config.json",
                          "adapter_model.safetensors")
    assert not RankerArtefacts.load(folder).base_titles  # MovieLens's: its title weight is a catalog adapter's
    title = {"max_history": 20, "max_title_tokens": 32, "years": True, "per_token": True, "domain": "product"}
    (folder / TITLE_CONFIG_FILE).write_text(json.dumps({"title": title, "validation": {"chosen_weight": 0.25}}))
    ranker = RankerArtefacts.load(folder)  # `recsys.ranker.title_weight` chose it with the base model's
    assert ranker.base_titles and ranker.adapter is not None and ranker.title == TitleConfig(**title)


def test_a_folder_with_weights_only_serves_the_llm_alone(tmp_path):
    """A trainer's output before its final step: the adapter's weights, no choice yet."""
    ranker = RankerArtefacts.load(copy_adapter(tmp_path, "adapter_config.json", "adapter_model.safetensors"))
    assert ranker.fusion == FusionWeights(retriever=0.0, cowatch=0.0, llm=1.0) and ranker.pool == NUM_CANDIDATES
    assert ranker.adapter is not None and ranker.counts is None


@pytest.mark.parametrize("kept", [(PRIOR_FILE, COUNTS_FILE), ("ranker_config.json",)])
def test_a_prior_or_an_earlier_layout_without_a_served_config_asks_for_one(tmp_path, kept):
    """Serving such a folder as the LLM alone would drop what was chosen for it."""
    folder = copy_adapter(tmp_path, "adapter_config.json", "adapter_model.safetensors", PRIOR_FILE, COUNTS_FILE)
    for name in {PRIOR_FILE, COUNTS_FILE} - set(kept):
        (folder / name).unlink()
    for name in set(kept) - {PRIOR_FILE, COUNTS_FILE}:
        (folder / name).write_text("{}")
    with pytest.raises(CheckpointError, match=f"served_config.json not found.*{re.escape(SERVED_COMMAND)}"):
        RankerArtefacts.load(folder)


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
    served = ServedConfig.from_pretrained(folder)
    replace(served, cowatch=CoWatchConfig(served.cowatch.window + 1, served.cowatch.span)).save_pretrained(folder)
    with pytest.raises(CheckpointError, match="cowatch.safetensors is corrupt.*counted with"):
        RankerArtefacts.load(folder)


def test_the_served_config_round_trips(tmp_path):
    config = ServedConfig(30, CoWatchConfig(4, 2), FusionWeights(0.5, 1.25, 0.75, 0.1),
                          PromptConfig(max_history=7, years=False, evidence=True, domain="game"))
    assert ServedConfig.from_pretrained(config.save_pretrained(tmp_path / "new").parent) == config


def changed(folder: Path, change) -> dict:
    """The folder's served_config.json after `change(saved)` (a dict edited in place)."""
    saved = json.loads((folder / SERVED_CONFIG_FILE).read_text())
    change(saved)
    (folder / SERVED_CONFIG_FILE).write_text(json.dumps(saved))
    return saved


@pytest.mark.parametrize("change, said", [
    (lambda s: s.pop("pool"), "missing pool"),
    (lambda s: s.update(colour=1), "unknown colour"),
    (lambda s: s["fusion"].pop("titles"), "missing fusion.titles"),
    (lambda s: s["fusion"].update(llm_alone=1.0), "unknown fusion.llm_alone"),
    (lambda s: s["prompt"].pop("domain"), "missing prompt.domain"),
    (lambda s: s["cowatch"].update(decay=0.5), "unknown cowatch.decay"),
    (lambda s: s.update(pool=5), "pool must be"), (lambda s: s.update(pool=101), "pool must be"),
    (lambda s: s.update(pool="50"), "pool must be"), (lambda s: s.update(pool=True), "pool must be"),
    (lambda s: s["fusion"].update(llm=-1.0), "fusion.llm -1.0"),
    (lambda s: s["fusion"].update(llm="1"), "fusion.llm '1'"),
    (lambda s: s["prompt"].update(years=1), "prompt.years 1"),
    (lambda s: s["prompt"].update(max_history=-3), "prompt.max_history -3"),
    (lambda s: s["prompt"].update(domain="book"), "prompt.domain 'book'"),
    (lambda s: s.update(prompt=[]), "prompt is not a JSON object"),
])
def test_a_served_config_with_a_missing_unknown_or_bad_key_is_refused_by_name(tmp_path, change, said):
    folder = copy_adapter(tmp_path)
    changed(folder, change)
    with pytest.raises(CheckpointError) as raised:
        RankerArtefacts.load(folder)
    message = str(raised.value)
    assert "served_config.json is corrupt" in message and said in message and SERVED_COMMAND in message


def test_whole_weights_written_as_integers_read_as_weights(tmp_path):
    folder = copy_adapter(tmp_path)
    changed(folder, lambda s: s["fusion"].update(llm=1, titles=0))
    assert RankerArtefacts.load(folder).fusion.llm == 1.0


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


def test_how_titles_are_scored_is_read_beside_the_catalog_adapter(tmp_path):
    folder = catalog_folder(tmp_path)
    assert CatalogArtefacts.load(folder) == CatalogArtefacts(folder, TitleConfig())
    (folder / TITLE_CONFIG_FILE).write_text(json.dumps({"title": {"per_token": True}, "validation": {}}))
    assert CatalogArtefacts.load(folder) == CatalogArtefacts(folder, TitleConfig(per_token=True))


@pytest.mark.parametrize("broken", ["{", json.dumps([1]), json.dumps({"title": {"colour": 1}}),
                                    json.dumps({"validation": {}}), json.dumps({"title": {}, "weight": 0.5})])
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
    assert CatalogArtefacts.load(DEFAULT_CATALOG_ADAPTER).title == TitleConfig(**saved["title"])
    # its weight is served with the ranker's, as validation chose it
    assert RankerArtefacts.load(DEFAULT_ADAPTER).fusion.titles == saved["validation"]["chosen_weight"]
