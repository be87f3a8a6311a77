"""The teaching panels: fusion explorer, base model beside the adapter, what the verbalizer reads, forgiving search."""

from __future__ import annotations


import pytest
import torch
from conftest import make_catalog, make_llama, make_pipeline

from recsys.data.catalog import Catalog, Item
from recsys.demo.handlers import DemoHandlers
from recsys.demo.visit import Visit
from recsys.demo.results import BASE_COLUMN, REVERSED_COLUMN
from recsys.data.titles import search_key
from recsys.demo.search import TitleSearch
from recsys.ranker.cowatch import CoWatchConfig, CoWatchCounts
from recsys.ranker.fusion import FusionWeights, fused_scores, order
from recsys.ranker.model import LoraSettings, add_lora
from recsys.ranker.verbalizer import letter_logits, read_next_tokens
from recsys.retriever.checkpoint import DEFAULT_CHECKPOINT, load_catalog


def adapted_llama(tokenizer, seed: int = 2):
    """A tiny Llama with a LoRA adapter that changes its outputs (B initialised non-zero)."""
    model = add_lora(make_llama(tokenizer, seed=seed), LoraSettings())
    torch.manual_seed(5)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    return model.eval()


@pytest.fixture(scope="module")
def adapted_pipeline(tiny_catalog, tiny_lrurec, tiny_tokenizer, tmp_path_factory):
    """The tiny pipeline with an adapter (folded on CPU) and co-watch counts, as `Pipeline.load` builds it."""
    sequences = [[1, 2, 3, 4, 5, 6, 7, 8], [2, 3, 9, 10, 11], [4, 12, 13, 14, 1, 2]]
    counts = CoWatchCounts.from_sequences(sequences, len(tiny_catalog), CoWatchConfig(window=3, span=5))
    return make_pipeline(tiny_catalog, tiny_lrurec, adapted_llama(tiny_tokenizer), tiny_tokenizer,
                         fusion=FusionWeights(retriever=0.5, cowatch=1.5, llm=1.0), cowatch=counts,
                         adapter=tmp_path_factory.mktemp("adapter"))


def test_fusion_explorer_moves_the_llm_and_cowatch_weights_without_a_model_call(adapted_pipeline, monkeypatch):
    handlers = DemoHandlers.of(adapted_pipeline)
    session = Visit([1, 2, 3, 4])
    shown = handlers.results.recommend(session).last
    result = shown.recommendation

    def no_model(*args, **kwargs):
        raise AssertionError("the sliders must not run the model")

    monkeypatch.setattr(adapted_pipeline.llm, "model", no_model)
    retriever_table = handlers.results.ranking_view(session, shown, 0.0, 0.0).table  # no model call: `no_model`
    assert list(retriever_table["Retriever rank"]) == list(range(1, 21)) and set(retriever_table["Change"]) == {"="}
    prior_table = handlers.results.ranking_view(session, shown, 0.0, None).table  # retriever + co-watch
    opinions = result.opinions
    prior = fused_scores(opinions, FusionWeights(0.5, 1.5, 0.0))
    assert list(prior_table["Title"]) == [result.candidates[i].title for i in order(prior)]
    assert set(prior_table["Change"]) != {"="}  # the co-watch counts move followers of 1..4 up
    _, served, chart, _ = handlers.results.ranking_view(session, shown, None, None)
    assert list(served["Title"]) == [c.title for c in result.ranked()]
    # the sliders' rounding of the served weights
    at_slider = handlers.results.ranking_view(session, shown, 1.01, 1.49).table
    assert list(at_slider["Title"]) == list(served["Title"])
    final = torch.softmax(fused_scores(opinions, adapted_pipeline.fusion), dim=-1)
    assert list(served["Final"]) == sorted((round(p, 4) for p in final.tolist()), reverse=True)
    names = [bars.name for bars in chart.data]
    assert names == ["Final", "LLM", "Co-watch", "Retriever"]
    assert all(sum(bars.x) == pytest.approx(1.0, abs=1e-5) for bars in chart.data)  # each opinion a distribution
    assert served["Co-watch evidence"].str.startswith("followed").any()
    assert prior.shape == (20,)
    # each opinion's column is that opinion alone: the weights move Final and the order, never these
    moved = handlers.results.ranking_view(session, shown, 3.0, 0.5).table.set_index("Letter")
    still = served.set_index("Letter").loc[moved.index]
    assert list(moved["Final"]) != list(still["Final"])
    for column in ("LLM", "Co-watch", "Retriever"):
        assert list(moved[column]) == list(still[column])
    lrurec = torch.softmax(torch.tensor([c.retriever_score for c in result.candidates]), dim=-1)
    assert list(served.set_index("Letter").loc[[c.letter for c in result.candidates], "Retriever"]) == [
        round(p, 4) for p in lrurec.tolist()]
    assert "each opinion alone" in handlers.results.ranking_view(session, shown).formula


