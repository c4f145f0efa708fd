"""Import-only stand-in for matplotlib (see scripts/gpu_stubs/README.md)."""

__version__ = "0+steer-lens-gpu-check-stub"


class _Unavailable:
    def __init__(self, *args, **kwargs):
        raise ImportError("matplotlib is a stand-in in the GPU check; pip install matplotlib to plot")
