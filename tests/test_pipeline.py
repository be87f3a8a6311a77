"""The pipeline on tiny models: retrieval -> verbalizer ranking, input checks, failures, the race, loading;
the test users file; the plots."""

import json

import pytest
import torch
from conftest import make_llama, make_pipeline

from recsys.errors import CheckpointError
from recsys import NUM_CANDIDATES
from recsys.data.preprocess import SequenceDataset
from recsys.data.test_users import (COMMAND, LICENSE_FILE, TEST_USERS_FILE, check_catalog, license_notice,
                                    load_test_users, write_test_users)
from recsys.demo.pages import facts
from recsys.pipeline import Pipeline, PipelineConfig
from recsys.retrieval import HistoryError, RetrievalStage
from recsys.ranker.artefacts import default_adapter
from recsys.ranker.base_model import converted_dir
from recsys.ranker.model import cpu_dtype
from recsys.plots import FONT_COLOR, TRANSPARENT, opinions_figure, timing_figure
from recsys.ranker.cowatch import CoWatchConfig, CoWatchCounts
from recsys.ranker.fusion import FusionWeights
from recsys.ranker.generation import GENERATION_INSTRUCTION, GenerationResult
from recsys.ranker.model import RankerLoadConfig
from recsys.ranker.prompt import LETTERS, PromptConfig
from recsys.ranker.served import ServedConfig
from recsys.retriever.checkpoint import DEFAULT_CHECKPOINT, save_checkpoint, train_command


def test_recommend_ranks_the_retrievers_top_20(tiny_pipeline):
    history = [1, 2, 3, 4, 5, 6]
    result = tiny_pipeline.recommend(history)
    ids, _ = tiny_pipeline.retrieval.retriever.retrieve([history], NUM_CANDIDATES)
    assert [c.item_id for c in result.candidates] == ids[0].tolist()
    assert [c.letter for c in result.candidates] == list(LETTERS)
    assert [c.retriever_rank for c in result.candidates] == list(range(1, 21))
    assert not {c.item_id for c in result.candidates} & set(history)
    assert sorted(result.ranking) == list(range(20))
    assert sum(c.llm_probability for c in result.candidates) == pytest.approx(1.0, abs=1e-5)
    ranked = result.ranked()
    assert [c.final_rank for c in ranked] == list(range(1, 21))
    assert all(a.llm_probability >= b.llm_probability for a, b in zip(ranked, ranked[1:]))  # fusion weight 0: LLM alone
    assert result.ranker_error is None and result.retrieval_ms > 0 and result.ranking_ms > 0
    for c in result.candidates:
        assert f"({c.letter}) {c.title}" in result.prompt.text


