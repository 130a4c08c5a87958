"""``python -m experiments.export``: experiments/deploy/export.py's command."""

from experiments.deploy import export

if __name__ == "__main__":
  export.run_command()
