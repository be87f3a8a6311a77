"""The generation baseline: parsing generated lists back into rankings, and the greedy decoding loop."""

import torch

from recsys.ranker.generation import (GENERATION_INSTRUCTION, answer_length, generate_ranking, generation_prompt,
                                      named_candidates, parse_ranking)
from recsys.ranker.prompt import PromptConfig, build_prompt
from conftest import TINY_TITLES, make_llama

CANDIDATES = ["Toy Story (1995)", "Toy Story 2 (1999)", "The Matrix (1999)", "Fargo (1996)", "Heat (1995)"]


def test_parse_exact_order():
    assert parse_ranking("\n".join(CANDIDATES), CANDIDATES) == [0, 1, 2, 3, 4]


def test_parse_reordered_with_list_markers_and_case():
    text = "1. Heat (1995)\n(B) toy story 2 (1999)\n- THE MATRIX (1999)\n  Fargo  (1996)\nA) Toy Story (1995)"
    assert parse_ranking(text, CANDIDATES) == [4, 1, 2, 3, 0]


def test_parse_partial_appends_the_rest_in_retriever_order():
    assert parse_ranking("Fargo (1996)\nThe Matrix (1999)", CANDIDATES) == [3, 2, 0, 1, 4]


def test_parse_garbage_keeps_retriever_order():
    assert parse_ranking("", CANDIDATES) == [0, 1, 2, 3, 4]
    assert parse_ranking("The answer is:\n\n###\nzzzz qqq\n42", CANDIDATES) == [0, 1, 2, 3, 4]


def test_parse_ignores_duplicates_without_stealing_a_similar_title():
    text = "Toy Story 2 (1999)\nToy Story 2 (1999)\ntoy story 2 (1999).\nToy Story 2 (199\nHeat (1995)"
    assert parse_ranking(text, CANDIDATES) == [1, 4, 0, 2, 3]


def test_parse_ignores_invented_titles():
    text = "Jurassic Park (1993)\nHeat (1995)\nThe Godfather (1972)\nFargo (1996)"
    assert parse_ranking(text, CANDIDATES) == [4, 3, 0, 1, 2]


def test_parse_fuzzy_misspelt_and_cut_titles():
    text = "The Matrx (1999)\nToy Story 2 (199"
    assert parse_ranking(text, CANDIDATES) == [2, 1, 0, 3, 4]


def test_parse_title_that_looks_like_a_list_marker():
    titles = ["A.I. Artificial Intelligence (2001)", "I. Robot (2004)"]
    assert parse_ranking("A.I. Artificial Intelligence (2001)", titles) == [0, 1]


def test_generation_ranking_is_a_permutation(model, tokenizer):
    candidates = TINY_TITLES[-20:]
    prompt = generation_prompt(tokenizer, TINY_TITLES[:4], candidates, PromptConfig(max_title_tokens=6))
    result = generate_ranking(model, tokenizer, prompt)
    assert sorted(result.ranking) == list(range(len(candidates)))
    assert 0 < result.num_generated_tokens
    assert result.prefill_seconds > 0 and result.decode_seconds > 0
    assert result.prefill_seconds + result.decode_seconds <= result.seconds


def test_generation_stops_at_the_length_of_all_titles(model, tokenizer):
    config = PromptConfig(max_title_tokens=4)
    candidates = TINY_TITLES[-6:]
    prompt = build_prompt(tokenizer, TINY_TITLES[:3], candidates, config, instruction=GENERATION_INSTRUCTION)
    budget = answer_length(tokenizer, prompt.candidate_titles)
    assert generation_prompt(tokenizer, TINY_TITLES[:3], candidates, config) == prompt
    result = generate_ranking(model, tokenizer, prompt)
    assert result.num_generated_tokens <= budget
    short = generate_ranking(model, tokenizer, prompt, max_new_tokens=3)
    assert short.num_generated_tokens <= 3


