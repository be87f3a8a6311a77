"""Data layer: raw MovieLens files -> preprocessing -> leave-one-out splits -> catalog."""

from recsys.data.catalog import Catalog
from recsys.data.preprocess import SequenceDataset, load_dataset

__all__ = ["Catalog", "SequenceDataset", "load_dataset"]
