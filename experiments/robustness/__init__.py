"""Robustness evaluation of a trained, pruned model.

``evaluation`` (clean accuracy with hard masks), ``certification`` (certified
accuracy under the input-variation distributions that ``samplers`` builds),
``corruption_eval`` (CIFAR-10-C) and ``flatness`` (mask swaps).
"""
