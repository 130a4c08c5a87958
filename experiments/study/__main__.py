"""``python -m experiments.study``: runs a study (study/runner.py)."""

from absl import app

from experiments.study import runner

app.run(runner.main)
