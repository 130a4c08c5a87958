"""Internals of `experiments.input_pipeline` (import the API from there)."""
