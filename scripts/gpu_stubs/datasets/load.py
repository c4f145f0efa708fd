"""Import-only stand-in (see scripts/gpu_stubs/README.md)."""


def load_dataset(*args, **kwargs):
    raise ImportError("datasets is a stand-in in the GPU check; pip install datasets to use it")
