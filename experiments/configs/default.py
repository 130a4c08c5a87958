"""Default configuration: every hyperparameter of the harness lives here.

The other configs (``cifar10c.py``, ``quickstart.py`` ...) start from
``get_config()`` below and override fields. Any field can be overridden on the
command line, e.g.::

  python -m experiments.main --config=experiments/configs/cifar10c.py \
    --config.sparsity=0.95 --config.search.csam.rho=0.1 \
    --config.methods=dense,hydra,csam

Epoch budget (the same for every method): each method runs
``pretrain.epochs + search.epochs + finetune.epochs`` epochs in total.

  dense      pretrain (SGD)        -> dense continuation (search+finetune ep.)
  dense_sam  pretrain (SAM)        -> dense SAM continuation (search+finetune)
  sam_prune  pretrain (SAM)        -> one-shot prune -> finetune (search+fine.)
  prune_sam  pretrain (SGD)        -> one-shot prune -> SAM finetune (s.+f.)
  gmp        pretrain (SGD)        -> gradual pruning (search ep.) -> finetune
  hydra      pretrain (SGD)        -> HYDRA score search (search ep.) -> finet.
  csam       pretrain (SGD)        -> C-SAM mask search (search ep.) -> finet.

The two pretraining runs (SGD and SAM) are computed once per work directory
and shared by the methods that start from them. ``config.methods`` defaults
to these seven (``methods.METHODS``); the compression-aware trainings of
``methods.ALL_METHODS`` run only when named:

  cram       pretrain (SGD)        -> CrAM training (search+finetune ep.)
                                   -> one-shot prune + BN re-tuning
  cram_plus  the same with CrAM+ Multi (the reference's CIFAR run)
  safe       pretrain (SGD)        -> SAFE training (search+finetune ep.)
                                   -> projection + BN re-tuning
"""

from __future__ import annotations

import ml_collections

from experiments import input_pipeline
from experiments.configs import certify_config, corruptions_config
from experiments.robustness import flatness, samplers
from experiments.training import methods


def optimizer_config(
  learning_rate: float,
  *,
  name: str = "sgd",
  momentum: float = 0.9,
  nesterov: bool = False,
  weight_decay: float = 5e-4,
  schedule: str = "cosine",
  warmup_epochs: float = 0.0,
  grad_clip_norm: float = 0.0,
) -> ml_collections.ConfigDict:
  """Returns one stage's optimizer section.

  Args:
    learning_rate: peak learning rate.
    name: "sgd", "adam" or "adamw".
    momentum: SGD momentum (0 disables it); Adam's b1 is left at its default.
    nesterov: Nesterov momentum for SGD.
    weight_decay: decoupled (adamw) or L2-into-gradient (sgd, adam) decay.
    schedule: "cosine", "constant", "linear" (to zero) or "step" (x0.1 at
      50% and 75% of the stage).
    warmup_epochs: linear warm-up from 0 over this many epochs.
    grad_clip_norm: clip gradients to this global norm (0 disables it).

  Returns:
    A ConfigDict with those fields.
  """
  return ml_collections.ConfigDict(
    dict(
      name=name,
      learning_rate=learning_rate,
      momentum=momentum,
      nesterov=nesterov,
      weight_decay=weight_decay,
      schedule=schedule,
      warmup_epochs=warmup_epochs,
      grad_clip_norm=grad_clip_norm,
    )
  )


