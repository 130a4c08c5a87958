"""CrAM, CrAM+ and SAFE against C-SAM and the best baselines, three seeds.

  python -m experiments.study --config=experiments/configs/study_peers.py \
    --workdir=workdir/study_structure

The published compression-aware flatness methods a user would pick instead
of C-SAM (experiments/training/compression.py; their departures from the
reference code in docs/method.md), plain and trained on the certified variations
(``_aug``), paired against C-SAM, HYDRA fine-tuned on the variations (the
best baseline of study_cpu) and csam_rho0_aug. Everything else is the
structure study's (experiments/configs/study_structure.py): its model,
data, budget and validation carve, its certified image set
(``image_seed`` 2027, 1,000 test images), its flatness diagnostic, its
seeds 0-2. So the pretraining is the structure study's (run with its
``--workdir`` to share it) and a cell both studies hold, with the same
config, is run once: ``reuse_dirs`` copies its record from
results/study_structure (marked ``reused_from``).

The optimizer: ``cram`` and ``safe`` train with their references'
settings (lr 0.1 after a 5-epoch warm-up, written for 200 epochs from
scratch), which in this six-epoch stage from a pretrained model means a
learning rate ten times the one every other method's weights continue
with. ``cram_ft`` and ``safe_ft`` take the dense continuation's optimizer
instead (lr 0.01, cosine, no warm-up, weight decay 5e-4), so that a
difference from ``hydra_aug`` or ``csam`` is not the learning rate's;
paired with ``cram`` / ``safe``, they measure what the optimizer alone
changes. Both are reported: neither was chosen on test images.

The CrAMs: ``cram`` is the paper's CrAM-k (the masked gradient at the
target sparsity), ``cram_plus`` CrAM+ Multi (the reference's CIFAR-10
ResNet-20 run) and ``cram_plus_k`` CrAM+-k (the clean gradient added at
the target sparsity: what the reference's single-sparsity configs run,
since every config it ships sets ``plus_version``).
"""

from __future__ import annotations

import ml_collections

from experiments.configs import study_structure

PEERS = (
  "cram",
  "safe",
  "cram_ft",
  "safe_ft",
  "cram_aug",
  "safe_aug",
  "cram_plus",
  "cram_plus_k",
)
BASELINES = ("csam", "hydra_aug", "csam_rho0_aug")


def get_config() -> ml_collections.ConfigDict:
  """Returns the peers study's config."""
  config = study_structure.get_config()
  config.name = "study_peers"
  config.study = ml_collections.ConfigDict(
    dict(
      name="study_peers",
      variants=PEERS + BASELINES,
      sparsity=0.9,
      extra_sparsities=(),
      # First tier, seed by seed: each method against C-SAM and HYDRA, with
      # the references' optimizer and with the dense continuation's.
      extra_variants=(
        "cram",
        "safe",
        "csam",
        "hydra_aug",
        "cram_ft",
        "safe_ft",
      ),
      seeds=(0, 1, 2),
      image_seed=2027,
      main_variant="csam",
      pairs=(
        ("cram_aug", "hydra_aug"),
        ("safe_aug", "hydra_aug"),
        ("cram_aug", "csam_rho0_aug"),
        ("safe_aug", "csam_rho0_aug"),
        ("cram", "hydra_aug"),
        ("safe", "hydra_aug"),
        # Issue 23 pairs each peer with csam, hydra_aug and csam_rho0_aug
        # (these two joined the family when the grid was complete).
        ("cram", "csam_rho0_aug"),
        ("safe", "csam_rho0_aug"),
        ("cram_ft", "hydra_aug"),
        ("safe_ft", "hydra_aug"),
        ("cram_ft", "cram"),  # the optimizer alone
        ("safe_ft", "safe"),
        ("cram_plus", "cram"),
        ("cram_plus_k", "cram"),
      ),
      main_distribution="semantic",
      sweep_dir=None,
      reuse_dirs=("results/study_structure",),
    )
  )
  return config
