"""Import-only stand-in (see scripts/gpu_stubs/README.md)."""

from .. import _Unavailable


class FigureCanvasAgg(_Unavailable):
    pass
