"""Import-only stand-in for Hugging Face ``datasets`` (see scripts/gpu_stubs/README.md)."""

from .arrow_dataset import Dataset
from .iterable_dataset import IterableDataset
from .load import load_dataset

__version__ = "0+steer-lens-gpu-check-stub"
__all__ = ["Dataset", "IterableDataset", "load_dataset"]
