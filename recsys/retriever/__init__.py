"""Stage one: LRURec, a sequential recommender of linear recurrent units, retrieving top-k candidates."""

from recsys.retriever.model import LRURec, LRURecConfig

__all__ = ["LRURec", "LRURecConfig"]