def test_cowatch_evidence_names_the_film_followed_most(adapted_pipeline):
    result = adapted_pipeline.recommend([1, 2, 3, 4])
    by_id = {c.item_id: c for c in result.candidates}
    for item_id, candidate in by_id.items():
        evidence = adapted_pipeline.retrieval.cowatch.evidence([1, 2, 3, 4], item_id)
        assert candidate.cowatch_evidence == evidence
        assert (candidate.cowatch_score > 0) == (evidence is not None)
    with_evidence = [c for c in result.candidates if c.cowatch_evidence is not None]
    assert with_evidence  # followers of 1..4 in the hand-made sequences are among the candidates
    item, count = with_evidence[0].cowatch_evidence
    text = DemoHandlers.of(adapted_pipeline).results.evidence_text(with_evidence[0])
    assert text == f"followed {adapted_pipeline.catalog.title(item)} {count}×"
    assert DemoHandlers.of(adapted_pipeline).results.evidence_text(
        next(c for c in result.candidates if c.cowatch_evidence is None)) == ""


def test_reverse_check_scores_the_films_in_reverse_order(adapted_pipeline):
    handlers = DemoHandlers.of(adapted_pipeline)
    session = Visit([5, 6, 7])
    summary, _, table, chart, prompt, reading, shown, _ = handlers.results.recommend(session, None, None, False, True)
    result = shown.recommendation
    reverse = adapted_pipeline.llm.prompt_for(result.history, result.candidates[::-1])
    flipped = read_next_tokens(adapted_pipeline.llm.model, adapted_pipeline.llm.tokenizer, [reverse],
                               adapted_pipeline.llm.letter_ids)[0].probabilities.flip(0)
    assert torch.allclose(torch.tensor([c.reversed_probability for c in result.candidates]), flipped, atol=1e-6)
    assert REVERSED_COLUMN in table.columns and "Films or letters?" in reading


def test_base_model_beside_the_adapter_in_one_more_pass(adapted_pipeline, tiny_tokenizer):
    handlers = DemoHandlers.of(adapted_pipeline)
    session = Visit([5, 6, 7])
    summary, _, table, chart, prompt, reading, shown, _ = handlers.results.recommend(session, None, None, True)
    result = shown.recommendation
    base = read_next_tokens(make_llama(tiny_tokenizer, seed=2), tiny_tokenizer, [result.prompt],
                            adapted_pipeline.llm.letter_ids)[0].probabilities
    got = torch.tensor([c.base_probability for c in result.candidates])
    assert torch.allclose(got, base, atol=1e-5)  # exactly the base model, not an approximation
    with_adapter = torch.tensor([c.llm_probability for c in result.candidates])
    assert not torch.allclose(with_adapter, base, atol=1e-3)
    again = adapted_pipeline.recommend([5, 6, 7])  # the adapter is back on afterwards
    assert torch.equal(torch.tensor([c.llm_probability for c in again.candidates]), with_adapter)
    assert BASE_COLUMN in table.columns and [t.name for t in chart.data][-1] == "LLM base model (no adapter)"
    assert "the base model without the adapter" in reading
    default = adapted_pipeline.recommend([5, 6, 7])
    assert all(c.base_probability is None for c in default.candidates)  # off by default: no extra pass


def test_compare_is_refused_quietly_without_an_adapter(tiny_pipeline):
    result = tiny_pipeline.recommend([1, 2], compare_base=True)
    assert not tiny_pipeline.llm.can_compare_base and all(c.base_probability is None for c in result.candidates)


