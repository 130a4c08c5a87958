"""Studies: a grid of runs as jobs, and the records aggregated into a report.

``python -m experiments.study`` runs one (``runner``); ``launch`` puts its
jobs on a scheduler and ``plan`` estimates them; ``report`` aggregates the
cell records (with ``stats``, ``inference``, ``structure``) and ``render``
writes RESULTS.md, whose prose ``narrative`` fills in.
"""
