"""Adapters that let other libraries run their work on parallel kernels."""
