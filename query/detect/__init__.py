"""Detectors: pure functions that read one trace's spans and say what went wrong (registry.py lists them)."""