def test_greedy_loop_matches_transformers_generate(model, tokenizer):
    config = PromptConfig(max_title_tokens=6)
    prompt = build_prompt(tokenizer, TINY_TITLES[:3], TINY_TITLES[-5:], config, instruction=GENERATION_INSTRUCTION)
    result = generate_ranking(model, tokenizer, prompt, max_new_tokens=12)
    input_ids = tokenizer(prompt.text, return_tensors="pt").input_ids
    with torch.no_grad():
        reference = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                                   max_new_tokens=12, eos_token_id=tokenizer.eos_token_id,
                                   pad_token_id=tokenizer.pad_token_id)
    reference_tokens = [t for t in reference[0, input_ids.shape[1]:].tolist() if t != tokenizer.eos_token_id]
    assert tokenizer.decode(reference_tokens, skip_special_tokens=True) == result.text


def test_generation_stops_at_eos(tokenizer):
    model = make_llama(tokenizer)
    with torch.no_grad():  # make EOS the most likely token everywhere
        model.lm_head.bias = torch.nn.Parameter(torch.zeros(len(tokenizer)))
        model.lm_head.bias[tokenizer.eos_token_id] = 1e4
    result = generate_ranking(model, tokenizer, generation_prompt(tokenizer, TINY_TITLES[:3], TINY_TITLES[-5:]))
    assert result.num_generated_tokens == 0 and result.text == ""
    assert result.ranking == [0, 1, 2, 3, 4]


def test_on_token_receives_each_generated_token_as_chosen(model, tokenizer):
    config = PromptConfig(max_title_tokens=6)
    received = []
    prompt = generation_prompt(tokenizer, TINY_TITLES[:3], TINY_TITLES[-5:], config)
    streamed = generate_ranking(model, tokenizer, prompt, max_new_tokens=12, on_token=received.append)
    plain = generate_ranking(model, tokenizer, prompt, max_new_tokens=12)
    assert len(received) == streamed.num_generated_tokens == plain.num_generated_tokens > 0
    assert tokenizer.decode(received, skip_special_tokens=True) == streamed.text == plain.text


def test_named_candidates_counts_only_what_the_text_names():
    titles = ["Heat (1995)", "Fargo (1996)", "Alien (1979)"]
    text = "(A) ### Answer: (B)\n1. Fargo (1996)\nHeat (1995)\nFargo (1996)"
    assert named_candidates(text, titles) == [1, 0]
    assert parse_ranking(text, titles) == [1, 0, 2]  # the unnamed one follows in the retriever's order
    assert named_candidates("### Explanation: The answer is (B).", titles) == []


RACE_TITLES = ["The Lord of the Rings: The Fellowship of the Ring (2001)", "Heat (1995)", "Toy Story (1995)",
               "Toy Story 2 (1999)", "Amélie (2001)", "Monsters, Inc. (2001)", "Les Misérables (2012)",
               "Up (2009)", "WALL·E (2008)", "The Usual Suspects (1995)"]


def written_as_a_model_might(title: str, rng) -> str:
    """`title` as a small model writes it: any case, the year dropped, the article dropped or moved to the end,
    accents and punctuation lost, a list marker in front."""
    import unicodedata

    from recsys.data.titles import split_year

    bare, year = split_year(title)
    if rng.random() < 0.5:
        bare = unicodedata.normalize("NFKD", bare).encode("ascii", "ignore").decode().replace(":", " -")
    for article in ("The ", "Les "):
        if bare.startswith(article):
            bare = rng.choice([bare[len(article):], f"{bare[len(article):]}, {article.strip()}", bare.lower()])
    text = rng.choice([bare.upper(), bare.lower(), bare.title(), bare])
    if rng.random() < 0.5:
        text = f"{text} ({year})"
    return rng.choice(["", "1. ", "(B) ", "- ", "* "]) + text


def test_the_parser_reads_titles_in_any_case_with_or_without_articles_years_and_punctuation():
    import random

    rng = random.Random(0)
    for _ in range(50):
        order = rng.sample(range(len(RACE_TITLES)), len(RACE_TITLES))
        text = "\n".join(written_as_a_model_might(RACE_TITLES[i], rng) for i in order)
        assert named_candidates(text, RACE_TITLES) == order, text


def test_the_parser_reads_the_titles_a_line_names_in_its_order():
    text = ("My ranking: Toy Story 2, then toy story and HEAT!\n"
            "The Lord of the Rings: The Fellowship of the Ring, because it is an epic\nup")
    assert named_candidates(text, RACE_TITLES) == [3, 2, 1, 0, 7]
    # a short title is named only as a whole line: "up" inside a sentence is a word, not the film
    assert named_candidates("Pick it up later", RACE_TITLES) == []
