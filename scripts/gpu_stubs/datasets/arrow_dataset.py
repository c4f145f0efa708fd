"""Import-only stand-in (see scripts/gpu_stubs/README.md)."""


class Dataset:
    def __init__(self, *args, **kwargs):
        raise ImportError("datasets is a stand-in in the GPU check; pip install datasets to use it")
