"""Datasets (manifest + Parquet catalogue + chunked map store), model input recipes, FITS input."""

from galexplore.data.dataset import (
    Dataset,
    DatasetWriter,
    append_to_dataset,
    create_dataset,
    describe,
    open_dataset,
)

__all__ = ["Dataset", "DatasetWriter", "append_to_dataset", "create_dataset", "describe", "open_dataset"]
