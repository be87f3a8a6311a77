"""Data layer: raw files -> preprocessing -> leave-one-out splits -> catalog (MovieLens, Amazon Beauty and Games)."""

from recsys.data.catalog import Catalog
from recsys.data.preprocess import SequenceDataset
from recsys.data.sources import load_dataset

__all__ = ["Catalog", "SequenceDataset", "load_dataset"]
