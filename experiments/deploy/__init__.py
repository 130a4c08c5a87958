"""Deployment: exported artifacts, compact inference models, certify-any-model.

The entry points stay ``python -m experiments.export`` and
``python -m experiments.certify_model``.
"""