def search_config() -> ml_collections.ConfigDict:
  """The mask-search section (HYDRA and C-SAM)."""
  return ml_collections.ConfigDict(
    dict(
      epochs=20.0,
      num_steps=0,
      # Optimizer of the mask scores (no weight decay on scores by default).
      optimizer=optimizer_config(0.1, weight_decay=0.0),
      # Joint mode: also update the weights with their plain gradient.
      update_weights=False,
      # Frozen weights but trainable BatchNorm scale/bias (with the scores'
      # optimizer), as HYDRA's reference code; ignored in joint mode.
      train_batchnorm=False,
      weight_optimizer=optimizer_config(0.01),
      hydra=ml_collections.ConfigDict(
        dict(
          init="hydra",
          forward="ste",
          # Rank |score| instead of the score, as HYDRA's reference code
          # (top-k of popup_scores.abs(), gradient times sign(score)). The
          # two differ only once scores turn negative; False keeps earlier
          # results (variant hydra_ref sets True).
          rank_by_abs=False,
        )
      ),
      csam=ml_collections.ConfigDict(
        dict(
          # Defaults from the one-seed sweep (results/study_sweep/RESULTS.md:
          # CIFAR-10 subset, ResNet-18 width 0.125, sparsity 0.9, 500
          # certified images; CC-Cert certified accuracy at 1e-2, centre
          # 22.2%): the best measured setting, the centre with lam_cert 3
          # (25.2%, +3.0 points [+0.8, +5.2], McNemar p = 0.014).
          # init "hydra" (percentile, the CAR description: 15.6%;
          # magnitude: 12.6%).
          init="hydra",  # "percentile" | "hydra" | "magnitude"
          tau=ml_collections.FieldReference(None, field_type=float),
          # "ste" (soft forward + consistency term: 24.6%, p = 0.13; not
          # adopted: together with lam_cert 3 and the running hinge it fell
          # to 21.0%).
          forward="ste",  # "soft" | "ste"
          # rho 0.05 (0.01: 22.0%, 0.2: 21.0%).
          rho=0.05,
          # The paper gives both radii: "global" (the plain SAM formula) and
          # "layerwise" (S2AP's rho * ||C_l|| per layer). The layerwise
          # radius broke the search in the sweep (search cross-entropy 1.45
          # vs 1.07; certified 13.4% vs 22.2%, p < 1e-6): "global".
          radius="global",  # "global" | "layerwise"
          # What the perturbation acts on (docs/method.md, "Structural
          # perturbations"): "scores" (SAM on the soft masks, C + e) or
          # "hard_swap" (the ascent point is the hard mask with flip_target
          # of every layer's kept entries swapped along the gradient).
          perturbation="scores",  # "scores" | "hard_swap"
          # > 0: the fraction of kept entries the perturbation flips at
          # every step. "scores": the radius is chosen each step so that
          # TopK(C + e) drops this fraction (rho is then unused; global
          # radius only); "hard_swap": the swapped fraction. 0: the fixed
          # radius rho ("scores"; "hard_swap" needs > 0).
          flip_target=0.0,
          # "gradient" (sharpness-aware) or "random" (the control: a
          # Gaussian direction with the same radius or flip count).
          direction="gradient",  # "gradient" | "random"
          # lam_cert 3: 25.2% (1: 22.2%, 0.3: 19.6%).
          lam_cert=3.0,
          # BatchNorm of the hinge's two predictions: "batch" (each pass
          # with its own batch statistics, train mode) or "running" (the
          # running statistics the certified model uses; one more forward
          # pass). Measured in the sweep: "running" 23.4% vs 22.2% (+1.2
          # points [-0.8, +3.2], p = 0.33: not distinguishable at 500
          # images), and the combination that included it certified less;
          # "batch" stays, 1.5x cheaper per search step.
          hinge_bn="batch",  # "batch" | "running"
          # The soft/hard consistency term matters for the "soft" forward
          # (the trained soft mask must match the deployed hard one); with
          # the default "ste" forward the loss already sees the hard mask,
          # so the term is off by default. Set > 0 with forward="soft".
          lam_cons=0.0,
          kappa=0.0,
          # Input variations x_T for the certification hinge, drawn per
          # example by the sampler of this kind
          # (experiments/robustness/samplers.py): "semantic" (the composed
          # families of variations.ranges), one family, "corruptions"
          # (CIFAR-10-C) or "none" (no hinge term).
          distribution="semantic",
          # The samplers' parameters: the same section as
          # config.certify.variations (CC-Cert's ranges and conventions).
          variations=samplers.get_config(),
        )
      ),
    )
  )