def test_verbalizer_reading_is_the_letters_share_of_the_next_token(tiny_pipeline, tiny_llama, tiny_tokenizer):
    result = tiny_pipeline.recommend([1, 2, 3])
    batch = tiny_tokenizer([result.prompt.text], return_tensors="pt")
    with torch.no_grad():
        full = torch.softmax(tiny_llama(**batch).logits[0, -1].float(), dim=-1)
    assert result.letter_mass == pytest.approx(full[tiny_pipeline.llm.letter_ids].sum().item(), rel=1e-4)
    top_token, top_probability = result.top_other_tokens[0]
    others = full.clone()
    others[tiny_pipeline.llm.letter_ids] = 0
    assert top_probability == pytest.approx(others.max().item(), rel=1e-4)
    assert top_token == tiny_tokenizer.decode([int(others.argmax())])
    logits = letter_logits(tiny_llama, tiny_tokenizer, [result.prompt.text], tiny_pipeline.llm.letter_ids)[0]
    assert torch.allclose(torch.tensor([c.llm_probability for c in result.candidates]), torch.softmax(logits, -1),
                          atol=1e-5)
    reading = DemoHandlers.of(tiny_pipeline).results.reading_markdown(result)
    assert f"{result.letter_mass:.1%}" in reading and "one forward pass" in reading


@pytest.mark.parametrize("typed, title", [
    ("Amélie", "Amelie (2001)"), ("AMELIE", "Amelie (2001)"), ("Matrix, The", "The Matrix (1999)"),
    ("the matrix", "The Matrix (1999)"), ("matrix (1999)", "The Matrix (1999)"), ("Se7en", "Se7en (1995)"),
    ("Toy Story", "Toy Story (1995)"),  # exact beats the partial "Toy Story 2 (1999)"
    ("godfather part ii", "The Godfather: Part II (1974)"),
])
def test_search_forgives_accents_case_punctuation_and_articles(typed, title):
    assert [m.title for m in TitleSearch(make_catalog()).find(typed)] == [title]


FOREIGN = [("Les Misérables (1995)", ()), ("Les Misérables (2012)", ()), ("(500) Days of Summer (2009)", ()),
           ("Das Boot (1981)", ("The Boat",)), ("Lifeboat (1944)", ()), ("The Spanish Apartment (2002)",
           ("L'Auberge espagnole",)), ("La Dolce Vita (1960)", ()), ("Die Hard (1988)", ()), ("300 (2007)", ()),
           ("The House of the Spirits (1993)", ())]


def foreign_catalog() -> Catalog:
    """Display titles as the catalog writes them (articles in front, parentheses kept) with alternative titles."""
    return Catalog([Item(i, title, int(title[-5:-1]), ("Drama",), 100 + i, alternative_titles)
                    for i, (title, alternative_titles) in enumerate(FOREIGN, start=1)], "foreign")


@pytest.mark.parametrize("typed, titles", [
    ("Les Misérables", ["Les Misérables (1995)", "Les Misérables (2012)"]),  # two films: both are exact
    ("les miserables", ["Les Misérables (1995)", "Les Misérables (2012)"]),
    ("Miserables, Les", ["Les Misérables (1995)", "Les Misérables (2012)"]),  # MovieLens's order
    ("Misérables, Les (2012)", ["Les Misérables (2012)"]),
    ("500 Days of Summer", ["(500) Days of Summer (2009)"]), ("(500) days of summer", ["(500) Days of Summer (2009)"]),
    ("the boat", ["Das Boot (1981)"]),  # an alternative title, exact: beats the partial "Lifeboat (1944)"
    ("Boat, The (1981)", ["Das Boot (1981)"]), ("Das Boot", ["Das Boot (1981)"]),
    ("Auberge espagnole, L'", ["The Spanish Apartment (2002)"]),
    ("l'auberge espagnole", ["The Spanish Apartment (2002)"]),
    ("Dolce Vita, La", ["La Dolce Vita (1960)"]),
    ("300", ["300 (2007)"]),  # digits are a title
    ("hard", ["Die Hard (1988)"]),  # foreign articles are not dropped from the front: "hard" is only partial
])
def test_search_knows_foreign_articles_and_alternative_titles(typed, titles):
    assert [m.title for m in TitleSearch(foreign_catalog()).find(typed)] == titles