def test_probabilities_equal_a_full_forward_pass(tiny_pipeline):
    """The pipeline's verbalizer (last position only) against the full-vocabulary logits of a plain forward pass."""
    result = tiny_pipeline.recommend([7, 8, 9])
    ids = tiny_pipeline.llm.tokenizer(result.prompt.text, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = tiny_pipeline.llm.model(input_ids=ids).logits[0, -1]
    expected = torch.softmax(logits[tiny_pipeline.llm.letter_ids], dim=-1)
    got = torch.tensor([c.llm_probability for c in result.candidates])
    assert torch.allclose(got, expected, atol=1e-5)


def test_prompt_shows_the_last_history_titles(tiny_catalog, tiny_lrurec, tiny_llama, tiny_tokenizer):
    from recsys.ranker.prompt import PromptConfig

    pipeline = make_pipeline(tiny_catalog, tiny_lrurec, tiny_llama, tiny_tokenizer,
                             prompt_config=PromptConfig(max_history=5, max_title_tokens=64))
    history = list(range(1, 15))
    assert pipeline.recommend(history).prompt.history_titles == tiny_catalog.titles(history[-5:])


@pytest.mark.parametrize("history, message", [
    ([], "empty"), ([0], "Unknown item ids"), ([1, 999], "Unknown item ids"), (["x"], "item ids"),
    (list(range(1, 10)) * 600, "over the limit"),
])
def test_bad_histories_raise_a_message(tiny_pipeline, history, message):
    with pytest.raises(HistoryError, match=message):
        tiny_pipeline.recommend(history)


def test_duplicates_collapse_to_the_latest_viewing(tiny_pipeline):
    history, notices = tiny_pipeline.retrieval.check_history([3, 1, 2, 3, 1])
    assert history == [2, 3, 1]
    assert len(notices) == 1 and "collapsed" in notices[0] and tiny_pipeline.catalog.title(3) in notices[0]


def test_history_longer_than_the_window_gets_a_notice(tiny_pipeline):
    history = list(range(1, tiny_pipeline.retrieval.window + 6))
    result = tiny_pipeline.recommend(history)
    assert any(f"only the latest {tiny_pipeline.retrieval.window}" in n for n in result.notices)
    assert not {c.item_id for c in result.candidates} & set(history)  # dropped items are still never recommended


def test_history_of_almost_the_whole_catalog_returns_fewer_candidates(tiny_pipeline):
    result = tiny_pipeline.recommend(list(range(1, len(tiny_pipeline.catalog) - 4)))
    assert len(result.candidates) == 5 and sorted(result.ranking) == list(range(5))
    with pytest.raises(HistoryError, match="nothing is left"):
        tiny_pipeline.recommend(list(range(1, len(tiny_pipeline.catalog) + 1)))


def test_ranker_failure_keeps_the_retrieval_results(tiny_catalog, tiny_lrurec, tiny_llama, tiny_tokenizer):
    pipeline = make_pipeline(tiny_catalog, tiny_lrurec, tiny_llama, tiny_tokenizer)

    class BrokenModel:
        device = torch.device("cpu")

        def __call__(self, **kwargs):
            raise RuntimeError("CUDA out of memory")

    pipeline.llm.model = BrokenModel()
    result = pipeline.recommend([1, 2, 3])
    assert result.ranking is None and result.ranking_ms is None
    assert result.ranker_error == "RuntimeError: CUDA out of memory"
    assert len(result.candidates) == 20 and [c.retriever_rank for c in result.ranked()] == list(range(1, 21))
    assert pipeline.race(result).error.startswith("The verbalizer did not run")


def test_prompt_over_budget_is_a_ranker_error(tiny_catalog, tiny_lrurec, tiny_llama, tiny_tokenizer):
    from recsys.ranker.prompt import PromptConfig

    pipeline = make_pipeline(tiny_catalog, tiny_lrurec, tiny_llama, tiny_tokenizer,
                             prompt_config=PromptConfig(max_prompt_tokens=50))
    result = pipeline.recommend([1, 2])
    assert result.ranking is None and "over the budget" in result.ranker_error and result.prompt is None


def test_race_runs_generation_on_the_same_history_and_candidates(tiny_pipeline, monkeypatch):
    seen = {}

    def fake_generate(model, tokenizer, prompt, max_new_tokens, on_token=None, prefix=None, run=None):
        seen.update(prompt=prompt, max_new_tokens=max_new_tokens, prefix=prefix, run=run)
        order = list(range(len(prompt.candidate_titles)))[::-1]
        return GenerationResult(order, "\n".join(prompt.candidate_titles[i] for i in order), 77, 2.0, 0.5, 1.5)

    monkeypatch.setattr("recsys.opinions.generate_ranking", fake_generate)
    result = tiny_pipeline.recommend([4, 5, 6])
    race = tiny_pipeline.race(result)
    # the verbalizer's prompt but for the instruction: one prompt from ids
    assert seen["prompt"].text == result.prompt.text.replace(tiny_pipeline.llm.prompt_config.instruction,
                                                             GENERATION_INSTRUCTION)
    assert seen["prompt"].candidate_titles == result.prompt.candidate_titles
    assert seen["max_new_tokens"] is None  # the baseline's own budget: the shown titles' tokens
    assert seen["prefix"] is tiny_pipeline.llm.prefix_cache(GENERATION_INSTRUCTION)  # its own instruction's, built once
    assert seen["run"] is tiny_pipeline.runner  # one token at a time: Recommends run between them
    assert race.generated_ranking == list(range(20))[::-1] and race.num_generated_tokens == 77
    assert race.generation_ms == 2000.0 and race.ratio == pytest.approx(2000.0 / result.ranking_ms)
    assert race.error is None


def test_failed_baseline_is_reported(tiny_pipeline, monkeypatch):
    def failing(*args, **kwargs):
        raise ValueError("cannot parse")

    monkeypatch.setattr("recsys.opinions.generate_ranking", failing)
    race = tiny_pipeline.race(tiny_pipeline.recommend([1, 2]))
    assert race.error == "ValueError: cannot parse" and race.ratio is None and race.generated_ranking == []


def test_race_with_the_real_baseline_on_the_tiny_model(tiny_catalog, tiny_lrurec, tiny_llama, tiny_tokenizer):
    pipeline = make_pipeline(tiny_catalog, tiny_lrurec, tiny_llama, tiny_tokenizer, generation_max_new_tokens=12)
    race = pipeline.race(pipeline.recommend([1, 2, 3]))
    assert race.error is None and sorted(race.generated_ranking) == list(range(20))
    assert 0 < race.num_generated_tokens <= 12 and race.generation_ms > 0


def test_catalog_and_retriever_must_match(tiny_catalog):
    from conftest import make_lrurec

    with pytest.raises(CheckpointError, match=f"catalog of tiny has 48: the retriever was trained on other data .*"
                                              f"{train_command('tiny')}$"):
        RetrievalStage(tiny_catalog, make_lrurec(num_items=10))


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory, tiny_catalog, tiny_tokenizer, tiny_lrurec):
    """A retriever checkpoint folder (with test users) and a tiny base model folder, as the app loads them."""
    root = tmp_path_factory.mktemp("saved")
    retriever = save_checkpoint(tiny_lrurec, root / "retriever", catalog=tiny_catalog)
    dataset = SequenceDataset("tiny", {1: [1, 2, 3, 4], 2: [5, 6, 7, 8, 9]}, tiny_catalog)
    write_test_users(dataset, retriever, "the license")
    base = root / "base"
    make_llama(tiny_tokenizer).save_pretrained(base)
    tiny_tokenizer.save_pretrained(base)
    return retriever, base


