"""Import-only stand-in (see scripts/gpu_stubs/README.md)."""

from . import _Unavailable


class Figure(_Unavailable):
    pass