def test_exact_titles_beat_partial_ones_and_partial_ones_come_prefix_first():
    search = TitleSearch(foreign_catalog())
    boat = search.search("The Boat")
    assert [m.title for m in boat.exact] == ["Das Boot (1981)"]
    assert [m.title for m in boat.partial] == ["Lifeboat (1944)"]
    assert search.search("hard").exact == []
    assert [m.title for m in search.search("boa").ranked] == ["Das Boot (1981)", "Lifeboat (1944)"]  # "boat…" first
    assert [m.title for m in search.search("s").ranked[:2]] == ["The Spanish Apartment (2002)",  # the one starting so
                                                               "(500) Days of Summer (2009)"]  # then by title
    assert [m.title for m in search.search("Les Misérables (2012)").ranked] == ["Les Misérables (2012)"]


def test_a_number_is_part_of_a_title_not_of_a_year():
    """"30" finds "300" (a title), never the films of 1930-2030 by their year; a title with its year still finds
    them."""
    search = TitleSearch(foreign_catalog())
    assert [m.title for m in search.search("30").ranked] == ["300 (2007)"]
    assert [m.title for m in search.search("19").ranked] == []
    assert [m.title for m in search.search("Die Hard 19").ranked] == ["Die Hard (1988)"]


def test_matches_name_the_alternative_title_that_found_them():
    search = TitleSearch(foreign_catalog())
    apartment = search.find("auberge")[0]
    assert search.label(apartment, "auberge") == "The Spanish Apartment (2002), also known as L'Auberge espagnole"
    assert search.label(apartment, "spanish") == "The Spanish Apartment (2002)"  # the title itself matched
    assert search.label(search.find("boat")[0], "boat") == "Das Boot (1981), also known as The Boat"
    assert search.label(search.find("lifeboat")[0], "boat") == "Lifeboat (1944)"
    assert search.label(search.find("boat")[0], "The Boat (1981)") == "Das Boot (1981), also known as The Boat"
    nine = Item(1, "Nine to Five (1980)", 1980, ("Comedy",), 1, ("9 to 5",))  # "9" is in 1980 too; found by "9 to 5"
    assert search.label(nine, "9") == "Nine to Five (1980), also known as 9 to 5"


@pytest.mark.skipif(not (DEFAULT_CHECKPOINT / "catalog.json").is_file(), reason="no committed catalog")
@pytest.mark.parametrize("typed, titles", [
    ("Les Misérables", ["Les Misérables (1995)", "Les Misérables (1998)", "Les Misérables (2012)"]),
    ("Miserables, Les (1998)", ["Les Misérables (1998)"]), ("500 Days of Summer", ["(500) Days of Summer (2009)"]),
    ("the boat", ["Das Boot (1981)"]), ("300", ["300 (2007)"]), ("Matrix, The", ["The Matrix (1999)"]),
])
def test_search_on_the_committed_catalog(typed, titles):
    assert [m.title for m in TitleSearch(load_catalog(DEFAULT_CHECKPOINT)).find(typed)] == titles


def test_search_keeps_partial_matches_when_nothing_is_exact():
    found = {m.title for m in TitleSearch(make_catalog()).find("godfa")}
    assert found == {"The Godfather (1972)", "The Godfather: Part II (1974)"}
    assert TitleSearch(make_catalog()).find("  ,.  ") == []
    assert search_key("Bug's Life, A (1998)") == search_key("A Bug’s Life (1998)") == "bugs life 1998"


