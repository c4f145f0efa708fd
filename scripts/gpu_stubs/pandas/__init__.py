"""Import-only stand-in for pandas (see scripts/gpu_stubs/README.md)."""

__version__ = "0+steer-lens-gpu-check-stub"


class DataFrame:
    def __init__(self, *args, **kwargs):
        raise ImportError("pandas is a stand-in in the GPU check; pip install pandas to use it")
