"""LlamaRec re-implementation: LRURec retrieval + verbalizer-based Llama ranking."""

NUM_CANDIDATES = 20  # candidates retrieved by LRURec and ranked by the LLM (letters A..T)
MAX_HISTORY = 20  # history titles shown to the LLM ranker