def test_about_tab_gives_the_adapters_recipe_and_measured_effect(tmp_path):
    from recsys.demo.pages import training_markdown
    from recsys.ranker.artefacts import RankerArtefacts

    served = FusionWeights(0.5, 1.5, 0.0)
    assert "base model ranks alone" in training_markdown(RankerArtefacts(), served)
    assert "no training record" in training_markdown(RankerArtefacts(tmp_path, has_weights=True), served)
    training = {"examples": "heldout", "heldout_dir": "runs/heldout", "loss": "residual", "lr": 5e-4, "batch_size": 8,
                "max_history": 10, "years": False, "lora_top_layers": 10}
    row = {"subset": {"N@10": 0.36, "R@10": 0.6}, "ci95_vs_retriever_N@10": [-0.01, 0.05]}
    metrics = {"training_examples": 7000, "best_step": 300, "examples_seen_at_best": 2400, "test_users_in_subset": 119,
               "test": {"retriever": {"subset": {"N@10": 0.35, "R@10": 0.6}}, "final": row, "retriever+cowatch": row,
                        "llm_contribution": {"N@10": 0.004, "ci95_N@10": [-0.01, 0.02]}}}
    ranker = RankerArtefacts(tmp_path, FusionWeights(0.5, 1.5, 1.0), training=training, metrics=metrics,
                             has_weights=True)
    text = training_markdown(ranker, ranker.fusion)  # the weights the pipeline serves
    assert "7000 ranking tasks (the kept adapter had seen 2400)" in text and "never saw those positions" in text
    assert "LRURec's own top-20 with its scores" in text  # no pool recorded: the paper's stage one
    # trained on the served pool (None in the training config), which metrics.json records
    pooled = RankerArtefacts(tmp_path, ranker.fusion, training={**training, "pool": None},
                             metrics={**metrics, "pool": 50}, has_weights=True)
    assert "the 20 the prior keeps of LRURec's top-50 with its scores" in training_markdown(pooled, served)
    assert "plus the fixed prior" in text
    assert "no years" in text and "top 10 layers" in text and "retriever 0.5; cowatch 1.5; llm 1.0" in text
    # the test figures are the Benchmarks tab's one record, not a second copy here that could disagree with it
    assert "Benchmarks" in text and "ranker_quality.json" in text and "| Retriever (LRURec order) |" not in text


def test_evidence_prompts_carry_each_films_rank_and_count_also_reversed(adapted_pipeline):
    from dataclasses import replace

    from recsys.errors import CheckpointError
    from recsys.opinions import LLMOpinions
    from recsys.pipeline import Pipeline
    from recsys.retrieval import RetrievalStage

    config = replace(adapted_pipeline.llm.prompt_config, evidence=True)
    pipeline = make_pipeline(adapted_pipeline.catalog, adapted_pipeline.retrieval.retriever, adapted_pipeline.llm.model,
                             adapted_pipeline.llm.tokenizer, prompt_config=config, fusion=adapted_pipeline.fusion,
                             cowatch=adapted_pipeline.retrieval.cowatch)
    result = pipeline.recommend([1, 2, 3, 4], reverse_check=True)
    for letter, title, candidate in zip("ABCDEFGHIJKLMNOPQRST", result.prompt.candidate_titles, result.candidates):
        note = f"[rank {candidate.retriever_rank}, co-watch {candidate.cowatch_score:.1f}]"
        assert f"({letter}) {title} {note}\n" in result.prompt.text  # the title as cut to the budget
    assert any(c.cowatch_score >= 0.05 for c in result.candidates)  # some note shows co-watch evidence
    reverse = pipeline.llm.prompt_for(result.history, result.candidates[::-1])
    assert f"(A) {result.prompt.candidate_titles[-1]} [rank {len(result.candidates)}," in reverse.text
    assert pipeline.race(result).error is None  # the race's prompt shows the same notes (else build_prompt refuses)
    with pytest.raises(CheckpointError, match="co-watch evidence"):
        Pipeline(RetrievalStage(pipeline.catalog, pipeline.retrieval.retriever),
                 LLMOpinions(pipeline.llm.model, pipeline.llm.tokenizer, pipeline.catalog, config))


