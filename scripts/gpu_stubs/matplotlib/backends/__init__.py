"""Import-only stand-in (see scripts/gpu_stubs/README.md)."""
