"""Amazon Beauty and Games: raw files -> the paper's preprocessing -> the CSV form, read back as the CSV reader reads
the authors' files. The fixture (tests/fixtures) is made up in the raw formats: 7 users who stay, an untitled item,
an item with an empty title, and a 5-core cascade over three rounds (D1 -> the item X07 -> D2)."""

import ast
import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path
from dataclasses import replace

import pytest
import torch
from conftest import make_llama, make_tokenizer

from recsys.data import amazon, load_dataset, sources
from recsys.data.errors import DataFileError
from recsys.data.sources import download, find_dataset_dir

FIXTURES = Path(__file__).parent / "fixtures"
RAW = FIXTURES / "amazon-raw"
PREPROCESSED = FIXTURES / "amazon-preprocessed"  # the authors' form: dense ids in an order of their own


def _asin_sequences(dataset) -> set[tuple[str, ...]]:
    """Every user's sequence as ASINs (the dense ids differ between the authors' files and ours)."""
    asin = {item.item_id: str(item.source_id) for item in dataset.catalog.items}
    return {tuple(asin[i] for i in sequence) for sequence in dataset.sequences.values()}


def _raw_folder(tmp_path: Path, name: str = "beauty", metadata_format: str = "python") -> Path:
    """The fixture under the file names `name`'s source publishes, metadata gzipped (JSON lines for "json")."""
    source = amazon.SOURCES[name]
    folder = tmp_path / "raw"
    folder.mkdir()
    shutil.copy(RAW / "ratings_Beauty.csv", folder / source.ratings_file)
    lines = (RAW / "meta_Beauty.json").read_text().splitlines()
    if metadata_format == "json":
        lines = [json.dumps(ast.literal_eval(line)) for line in lines]
    with gzip.open(folder / source.metadata_file, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return folder


@pytest.mark.parametrize("name, metadata_format", [("beauty", "python"), ("games", "json")])
def test_raw_files_give_the_splits_the_csv_reader_gives(tmp_path, name, metadata_format):
    assert amazon.SOURCES[name].metadata_format == metadata_format
    written = amazon.prepare_from_raw(name, _raw_folder(tmp_path, name, metadata_format), tmp_path / "out")
    ours, theirs = amazon.read_preprocessed(name, written), amazon.read_preprocessed(name, PREPROCESSED)
    assert ours.statistics() == theirs.statistics() == {"users": 7, "items": 6, "interactions": 42,
                                                        "avg_length": 6.0, "density": 1.0}
    assert _asin_sequences(ours) == _asin_sequences(theirs)
    titles = {item.source_id: item.title for item in ours.catalog.items}
    assert titles == {item.source_id: item.title for item in theirs.catalog.items}
    assert titles["X000000003"] == "Eye & Lip Palette"  # unescaped where people read it
    assert "X000000007" not in titles and "X000000008" not in titles and "X000000009" not in titles
    # the files keep the title as the metadata gives it (stripped), as the authors' files do
    assert "Eye &amp; Lip Palette" in (written / amazon.ITEMS_FILE).read_text()


def test_splits_are_leave_one_out_of_the_files_order():
    dataset = amazon.read_preprocessed("beauty", PREPROCESSED)
    user = 1  # C3 in the fixture: "4 1 3 2", then 6, then 5
    assert dataset.train(user) == [4, 1, 3, 2]
    assert dataset.val_input(user) == ([4, 1, 3, 2], 6)
    assert dataset.test_input(user) == ([4, 1, 3, 2, 6], 5)


def test_python_literal_metadata_is_never_executed(tmp_path):
    path = tmp_path / "meta.json"
    marker = tmp_path / "ran"
    path.write_text(f"{{'asin': 'X1', 'title': 'Fine'}}\n__import__('pathlib').Path({str(marker)!r}).touch()\n")
    with pytest.raises(DataFileError, match=r"meta\.json, line 2: not a python record"):
        amazon.read_raw_titles(path, "python")
    assert not marker.exists()


@pytest.mark.parametrize("items, sequences, message", [
    ("item_id,asin,title\n1,X1,A\n3,X3,C\n", "user_id,reviewer_id,train_items,val_item,test_item\n",
     r"items\.csv, line 3: item ids must be 1\.\.N"),
    ("item_id,asin,title\n1,X1,A\n", "user_id,reviewer_id,train_items,val_item,test_item\n1,R,1 1,1,2\n",
     r"sequences\.csv, line 2: item id outside 1\.\.1"),
    ("item_id,asin,title\n1,X1,A\n", "user_id,reviewer_id,train_items,val_item,test_item\n1,R,1 x,1,1\n",
     r"sequences\.csv, line 2: expected an item id"),
    ("id,asin,title\n1,X1,A\n", "", r"items\.csv, line 1: expected columns"),
])
def test_malformed_files_name_the_file_and_line(tmp_path, items, sequences, message):
    (tmp_path / amazon.ITEMS_FILE).write_text(items)
    (tmp_path / amazon.SEQUENCES_FILE).write_text(sequences)
    with pytest.raises(DataFileError, match=message):
        amazon.read_preprocessed("beauty", tmp_path)


def test_display_title_unescapes_and_collapses_whitespace():
    assert amazon.display_title("Salt &amp; Pepper  &quot;Mini&quot;\n Set") == 'Salt & Pepper "Mini" Set'


def test_download_fetches_the_raw_files_and_writes_the_csv_form(local_server, tmp_path):
    root, url = local_server
    for file in _raw_folder(tmp_path).iterdir():
        shutil.copy(file, root)
    folder = download("beauty", tmp_path / "data", base_url=url)
    assert folder == tmp_path / "data" / "amazon-beauty"
    assert find_dataset_dir("beauty", tmp_path / "data") == folder
    assert load_dataset("beauty", tmp_path / "data").statistics()["users"] == 7


def test_download_says_plainly_when_the_files_cannot_be_reached(tmp_path):
    done = subprocess.run([sys.executable, "-m", "recsys.data.download", "games", "--dest", str(tmp_path),
                           "--base-url", "http://127.0.0.1:9"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "games: the files cannot be reached from this machine" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_amazon_files_say_where_it_looked_and_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "REPO_ROOT", tmp_path / "repo")  # hide data/ and ../shared
    monkeypatch.delenv(sources.ENV_VAR, raising=False)
    with pytest.raises(FileNotFoundError, match=r"(?s)items\.csv, sequences\.csv.*amazon-games.*download games"):
        find_dataset_dir("games")


def test_amazon_order_is_the_files_own():
    with pytest.raises(ValueError, match="tie_order must be 'item'"):
        load_dataset("beauty", PREPROCESSED, tie_order="hash")


def _chain_raw_files(folder: Path, users: int = 160, items: int = 120) -> None:
    """Made-up raw Beauty files big enough for the reproduce steps (the pool needs 100 items): each user buys a run
    of consecutive items, so co-watch has something to find."""
    folder.mkdir(parents=True)
    source = amazon.SOURCES["beauty"]
    rows = []
    for user in range(users):
        start = (user * 7) % items
        for step in range(8):
            rows.append(f"U{user:03d},X{(start + step) % items:09d},5.0,{1_300_000_000 + 86_400 * step}")
    (folder / source.ratings_file).write_text("\n".join(rows) + "\n")
    with gzip.open(folder / source.metadata_file, "wt", encoding="utf-8") as handle:
        for item in range(items):
            handle.write(repr({"asin": f"X{item:09d}", "title": f"Product {item} &amp; more"}) + "\n")


def test_the_reproduce_steps_run_from_raw_files_to_a_folder_the_app_serves(tmp_path, monkeypatch):
    from recsys import reproduce
    from recsys.pipeline import Pipeline, PipelineConfig
    from recsys.ranker.artefacts import RankerArtefacts
    from recsys.ranker.cowatch import CoWatchConfig
    from recsys.ranker.fusion import FusionWeights
    from recsys import folders
    from recsys.ranker import title_scores, title_weight
    from recsys.ranker import train as ranker_train
    from recsys.ranker.model import RankerLoadConfig
    from recsys.ranker.title_likelihood import TitleConfig
    from safetensors.torch import load_file, save_file

    _chain_raw_files(tmp_path / "raw")
    data = tmp_path / "data" / "amazon-beauty"
    amazon.prepare_from_raw("beauty", tmp_path / "raw", data)
    monkeypatch.setattr(folders, "CHECKPOINTS", tmp_path / "checkpoints")  # nothing written into the repository
    monkeypatch.setattr(folders, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(title_scores, "RUNS", tmp_path / "runs")  # nor over its saved title scores
    tokenizer = make_tokenizer()  # the LLM step scores a tiny random Llama, saved as a base model folder
    make_llama(tokenizer).save_pretrained(tmp_path / "tiny-llm")
    tokenizer.save_pretrained(tmp_path / "tiny-llm")
    reproduce.main(["--dataset", "beauty", "--data-dir", str(data), "--max-steps", "60", "--eval-every", "20",
                    "--batch-size", "32", "--base-model", str(tmp_path / "tiny-llm"), "--llm-val-users", "30"])
    served = RankerArtefacts.load(tmp_path / "checkpoints" / "llamarec-beauty")
    assert served.zero_shot and served.counts is not None and served.fusion.cowatch > 0
    assert served.prompt.domain == "product" and served.metrics["zero_shot"]  # the LLM's weight chosen on validation
    assert set(served.metrics["val_ndcg10_by_llm_weight"]) >= {"0.0", "1.0"} and "test" in served.metrics
    titles = served.metrics["titles"]  # title likelihood's weight chosen on the same validation rows
    assert titles["validation_rows"] == served.metrics["validation_rows"] and titles["title"]["domain"] == "product"
    assert titles["validation_sample"] == {"users": 30, "seed": 42}  # the LLM's, read from its training config
    assert served.fusion.titles == titles["weight"] and "at_weight_1" in titles["test"]
    assert set(titles["val_ndcg10_by_titles_weight"]) == {"sum", "per_token"}  # both score forms were weighed
    assert served.title == TitleConfig(**titles["title"])  # the chosen form, beside the weight
    on_validation = titles["val_at_chosen_weight"]  # how far the choice stands from weight 0, with its interval
    assert on_validation["weight"] == titles["weight"]
    by_weight = titles["val_ndcg10_by_titles_weight"]["per_token" if titles["title"]["per_token"] else "sum"]
    assert on_validation["diff"] == pytest.approx(by_weight[str(titles["weight"])] - by_weight["0.0"], abs=2e-4)
    assert on_validation["ci95_diff"][0] <= on_validation["diff"] <= on_validation["ci95_diff"][1]
    assert (tmp_path / "runs" / "title-scores" / "llamarec-beauty-test.safetensors").is_file()
    assert (tmp_path / "runs" / "candidates-beauty" / "candidates.safetensors").is_file()
    assert (tmp_path / "checkpoints" / "lrurec-beauty" / "model.safetensors").is_file()
    assert not (tmp_path / "checkpoints" / "lrurec-beauty" / "catalog.json").exists()  # no titles saved
    recipe = json.loads((tmp_path / "checkpoints" / "lrurec-beauty" / "config.json").read_text())["training"]
    assert recipe["batch_size"] == 32  # --batch-size reached the retriever's training
    # what the choosing steps wrote is what the app serves: the scored fusion, pool, prompt and counts
    pipeline_config = PipelineConfig(tmp_path / "checkpoints" / "lrurec-beauty",
                                     RankerLoadConfig(base_model=str(tmp_path / "tiny-llm"),
                                                      adapter=str(tmp_path / "checkpoints" / "llamarec-beauty")),
                                     dataset="beauty", data_dir=str(data), catalog_adapter=None, cpu_precision="fp32")
    pipeline = Pipeline.load(pipeline_config)
    prior = json.loads((tmp_path / "checkpoints" / "llamarec-beauty" / "prior.json").read_text())
    assert pipeline.fusion == FusionWeights(**{**served.metrics["fusion"], "titles": titles["weight"]})
    assert pipeline.retrieval.pool == served.metrics["pool"] == prior["pool"]
    trained_with = ranker_train.RankerTrainConfig(**served.training)
    assert pipeline.llm.prompt_config == ranker_train.prompt_config_of(trained_with)
    assert pipeline.retrieval.cowatch.config == CoWatchConfig(**prior["cowatch"])
    assert pipeline.recommend(pipeline.test_users[pipeline.test_users.ids()[0]].history).ranking is not None
    # a title weight in a zero-shot folder is the base model's, as chosen: served, and its opinion computed
    folder = tmp_path / "checkpoints" / "llamarec-beauty"
    replace(served.served, fusion=replace(served.fusion, titles=0.5)).save_pretrained(folder)
    pipeline = Pipeline.load(replace(pipeline_config, ranker=replace(pipeline_config.ranker, adapter=str(folder))))
    assert pipeline.fusion.titles == 0.5 and pipeline.llm.title_config == TitleConfig(**titles["title"])
    assert pipeline.llm.title_config.domain == "product"  # and its score form is the one validation chose
    assert pipeline.recommend(pipeline.test_users[pipeline.test_users.ids()[0]].history).titles_ms is not None
    reproduce.main(["--dataset", "beauty", "--data-dir", str(data), "--base-model", str(tmp_path / "tiny-llm"),
                    "--llm-val-users", "30"])  # a second run: the retriever is not retrained
    # the paper's recipe trained on Amazon over the served prior: validated, its weight chosen and served on top of
    # the same stage one as the zero-shot LLM (the same validation rows: the prior alone scores the same)
    config, _, _ = ranker_train.parse_args(
        ["--dataset", "beauty", "--data-dir", str(data), "--base-model", str(tmp_path / "tiny-llm"), "--retriever",
         str(tmp_path / "checkpoints" / "lrurec-beauty"), "--candidates", str(tmp_path / "runs" / "candidates-beauty"),
         "--prior", str(folder), "--over-prior", "--val-users", "30", "--output", str(tmp_path / "trained"),
         "--max-examples", "8", "--batch-size", "2", "--eval-every", "2", "--warmup-steps", "0", "--max-prompt-tokens",
         "512"])
    # served examples: what the app retrieves and keeps at the validation position of every user outside the
    # validation sample whose target it keeps, the validation users' rows never among them
    dataset = load_dataset("beauty", str(data))
    served_data = ranker_train.training_data(replace(config, examples="served", max_examples=None), dataset)
    validating = set(served_data.validation.users.tolist())
    expected = []
    for user in sorted(set(dataset.sequences) - validating):
        history, target = dataset.val_input(user)
        kept = [c.item_id for c in pipeline.retrieval.retrieve(history)[0]]
        if target in kept:
            expected.append((tuple(history), tuple(kept), kept.index(target)))
    assert [(e.history, e.candidates, e.answer_index) for e in served_data.examples] == expected and expected
    assert len(validating) == 30 and served_data.cowatch.shape == (len(expected), 20)
    metrics = ranker_train.train(config)
    served_again = RankerArtefacts.load(folder)  # as the second reproduce run chose it, the trained LLM over it
    trained = RankerArtefacts.load(tmp_path / "trained")
    assert trained.adapter is not None and trained.pool == served.pool and trained.counts is not None
    assert trained.fusion.prior == served.fusion.prior  # the co-watch prior it was chosen over, served with it
    assert metrics["validation_rows"] == titles["validation_rows"]
    assert metrics["val_ndcg10_by_llm_weight"][0.0] == pytest.approx(served.metrics["val_ndcg10_by_llm_weight"]["0.0"])
    gain, by_weight = metrics["val_at_best_positive_weight"], metrics["val_ndcg10_by_llm_weight"]
    top = max(v for w, v in by_weight.items() if w > 0)  # the best weight above 0 against none, with its interval
    assert gain["weight"] == min(w for w, v in by_weight.items() if w > 0 and v == top)
    assert gain["diff"] == pytest.approx(top - by_weight[0.0], abs=2e-4)
    assert gain["ci95_diff"][0] <= gain["diff"] <= gain["ci95_diff"][1]
    # title likelihood over the trained adapter is the base model's, the adapter off: the same scores as the
    # zero-shot folder's on the same validation rows, and the app computes it so for this folder. A few steps barely
    # move the adapter: its weights are set far from 0, so that leaving it on would show
    weights = load_file(tmp_path / "trained" / "adapter_model.safetensors")
    generator = torch.Generator().manual_seed(0)
    save_file({k: torch.randn(v.shape, generator=generator) if "lora_B" in k else v for k, v in weights.items()},
              tmp_path / "trained" / "adapter_model.safetensors")
    title_weight.main(["--dataset", "beauty", "--data-dir", str(data), "--served", str(tmp_path / "trained"),
                       "--candidates", str(tmp_path / "runs" / "candidates-beauty"), "--base-model",
                       str(tmp_path / "tiny-llm")])
    scores = {name: load_file(tmp_path / "runs" / "title-scores" / f"{name}-val.safetensors")
              for name in ("trained", "llamarec-beauty")}
    assert scores["trained"].keys() == scores["llamarec-beauty"].keys()
    for key, value in scores["trained"].items():
        assert torch.equal(value, scores["llamarec-beauty"][key]), key
    trained = RankerArtefacts.load(tmp_path / "trained")
    assert trained.base_titles and trained.adapter is not None and trained.metrics["titles"]["validation_rows"] == 30
    replaced = trained.metrics["titles"]["val_against_replaced"]  # the zero-shot folder it was trained over, scored
    assert replaced["folder"] == str(folder)  # on the same rows as that folder's own choice scored it
    assert replaced["replaced_rows_N@10"] == pytest.approx(
        served_again.metrics["titles"]["val_at_chosen_weight"]["rows_N@10"], abs=1e-4)
    replace(trained.served, fusion=replace(trained.fusion, titles=0.5)).save_pretrained(tmp_path / "trained")
    both = {name: Pipeline.load(replace(pipeline_config, ranker=replace(pipeline_config.ranker, adapter=str(path))))
            for name, path in (("trained", tmp_path / "trained"), ("zero-shot", folder))}
    assert both["trained"].fusion.titles == 0.5 and both["trained"].llm.base_titles
    history = both["trained"].test_users[both["trained"].test_users.ids()[0]].history
    asked = {name: {c.item_id: c.title_probability for c in pipeline.recommend(history, titles=True).candidates}
             for name, pipeline in both.items()}
    assert asked["trained"] == pytest.approx(asked["zero-shot"], abs=1e-6)
    recommendation = both["trained"].recommend(history)
    both["trained"].llm.base_titles = False  # the served adapter left on reads the titles otherwise
    adapter_on = both["trained"].llm.title_probabilities(recommendation.history, recommendation.candidates)
    assert not torch.allclose(adapter_on, torch.tensor([c.title_probability for c in recommendation.candidates]),
                              atol=1e-3)


def test_files_that_leave_nothing_after_the_5_core_say_so(tmp_path):
    _chain_raw_files(tmp_path / "raw", users=20)  # each item bought by about one user: the 5-core keeps nothing
    with pytest.raises(ValueError, match="nothing is left"):
        amazon.prepare_from_raw("beauty", tmp_path / "raw", tmp_path / "out")


def test_training_on_no_sequences_stops_with_a_message():
    from recsys.data.catalog import Catalog
    from recsys.data.preprocess import SequenceDataset
    from recsys.retriever.train import TrainConfig, train

    empty = SequenceDataset("beauty", {}, Catalog([], "beauty"))
    with pytest.raises(ValueError, match="no training sequences"):
        train(TrainConfig(dataset="beauty"), empty)