def test_title_likelihood_reads_the_catalog_adapter_and_gives_the_served_one_back(tiny_catalog, tiny_lrurec,
                                                                                    tiny_tokenizer):
    """With a catalog-pretrained adapter loaded beside the verbalizer's, the titles column is that adapter's title
    likelihood (not the verbalizer adapter's), and the verbalizer computes with its own adapter afterwards."""
    from peft import LoraConfig

    from recsys.demo.results import TITLES_COLUMN
    from recsys.opinions import CATALOG_ADAPTER_NAME
    from recsys.ranker.title_likelihood import title_log_likelihoods, title_opinion, title_texts

    model = adapted_llama(tiny_tokenizer)
    model.add_adapter(CATALOG_ADAPTER_NAME, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(9)
    for name, param in model.named_parameters():
        if f"lora_B.{CATALOG_ADAPTER_NAME}" in name:
            torch.nn.init.normal_(param, std=0.5)
    pipeline = make_pipeline(tiny_catalog, tiny_lrurec, model.eval(), tiny_tokenizer)
    before = pipeline.recommend([5, 6, 7])
    summary, _, table, chart, prompt, reading, shown, _ = DemoHandlers.of(pipeline).results.recommend(
        Visit([5, 6, 7]), None, None, False, False, True)
    result = shown.recommendation
    config = pipeline.llm.title_config
    history = title_texts(tiny_tokenizer, tiny_catalog, [5, 6, 7], config)
    titles = title_texts(tiny_tokenizer, tiny_catalog, [c.item_id for c in result.candidates], config)
    expected = {}
    with pipeline.llm.folded.unfolded():  # peft's own adapter switch over the base weights
        for adapter in (CATALOG_ADAPTER_NAME, "default"):
            model.set_adapter(adapter)
            expected[adapter] = title_opinion(*title_log_likelihoods(model, tiny_tokenizer, history, titles)).exp()
    got = torch.tensor([c.title_probability for c in result.candidates])
    assert torch.allclose(got, expected[CATALOG_ADAPTER_NAME], atol=1e-5)
    assert not torch.allclose(got, expected["default"], atol=1e-3)
    assert torch.equal(torch.tensor([c.llm_probability for c in result.candidates]),
                       torch.tensor([c.llm_probability for c in before.candidates]))  # the verbalizer's adapter is back
    assert TITLES_COLUMN in table.columns and "LLM by title likelihood" in [t.name for t in chart.data]
    assert "title likelihood" in summary


def test_titles_and_typed_text_are_shown_literally_never_as_markup(tiny_pipeline):
    """A title like M*A*S*H keeps its stars, typed Markdown or HTML is no link or tag, and typing is capped."""
    from recsys.demo.history import MAX_TYPED
    from recsys.demo.markdown import plain

    handlers = DemoHandlers.of(tiny_pipeline)
    notice = handlers.history.add(Visit(), "[free](http://example.com) <b>x</b>").notice
    assert r"\[free\](http\://example.com) \<b\>x\</b\>" in notice and "[free](" not in notice
    assert plain("see www.example.org") == r"see www\.example.org"  # no bare link either
    assert plain("M*A*S*H (1970)") == r"M\*A\*S\*H (1970)" and plain("a\n# b") == r"a \# b"
    *_, notice, matches = handlers.history.add(Visit(), "The Matrix (1999)" + "x" * 10_000)
    assert len(notice) < 2 * MAX_TYPED + 200  # the rest of a huge paste is never read


def asin_catalog() -> Catalog:
    """Products named by ASINs, two of them with the same title (as Amazon's catalogs have)."""
    return Catalog([Item(1, "The Thing", None, (), "B00002EQ9M"), Item(2, "The Thing", None, (), "B0000C8VDL"),
                    Item(3, "Thing-a-ma-jig Shampoo", None, (), "B000WE52DE")], "games")


def test_an_asin_finds_its_item_whatever_its_case_and_a_number_finds_no_movielens_id():
    search = TitleSearch(asin_catalog())
    for typed in ("B000WE52DE", " b000we52de "):
        assert search.search(typed).exact == [asin_catalog()[3]]
    assert search.find("1001") == [] and TitleSearch(make_catalog()).search("1001").exact == []  # 1001: a movieId


def test_same_named_matches_are_told_apart_by_their_ids():
    from types import SimpleNamespace

    from recsys.demo.history import HistoryHandlers

    handlers = HistoryHandlers(SimpleNamespace(catalog=asin_catalog()))  # the matches need only the catalog
    matches = handlers.suggest("thing")
    assert matches["choices"] == [("The Thing (ASIN B00002EQ9M)", "B00002EQ9M"),
                                  ("The Thing (ASIN B0000C8VDL)", "B0000C8VDL"),
                                  ("Thing-a-ma-jig Shampoo", "B000WE52DE")]
    assert handlers.suggest("b000we52de")["choices"] == [("Thing-a-ma-jig Shampoo (ASIN B000WE52DE)", "B000WE52DE")]
    item, problem = handlers.item_named("b000we52de")  # as the API's /add and /pick take it
    assert item is not None and item.item_id == 3 and problem == ""
