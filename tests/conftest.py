"""Shared tiny stand-ins for the real models, built in-process: nothing is downloaded, each builds in under a second.

- `tiny_catalog`: 48 real movie titles (so presets and title search have something to find);
- `tiny_tokenizer`: a byte-level BPE tokenizer trained here on rendered prompts (any text encodes);
- `tiny_llama`: a random 2-layer Llama over that tokenizer's vocabulary;
- `tiny_lrurec`: a random small LRURec over the catalog (window of 16 items);
- `tiny_pipeline`: all of them in a `recsys.pipeline.Pipeline`, with two test users (user 1's held-out
  movie is among their candidates, user 2's is not);
- `local_server`: a static HTTP server on loopback (for downloads).
"""

from __future__ import annotations

import http.server
import threading
from functools import partial

import pytest
import torch

from recsys.data.catalog import Catalog, Item
from recsys.ranker.attention import register as register_attention

TINY_TITLES = [
    "The Terminator (1984)", "Alien (1979)", "Blade Runner (1982)", "Star Wars: Episode IV - A New Hope (1977)",
    "Back to the Future (1985)", "The Matrix (1999)", "Inception (2010)", "Interstellar (2014)",
    "The Godfather (1972)", "The Godfather: Part II (1974)", "Goodfellas (1990)", "Reservoir Dogs (1992)",
    "Pulp Fiction (1994)", "Heat (1995)", "The Usual Suspects (1995)", "Fargo (1996)", "Toy Story (1995)",
    "Toy Story 2 (1999)", "Jumanji (1995)", "Casino (1995)", "Se7en (1995)", "Babe (1995)", "Clueless (1995)",
    "Twelve Monkeys (1995)", "Braveheart (1995)", "Apollo 13 (1995)", "Batman Forever (1995)",
    "Dead Man Walking (1995)", "Sense and Sensibility (1995)", "GoldenEye (1995)", "Waiting to Exhale (1995)",
    "Sabrina (1995)", "Sudden Death (1995)", "Aliens (1986)", "Amelie (2001)", "Spirited Away (2001)",
    "The Shining (1980)", "Scream (1996)", "Notting Hill (1999)", "Love Actually (2003)", "Shrek (2001)",
    "Finding Nemo (2003)", "The Lion King (1994)", "Aladdin (1992)", "Forrest Gump (1994)", "Titanic (1997)",
    "Gladiator (2000)", "Memento (2000)",
]
GENRES = ("Action", "Comedy", "Drama", "Sci-Fi", "Crime", "Animation")


def make_catalog(titles=TINY_TITLES) -> Catalog:
    """A catalog of `titles` with ids 1..N, their years and two made-up genres each."""
    movies = [Item(i, title, int(title[-5:-1]), (GENRES[i % 6], GENRES[(i + 2) % 6]), 1000 + i)
              for i, title in enumerate(titles, start=1)]
    return Catalog(movies, "tiny")


def make_tokenizer(titles=TINY_TITLES):
    """A byte-level BPE tokenizer (vocabulary 400, <eos> and <pad>) trained on prompts rendered from `titles`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from recsys.ranker.generation import GENERATION_INSTRUCTION
    from recsys.ranker.prompt import INSTRUCTION, render

    corpus = [render(titles[:10], titles[10:30], instruction) for instruction in (INSTRUCTION, GENERATION_INSTRUCTION)]
    corpus.append("\n".join(titles))
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>")
    tokenizer.padding_side = "left"
    return tokenizer


def make_llama(tokenizer, seed: int = 0):
    """A random 2-layer Llama (hidden 64, grouped-query attention) over `tokenizer`'s vocabulary, in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True, attn_implementation=register_attention())
    return LlamaForCausalLM(config).eval()


def make_lrurec(num_items: int = len(TINY_TITLES), seed: int = 0):
    """A random small LRURec (hidden 16, state 8, window 16) in eval mode."""
    from recsys.retriever.model import LRURec, LRURecConfig

    torch.manual_seed(seed)
    return LRURec(LRURecConfig(num_items=num_items, hidden_size=16, state_size=8, num_blocks=2, max_len=16)).eval()


def make_pipeline(catalog, lrurec, llama, tokenizer, fusion=None, cowatch=None, pool=None, adapter=None,
                  prompt_config=None, generation_max_new_tokens=None, shared_results=None, fold_adapter=True):
    """A Pipeline over the tiny models with two test users: user 1's held-out movie is their 5th candidate,
    user 2's is outside their 20 candidates. Its stages are built from the keywords: `fusion` (also the pool's
    prior; default the LLM alone), `cowatch` and `pool` (retrieval), the rest (the LLM's opinions, `ServingConfig`)."""
    from recsys import NUM_CANDIDATES
    from recsys.data.test_users import TestUser, TestUsers
    from recsys.opinions import LLMOpinions
    from recsys.pipeline import Pipeline, ServingConfig
    from recsys.ranker.fusion import LLM_ALONE
    from recsys.ranker.prompt import PromptConfig
    from recsys.retrieval import RetrievalStage

    fusion = fusion or LLM_ALONE
    retrieval = RetrievalStage(catalog, lrurec, cowatch=cowatch, pool=pool or NUM_CANDIDATES, pool_weights=fusion)
    llm = LLMOpinions(llama, tokenizer, catalog, prompt_config or PromptConfig(max_title_tokens=12), adapter=adapter,
                      max_new_tokens=generation_max_new_tokens, fold_adapter=fold_adapter)
    serving = ServingConfig() if shared_results is None else ServingConfig(shared_results=shared_results)
    pipeline = Pipeline(retrieval, llm, fusion, serving)
    first, second = [1, 2, 3, 4, 5, 6], [9, 10, 11, 12, 13]
    inside = pipeline.retrieval.retrieve(first)[0][4].item_id
    top = {c.item_id for c in pipeline.retrieval.retrieve(second)[0]}
    outside = next(i for i in range(1, len(catalog) + 1) if i not in top and i not in second)
    pipeline.test_users = TestUsers([TestUser(1, tuple(first), inside), TestUser(2, tuple(second), outside)],
                                    "tiny", "license text")
    return pipeline


@pytest.fixture(scope="session")
def tiny_catalog():
    """The 48-movie catalog."""
    return make_catalog()


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """The byte-level BPE tokenizer."""
    return make_tokenizer()


@pytest.fixture(scope="session")
def tiny_llama(tiny_tokenizer):
    """The random 2-layer Llama."""
    return make_llama(tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_lrurec(tiny_catalog):
    """The random small LRURec."""
    return make_lrurec(len(tiny_catalog))


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_catalog, tiny_lrurec, tiny_llama, tiny_tokenizer):
    """A shared, read-only tiny pipeline (tests that change it build their own with `make_pipeline`)."""
    return make_pipeline(tiny_catalog, tiny_lrurec, tiny_llama, tiny_tokenizer)


@pytest.fixture(scope="session")
def tokenizer(tiny_tokenizer):
    """Short name for the tiny tokenizer, used by the generation and verbalizer-speed tests."""
    return tiny_tokenizer


@pytest.fixture(scope="session")
def model(tiny_llama):
    """Short name for the tiny Llama, used by the generation and verbalizer-speed tests."""
    return tiny_llama


@pytest.fixture
def local_server(tmp_path):
    """A static HTTP server on 127.0.0.1 serving tmp_path/www: yields (that folder, the server's URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
