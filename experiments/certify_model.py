"""``python -m experiments.certify_model``: the command of
experiments/deploy/certify_model.py."""

from experiments.deploy import certify_model

if __name__ == "__main__":
  certify_model.run_command()