def cram_config() -> ml_collections.ConfigDict:
  """CrAM / CrAM+ (experiments/training/compression.py): the reference's
  CIFAR-10 ResNet-20 settings (IST-DASLab/CrAM,
  cifar10_resnet20_cram_plus_multi_ spgrad.yaml and its run script)."""
  return ml_collections.ConfigDict(
    dict(
      # Ascent radius: e = rho * g (not normalised, the reference's
      # default grad_norm=False; normalize=True divides by ||g|| + 1e-12).
      rho=0.2,
      normalize=False,
      # cram: add the clean gradient g0 to the masked one (CrAM+-k: the
      # reference's plus_version, on in every config it ships; the paper's
      # CrAM-k without it). cram_plus always adds it.
      plus=False,
      # cram_plus: the sparsity of each step's compression, drawn
      # uniformly (cram compresses at config.sparsity); must hold
      # config.sparsity, the sparsity it is pruned to at the end.
      sparsities=(0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
      # Mask the gradient at the compressed point (reference sparse_grad).
      sparse_grad=True,
      # torch SGD with L2 weight decay on every parameter; the reference
      # steps its 5-epoch warm-up and cosine once per epoch, this schedule
      # once per step.
      optimizer=optimizer_config(0.1, weight_decay=5e-4, warmup_epochs=5.0),
      # BN re-tuning after the one-shot pruning: running statistics reset
      # to mean 0 / variance retune_variance (PyTorch's
      # reset_running_stats), then retune_batches train-mode forward
      # passes of the training stream (momentum 0.1), as the reference's
      # fix_bn_stats(iters=100).
      retune_batches=100,
      retune_variance=1.0,
    )
  )


def safe_config() -> ml_collections.ConfigDict:
  """SAFE (experiments/training/compression.py): the reference's CIFAR-10
  settings (LOG-postech/safe-jax, scripts/cifar10_resnet20.sh and train.py's
  flag defaults); the target sparsity is config.sparsity (the script's 0.95)."""
  return ml_collections.ConfigDict(
    dict(
      # Final penalty coefficient and its ramp lambda_t from 0 ("cosine":
      # lam (1 - cos(pi t / T)) / 2 over the stage's T steps).
      lam=1e-3,
      schedule="cosine",  # "cosine" | "linear" | "constant"
      # Normalised SAM ascent radius.
      rho=0.1,
      # Steps between the z/u (projection and dual) updates.
      dual_every=32,
      # False: the intended ADMM update (penalty on the prunable kernels,
      # biases trained). True: the reference code's behaviour, a side
      # effect of aliasing in its only_weights (docs/method.md): every bias
      # (BatchNorm shift, dense bias) zeroed and held at 0, and the penalty
      # on every non-bias leaf (BatchNorm scales pulled towards their value
      # at the last z/u update).
      hold_biases_at_zero=False,
      # chain(add_decayed_weights(1e-4), sgd(0.1, momentum 0.9)); warm-up
      # from 0 over 5 epochs, then cosine to 0 at the end of the stage (the
      # reference's reaches 0 five epochs early, optax decay_steps).
      optimizer=optimizer_config(0.1, weight_decay=1e-4, warmup_epochs=5.0),
      # BN re-tuning after the final projection: mean and variance reset to
      # 0 (the reference's zeros_like), then 79 train-mode forward batches
      # of the training stream (momentum 0.1): 10,000 images at 128.
      retune_batches=79,
      retune_variance=0.0,
    )
  )


def get_config() -> ml_collections.ConfigDict:
  """Returns the default (CIFAR-10, ResNet-18, sparsity 0.9) configuration."""
  config = ml_collections.ConfigDict()
  config.name = "default"
  config.seed = 0
  # Refuse to reuse a work directory that holds results of another config
  # unless this is True (then the old checkpoints and results are deleted).
  config.overwrite = False
  # JAX's persistent compilation cache (experiments.main): None for
  # $XDG_CACHE_HOME/csam_jax/jax_cache (~/.cache/... when unset), a path, or
  # "" for off. It changes how fast programs are obtained, never what they
  # compute, so it may differ between a run and its resume.
  config.compilation_cache_dir = ml_collections.FieldReference(
    None, field_type=str
  )
  config.methods = methods.METHODS

  config.model = ml_collections.ConfigDict(
    dict(
      name="resnet18",
      width=1.0,
      stem="cifar",
      dtype="float32",
      # PRNG of the parameter initialisation
      # (experiments.training.state.init_key): "rbg" (default; compiles ~2x
      # faster than threefry for the bigger models), "unsafe_rbg", or "threefry"
      # (the initialisation before this field existed: set it to reproduce
      # earlier results of a seed; "rbg" draws other initial weights for the
      # same seed).
      init_prng="rbg",
    )
  )
  # experiments/input_pipeline/spec.py documents the fields.
  config.data = input_pipeline.get_default_data_config()
  config.data.update(
    dict(
      source="tfds",
      name="cifar10",
      image_size=32,
      channels=3,
      train_split="train",
      eval_split="test",
      validation_fraction=0.0,
      augment="cifar",
      num_classes=10,
      shuffle_buffer=10_000,
    )
  )
  # Global batch size (all devices and processes); must divide evenly.
  config.batch_size = 128

  # Pruning target, shared by every pruning method.
  config.sparsity = 0.9
  config.scope = "global"  # "global" | "layer"
  config.structure = "unstructured"  # "unstructured" | "channel" | "N:M"

  # Weight-space SAM (dense_sam, sam_prune's pretraining, prune_sam's
  # fine-tuning); csam_jax.csam_transform over all weights.
  config.sam = ml_collections.ConfigDict(dict(rho=0.05, radius="global"))

  # num_steps > 0 overrides epochs (used by tests and smoke runs).
  config.pretrain = ml_collections.ConfigDict(
    dict(epochs=100.0, num_steps=0, optimizer=optimizer_config(0.1))
  )
  config.search = search_config()
  config.gmp = ml_collections.ConfigDict(
    dict(
      optimizer=optimizer_config(0.01),
      initial_sparsity=0.0,
      # Pruning runs from begin to end (fractions of the gmp stage), masks
      # are recomputed every update_every steps (Zhu & Gupta 2017).
      begin_fraction=0.0,
      end_fraction=0.75,
      update_every=100,
    )
  )
  config.cram = cram_config()
  config.safe = safe_config()
  config.finetune = ml_collections.ConfigDict(
    dict(
      epochs=20.0,
      num_steps=0,
      optimizer=optimizer_config(0.01),
      # Fine-tune (and the dense continuation) on inputs varied by the
      # sampler of search.csam.distribution / .variations, as data
      # augmentation: the baselines that
      # see the distribution C-SAM's hinge trains on (variants *_aug).
      augment_variations=False,
    )
  )

  config.checkpoint = ml_collections.ConfigDict(
    dict(enabled=True, every_steps=1000, max_to_keep=2)
  )
  config.logging = ml_collections.ConfigDict(
    dict(log_every_steps=100, tensorboard=True)
  )
  config.evaluation = ml_collections.ConfigDict(
    dict(
      batch_size=500,
      max_examples=ml_collections.FieldReference(None, field_type=int),
      # Clean accuracy (hard masks) after every stage, in the stage records.
      every_stage=True,
      # The split of the final clean accuracy, certification and the
      # structural-flatness diagnostic: "eval" (the test split) or
      # "validation" (carved from the training split by
      # data.validation_fraction; where settings are chosen).
      split="eval",
      # Seed of the certified / corruption / flatness image subsets; None:
      # the run's seed (each seed its own images). A study sets one.
      image_seed=ml_collections.FieldReference(None, field_type=int),
    )
  )
  config.certify = certify_config.get_certify_config()
  config.corruptions = corruptions_config.get_corruptions_config()
  # The structural-flatness diagnostic of every pruned model
  # (experiments/robustness/flatness.py): off by default, the studies turn it
  # on.
  config.flatness = flatness.get_config()
  return config
