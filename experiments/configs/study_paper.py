"""The paper's full setting as a study, for an accelerator.

One command per dataset (and model), e.g.::

  python -m experiments.study \
    --config=experiments/configs/study_paper.py:cifar10c
  python -m experiments.study \
    --config=experiments/configs/study_paper.py:cifar10c/googlenet
  python -m experiments.study \
    --config=experiments/configs/study_paper.py:flowers102/mobilenet_v2
  python -m experiments.study \
    --config=experiments/configs/study_paper.py:celebahq \
    --config.data.manual_dir=/path/to/celeba_hq_folder

The argument is ``<dataset>[/<model>]``: dataset ``cifar10c`` (full
CIFAR-10, certified under the CC-Cert families and the CIFAR-10-C
corruptions, corruption accuracy 15 x 5), ``flowers102`` or ``celebahq``
(their experiment configs); model ``resnet18`` (default), ``googlenet`` or
``mobilenet_v2``. Every variant of `VARIANTS_AT_MAIN` and dense_aug at
sparsity 0.9, C-SAM and the two strongest baselines of the CPU study
(HYDRA with and without augmentation) also at 0.8 and 0.95, three seeds;
results go to ``results/paper_<dataset>_<model>/``.

Wall time per cell on one GPU: not yet measured, only estimated. For
CIFAR-10 / ResNet-18, assuming 4,000-5,000 training images/s on one
H100-class GPU (an assumption, to be replaced by ``benchmarks/gpu.sh``'s
measured epoch times): 40 post-pretraining epochs of 50,000 images take
7-8 min per cell (SAM and C-SAM steps cost about twice an SGD step: up to
15 min), the shared pretraining (100 epochs) 17-21 min per seed, and
certification (500 images x 1,000 draws x 8 distributions = 4 M forward
passes) a few minutes more.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import celebahq, cifar10c, flowers102, study_cpu

DATASETS = {
  "cifar10c": cifar10c.get_config,
  "flowers102": flowers102.get_config,
  "celebahq": celebahq.get_config,
}
MODELS = ("resnet18", "googlenet", "mobilenet_v2")


def get_config(arg: str = "cifar10c") -> ml_collections.ConfigDict:
  """Returns the paper study of ``<dataset>[/<model>]``.

  Raises:
    ValueError: an unknown dataset or model (the valid ones are named).

  Example:
    >>> cfg = get_config("flowers102/googlenet")
    >>> cfg.study.name, cfg.model.name, cfg.data.name
    ('paper_flowers102_googlenet', 'googlenet', 'oxford_flowers102')
  """
  dataset, _, model = arg.partition("/")
  model = model or "resnet18"
  if dataset not in DATASETS:
    raise ValueError(
      f"study_paper: unknown dataset {dataset!r}; valid: {tuple(DATASETS)}"
    )
  if model not in MODELS:
    raise ValueError(f"study_paper: unknown model {model!r}; valid: {MODELS}")
  config = DATASETS[dataset]()
  config.model.name = model
  name = f"paper_{dataset}_{model}"
  config.name = name
  config.study = ml_collections.ConfigDict(
    dict(
      name=name,
      variants=(*study_cpu.VARIANTS_AT_MAIN, "dense_aug"),
      sparsity=0.9,
      extra_sparsities=(0.8, 0.95),
      # As in study_cpu: the two baselines that certified most there.
      extra_variants=("csam", "hydra_aug", "hydra"),
      seeds=(0, 1, 2),
      main_variant="csam",
      pairs=study_cpu.PAIRS,
      main_distribution="semantic",
    )
  )
  return config