def test_load_from_folders(saved_models):
    retriever, base = saved_models
    pipeline = Pipeline.load(PipelineConfig(retriever, RankerLoadConfig(base_model=str(base), adapter=None),
                                            cpu_precision="fp32"))
    assert pipeline.llm.model.dtype == torch.float32 and facts(pipeline)["quantization"].startswith("fp32 base")
    assert pipeline.llm.adapter is None and "base model ranks alone" in facts(pipeline)["adapter"]
    assert facts(pipeline)["device"] == "CPU" and "2 test users" in facts(pipeline)["test_users"]
    assert pipeline.test_users[2].history == (5, 6, 7, 8) and pipeline.test_users[2].target == 9
    assert len(pipeline.recommend([1, 2]).candidates) == 20


def test_load_with_an_adapter_reads_its_settings_and_scores_with_it(saved_models, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    retriever, base = saved_models
    adapter = tmp_path / "adapter"
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(
        r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM"))
    lora.save_pretrained(adapter)
    fusion = FusionWeights(retriever=0.5, cowatch=2.0, llm=1.0, titles=0.0)
    ServedConfig(NUM_CANDIDATES, CoWatchConfig(window=2, span=3), fusion,
                 PromptConfig(max_history=5, max_title_tokens=10, max_prompt_tokens=900)).save_pretrained(adapter)
    CoWatchCounts.from_sequences([[1, 2, 3, 4, 5], [3, 4, 6]], 48, CoWatchConfig(window=2, span=3)).save(adapter)
    pipeline = Pipeline.load(PipelineConfig(retriever, RankerLoadConfig(base_model=str(base), adapter=str(adapter)),
                                            cpu_precision="fp32"))
    assert pipeline.fusion == fusion and pipeline.llm.prompt_config.max_history == 5
    assert pipeline.retrieval.cowatch.config == CoWatchConfig(window=2, span=3)
    assert "0.5 × log p(retriever) + 2 × co-watch + 1 × log p(LLM)" in facts(pipeline)["final_ranking"]
    assert type(pipeline.llm.model).__name__ == "PeftModelForCausalLM"
    assert pipeline.llm.folded.projections == 4  # on CPU
    result = pipeline.recommend([1, 2, 3])
    assert any(c.cowatch_score > 0 for c in result.candidates)
    with torch.no_grad():  # the adapter's logits
        ids = pipeline.llm.tokenizer(result.prompt.text, return_tensors="pt").input_ids
        expected = torch.softmax(lora(input_ids=ids).logits[0, -1, pipeline.llm.letter_ids], dim=-1)
    assert torch.allclose(torch.tensor([c.llm_probability for c in result.candidates]), expected, atol=1e-4)


def test_bf16_on_cpu(saved_models, monkeypatch):
    retriever, base = saved_models
    pipeline = Pipeline.load(PipelineConfig(retriever, RankerLoadConfig(base_model=str(base)), cpu_precision="bf16"))
    assert pipeline.llm.model.dtype == torch.bfloat16 and facts(pipeline)["quantization"].startswith("bf16")
    result = pipeline.recommend([1, 2, 3])
    assert sum(c.llm_probability for c in result.candidates) == pytest.approx(1.0, abs=1e-4)
    monkeypatch.setattr("recsys.ranker.model.native_cpu_bf16", lambda: False)
    assert cpu_dtype("auto") == torch.float32 and cpu_dtype("bf16") == torch.bfloat16
    monkeypatch.setattr("recsys.ranker.model.native_cpu_bf16", lambda: True)
    assert cpu_dtype("auto") == torch.bfloat16 and cpu_dtype("fp32") == torch.float32
    with pytest.raises(ValueError, match="auto, fp32 or bf16"):
        cpu_dtype("fp8")


def test_missing_or_corrupt_checkpoints_name_the_fix(saved_models, tmp_path):
    retriever, base = saved_models
    with pytest.raises(CheckpointError, match="python -m recsys.retriever.train"):
        Pipeline.load(PipelineConfig(tmp_path / "nothing", RankerLoadConfig(base_model=str(base))))
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "model.safetensors", "catalog.json"):
        (broken / name).write_bytes((retriever / name).read_bytes())
    (broken / TEST_USERS_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match=COMMAND):
        Pipeline.load(PipelineConfig(broken, RankerLoadConfig(base_model=str(base))))
    (broken / TEST_USERS_FILE).unlink()
    pipeline = Pipeline.load(PipelineConfig(broken, RankerLoadConfig(base_model=str(base))))
    assert pipeline.test_users is None and COMMAND in facts(pipeline)["test_users"]


def test_test_users_round_trip_and_license(tmp_path, tiny_catalog):
    readme = tmp_path / "README.txt"
    readme.write_text("Summary\n=======\n\nabout\n\nUsage License\n=============\n\nBe nice.\n\n"
                      "Citation\n========\n\nCite us.\n\n\nFurther Information\n===================\n\nmore\n")
    notice = license_notice(readme)
    assert "Be nice." in notice and "Cite us." in notice and "more" not in notice
    dataset = SequenceDataset("tiny", {1: [1, 2, 3], 2: [4, 5, 6, 7]}, tiny_catalog)
    write_test_users(dataset, tmp_path, notice)
    users = load_test_users(tmp_path)
    assert users.ids() == [1, 2] and users[2].history == (4, 5, 6) and users[2].target == 7
    assert "Be nice." in users.license_text and "Be nice." in (tmp_path / LICENSE_FILE).read_text()
    with pytest.raises(KeyError):
        users[3]
    with pytest.raises(FileNotFoundError, match=COMMAND):
        load_test_users(tmp_path / "missing")


def test_test_users_refuse_a_different_catalog(tmp_path, tiny_catalog):
    from conftest import make_catalog

    make_catalog(list(reversed(tiny_catalog.titles(range(1, len(tiny_catalog) + 1))))).save(tmp_path)
    with pytest.raises(ValueError, match="does not match"):
        check_catalog(SequenceDataset("tiny", {}, tiny_catalog), tmp_path)


def test_committed_test_users_fit_the_committed_catalog():
    path = DEFAULT_CHECKPOINT / TEST_USERS_FILE
    users = load_test_users(DEFAULT_CHECKPOINT)
    num_items = len(json.loads((DEFAULT_CHECKPOINT / "catalog.json").read_text())["movies"])
    assert path.stat().st_size < 10_000_000 and len(users) == 610
    assert all(1 <= i <= num_items for u in users.by_id.values() for i in (*u.history, u.target))
    assert "GroupLens" in users.license_text and (DEFAULT_CHECKPOINT / LICENSE_FILE).is_file()


def test_default_adapter_is_used_only_when_complete():
    adapter = default_adapter()
    assert adapter is None or (adapter / "adapter_model.safetensors").is_file()


def test_opinions_figure_orders_labels_highlights_and_reads_in_both_themes():
    figure = opinions_figure(["A", "B", "C"], ["Heat (1995)", "A very long title " * 5, "Fargo (1996)"],
                             {"LLM": [0.2, 0.5, 0.3], "Retriever": [0.6, 0.3, 0.1]}, order=[1, 2, 0], highlight=2)
    llm, retriever = figure.data
    assert list(llm.x) == [0.2, 0.3, 0.5] and list(retriever.x) == [0.6, 0.1, 0.3]  # the best is drawn on top
    assert llm.y[1].startswith("(C) Fargo") and llm.y[1].endswith("★") and len(llm.y[2]) < 60
    assert figure.layout.height > 0 and figure.layout.barmode == "group"
    assert figure.layout.paper_bgcolor == TRANSPARENT and figure.layout.plot_bgcolor == TRANSPARENT
    assert figure.layout.font.color == FONT_COLOR  # neutral grey: readable on light and dark backgrounds
    three = opinions_figure(["A"], ["Heat (1995)"], {"Final": [1.0], "LLM": [1.0], "Co-watch": [1.0]}, [0])
    assert [t.name for t in three.data] == ["Final", "LLM", "Co-watch"]
    assert len({t.marker.color for t in three.data}) == 3


def test_the_unvalidated_opinions_figure_is_what_plotlys_validation_accepts_unchanged():
    """The chart is built without plotly's validation (it is drawn on every click): validated, the same spec gives
    the same figure."""
    import plotly.graph_objects as go

    figure = opinions_figure(["A", "B"], ["Heat (1995)", "Fargo (1996)"], {"Final": [0.7, 0.3], "LLM": [0.4, 0.6],
                             "Co-watch": [0.5, 0.5], "Retriever": [0.9, 0.1]}, order=[0, 1], highlight=1)
    spec = figure.to_plotly_json()
    assert json.loads(go.Figure(spec).to_json()) == json.loads(figure.to_json())  # validation raises on a bad spec


def test_timing_figure():
    figure = timing_figure({"retrieval": 5.0, "verbalizer ranking": 800.0, "generation": 12000.0})
    assert list(figure.data[0].y) == ["generation", "verbalizer ranking", "retrieval"]
    assert figure.data[0].text[0] == "12,000 ms" and figure.layout.height > 0


def test_a_zero_shot_ranker_folder_serves_the_base_model_at_its_validated_weights(saved_models, tmp_path):
    """`recsys.ranker.train --zero-shot` writes a ranker folder without adapter weights: the app serves the base
    model at the weights validation chose there, not the LLM alone; a folder with neither is refused by name."""
    retriever, base = saved_models
    folder = tmp_path / "zero-shot"
    folder.mkdir()
    fusion = FusionWeights(retriever=0.4, cowatch=0.0, llm=0.25)
    ServedConfig(NUM_CANDIDATES, CoWatchConfig(), fusion, PromptConfig(max_history=6)).save_pretrained(folder)
    pipeline = Pipeline.load(PipelineConfig(retriever, RankerLoadConfig(base_model=str(base), adapter=str(folder)),
                                            cpu_precision="fp32"))
    assert pipeline.fusion == fusion and pipeline.llm.prompt_config.max_history == 6
    assert pipeline.llm.adapter is None and not pipeline.llm.can_compare_base
    assert "zero-shot" in facts(pipeline)["adapter"]
    assert facts(pipeline)["title_likelihood"].startswith("the ranker's model")
    assert pipeline.recommend([1, 2, 3]).ranking is not None
    with pytest.raises(RuntimeError, match="is not a ranker folder"):
        Pipeline.load(PipelineConfig(retriever, RankerLoadConfig(base_model=str(base), adapter=str(tmp_path)),
                                     cpu_precision="fp32"))


def test_without_its_weights_a_ranker_folder_still_serves_its_prior(tiny_catalog, tmp_path):
    """Another base model than the adapter's: the committed prior, pool and fusion stay, the adapter is not loaded."""
    from recsys.ranker.artefacts import RankerArtefacts
    from recsys.ranker.model import DEFAULT_ADAPTER

    if default_adapter() is None or not (converted_dir() / "model.safetensors").is_file():
        pytest.skip("needs the committed adapter and the prepared default base model")
    pipeline = Pipeline.load(PipelineConfig(ranker=RankerLoadConfig(adapter=DEFAULT_ADAPTER), adapter_weights=False,
                                            catalog_adapter=None), start_on_device=False)
    saved = RankerArtefacts.load(DEFAULT_ADAPTER)
    assert pipeline.llm.adapter is None and not hasattr(pipeline.llm.model, "peft_config")
    assert pipeline.fusion == saved.fusion and pipeline.retrieval.pool == saved.pool
    assert pipeline.retrieval.cowatch is not None
    assert "beside the prior of" in facts(pipeline)["adapter"]
