"""Named variants: a method plus config overrides, defined once.

A study compares variants, not only methods: the seven methods as they
are, C-SAM's ablations (where does a gain come from?) and baselines in the
setting of their reference code. Each variant is one `Variant` in
`VARIANTS`; `variant_config` applies it to an experiment config.

  ==================  =========  =========================================
  variant             method     overrides
  ==================  =========  =========================================
  dense ... csam      itself     none (the harness's defaults)
  cram, cram_plus,    itself     none (run only when named: not in
  safe                           methods.METHODS)
  cram_aug,           itself     finetune.augment_variations: trained
  cram_plus_aug,                 (and re-tuned) on C-SAM's input
  safe_aug                       variations (augmentation)
  cram_ft,            itself     <section>.optimizer: the dense
  cram_plus_ft,                  continuation's optimizer (lr 0.01,
  safe_ft                        cosine, no warm-up, weight decay 5e-4)
                                 instead of the references' from-scratch
                                 lr 0.1 after a 5-epoch warm-up
  cram_plus_k         cram       cram.plus: CrAM+-k, the clean gradient
                                 added at the one target sparsity (the
                                 reference's single-sparsity runs)
  safe_ref            safe       safe.hold_biases_at_zero: the reference
                                 code's biases held at 0
  csam_rho0           csam       search.csam.rho = 0: no mask perturbation
  csam_no_cert        csam       search.csam.lam_cert = 0: no hinge
  csam_car            csam       the CAR description: percentile init,
                                 soft forward, consistency term on
  csam_global         csam       search.csam.radius = "global" (the default
                                 since the sweep: kept so older records
                                 mean the same)
  hydra_aug           hydra      finetune.augment_variations: fine-tuned
                                 on C-SAM's input variations (augmentation)
  csam_aug            csam       the same for C-SAM's fine-tuning: does the
                                 mask search add to augmentation?
  csam_rho0_aug       csam       rho = 0 and fine-tuned on the variations:
                                 the hinge and augmentation without the
                                 perturbation (two passes a step, not four)
  dense_aug           dense      the same for the dense continuation
  hydra_layer         hydra      scope = "layer": per-layer top-k (of the
                                 score; HYDRA's reference ranks |score|,
                                 see hydra_ref)
  hydra_ref           hydra      HYDRA's reference settings: per-layer
                                 top-k on |score|, BatchNorm trainable in
                                 the search, score weight decay 1e-4
  gmp_layer           gmp        scope = "layer": per-layer magnitude
                                 pruning (Zhu & Gupta)
  csam_f<p>           csam       flip-targeted radius: p% of the kept
                                 entries flipped at every step
  csam_rand_f<p>      csam       the same flip count along a random
                                 direction (the noise control)
  csam_swap_f<p>      csam       the ascent point is the hard mask with p%
                                 of each layer swapped along the gradient
  csam_randswap_f10   csam       a random hard-mask swap of 10%
  csam_nocert_f<p>,   csam       without the hinge (flip-targeted; no
  csam_nocert_rho0               perturbation: the [0, 1] projection alone)
  csam_soft,          csam       soft forward + consistency, with and
  csam_soft_rho0                 without the perturbation
  sweep_*             csam       the one-seed sweep that sets C-SAM's
                                 defaults (experiments/configs/
                                 study_sweep.py): `SWEEP_BASE` with one
                                 field changed, every swept field written
                                 out so a record means the same whatever
                                 the defaults become
  ==================  =========  =========================================
"""

from __future__ import annotations

import types
from typing import Any, NamedTuple

import ml_collections

from experiments.training import methods


class Variant(NamedTuple):
  """A method and the config fields it overrides (dotted paths)."""

  method: str
  overrides: types.MappingProxyType
  description: str


def _variant(method: str, description: str, **overrides: Any) -> Variant:
  flat = {k.replace("__", "."): v for k, v in overrides.items()}
  return Variant(method, types.MappingProxyType(flat), description)


# The fields in which the compression-aware methods' reference optimizers
# differ from the harness's fine-tuning optimizer (default.py).
FINETUNE_OPTIMIZER = dict(
  learning_rate=0.01, warmup_epochs=0.0, weight_decay=5e-4
)


# The sweep's centre: global radius (the layerwise default was reported not
# to search at the study's scale), the other fields at their defaults.
SWEEP_BASE = dict(
  search__csam__radius="global",
  search__csam__rho=0.05,
  search__csam__init="hydra",
  search__csam__forward="ste",
  search__csam__lam_cert=1.0,
  search__csam__lam_cons=0.0,
  search__csam__hinge_bn="batch",
  search__optimizer__learning_rate=0.1,
)


def _sweep(description: str, **change: Any) -> Variant:
  unknown = set(change) - set(SWEEP_BASE)
  if unknown:
    raise ValueError(f"sweep fields not in SWEEP_BASE: {sorted(unknown)}")
  return _variant("csam", description, **{**SWEEP_BASE, **change})


# In the order the sweep runs them (the most consequential first, so a
# sweep cut short still answers the questions that matter most).
SWEEP: dict[str, Variant] = {
  "sweep_base": _sweep("sweep centre: global radius, rho 0.05"),
  "sweep_layerwise": _sweep(
    "layerwise radius", search__csam__radius="layerwise"
  ),
  "sweep_hinge_running": _sweep(
    "hinge under running BatchNorm statistics",
    search__csam__hinge_bn="running",
  ),
  "sweep_rho0.2": _sweep("rho 0.2", search__csam__rho=0.2),
  "sweep_rho0.01": _sweep("rho 0.01", search__csam__rho=0.01),
  "sweep_lr0.3": _sweep(
    "mask learning rate 0.3", search__optimizer__learning_rate=0.3
  ),
  "sweep_lr0.03": _sweep(
    "mask learning rate 0.03", search__optimizer__learning_rate=0.03
  ),
  "sweep_cert3": _sweep("lam_cert 3", search__csam__lam_cert=3.0),
  "sweep_soft": _sweep(
    "soft forward, consistency term on",
    search__csam__forward="soft",
    search__csam__lam_cons=1.0,
  ),
  "sweep_init_percentile": _sweep(
    "percentile init", search__csam__init="percentile"
  ),
  "sweep_cert0.3": _sweep("lam_cert 0.3", search__csam__lam_cert=0.3),
  "sweep_init_magnitude": _sweep(
    "magnitude init", search__csam__init="magnitude"
  ),
  # The C-SAM settings that certified above the centre, together (a check
  # that they do not interfere before they become the defaults). The mask
  # learning rate stays 0.1: search.optimizer is HYDRA's too.
  "sweep_chosen": _sweep(
    "lam_cert 3, soft forward + consistency, running hinge",
    search__csam__lam_cert=3.0,
    search__csam__forward="soft",
    search__csam__lam_cons=1.0,
    search__csam__hinge_bn="running",
  ),
}


def _flip(target_pct: float, **more: Any) -> dict[str, Any]:
  """Overrides of a flip-targeted perturbation (target in percent)."""
  return dict(search__csam__flip_target=target_pct / 100, **more)


# The structure study (experiments/configs/study_structure_sweep.py): mask-
# space sharpness where it changes structure, and the controls that say
# why. A flip-targeted radius flips the given percentage of kept entries
# at every step (csam_jax.flip_targeted_radius); "swap" perturbs the hard
# mask itself (csam_jax.swap_transform); "rand" replaces the gradient
# direction by Gaussian noise with the same flip count.
STRUCTURE: dict[str, Variant] = {
  **{
    f"csam_f{pct:g}": _variant(
      "csam",
      f"flip-targeted radius: {pct:g}% of kept entries flipped a step",
      **_flip(pct),
    )
    for pct in (0.3, 1, 3, 10)
  },
  **{
    f"csam_rand_f{pct:g}": _variant(
      "csam",
      f"random direction, {pct:g}% of kept entries flipped a step",
      **_flip(pct, search__csam__direction="random"),
    )
    for pct in (1, 10)
  },
  **{
    f"csam_swap_f{pct:g}": _variant(
      "csam",
      f"hard-mask swap: {pct:g}% of each layer's kept entries swapped "
      "along the gradient",
      **_flip(pct, search__csam__perturbation="hard_swap"),
    )
    for pct in (1, 10)
  },
  "csam_randswap_f10": _variant(
    "csam",
    "random hard-mask swap of 10% of each layer's kept entries",
    **_flip(
      10,
      search__csam__perturbation="hard_swap",
      search__csam__direction="random",
    ),
  ),
  **{
    f"csam_nocert_f{pct:g}": _variant(
      "csam",
      f"no hinge, flip-targeted radius {pct:g}%",
      **_flip(pct, search__csam__lam_cert=0.0),
    )
    for pct in (1, 10)
  },
  "csam_nocert_rho0": _variant(
    "csam",
    "no hinge, no perturbation: HYDRA's search with scores in [0, 1]",
    search__csam__lam_cert=0.0,
    search__csam__rho=0.0,
  ),
  "csam_soft": _variant(
    "csam",
    "soft forward + consistency term, rho 0.05",
    search__csam__forward="soft",
    search__csam__lam_cons=1.0,
  ),
  "csam_soft_rho0": _variant(
    "csam",
    "soft forward + consistency term, no perturbation",
    search__csam__forward="soft",
    search__csam__lam_cons=1.0,
    search__csam__rho=0.0,
  ),
}

VARIANTS: dict[str, Variant] = {
  **{m: _variant(m, f"{m} as configured") for m in methods.METHODS},
  "csam_rho0": _variant(
    "csam", "C-SAM without the mask perturbation", search__csam__rho=0.0
  ),
  "csam_no_cert": _variant(
    "csam",
    "C-SAM without the certification hinge",
    search__csam__lam_cert=0.0,
  ),
  "csam_car": _variant(
    "csam",
    "the CAR description: percentile init, soft forward, consistency on",
    search__csam__init="percentile",
    search__csam__forward="soft",
    search__csam__lam_cons=1.0,
  ),
  "csam_global": _variant(
    "csam", "C-SAM with one global radius", search__csam__radius="global"
  ),
  "hydra_aug": _variant(
    "hydra",
    "HYDRA fine-tuned with C-SAM's input variations as augmentation",
    finetune__augment_variations=True,
  ),
  "csam_aug": _variant(
    "csam",
    "C-SAM fine-tuned with its input variations as augmentation",
    finetune__augment_variations=True,
  ),
  "csam_rho0_aug": _variant(
    "csam",
    "C-SAM without the mask perturbation, fine-tuned on its variations",
    search__csam__rho=0.0,
    finetune__augment_variations=True,
  ),
  "dense_aug": _variant(
    "dense",
    "dense, continued with C-SAM's input variations as augmentation",
    finetune__augment_variations=True,
  ),
  "hydra_layer": _variant(
    "hydra", "HYDRA with per-layer top-k (its reference)", scope="layer"
  ),
  "hydra_ref": _variant(
    "hydra",
    "HYDRA as its reference code: per-layer top-k on |score|, BatchNorm "
    "trained, score weight decay 1e-4",
    scope="layer",
    search__hydra__rank_by_abs=True,
    search__train_batchnorm=True,
    search__optimizer__weight_decay=1e-4,
  ),
  "gmp_layer": _variant(
    "gmp", "GMP with per-layer magnitude pruning (Zhu & Gupta)", scope="layer"
  ),
  **{
    m: _variant(m, f"{m} as configured (the reference's CIFAR settings)")
    for m in methods.COMPRESSION_ALGOS
  },
  **{
    f"{m}_aug": _variant(
      m,
      f"{m} trained on C-SAM's input variations as augmentation",
      finetune__augment_variations=True,
    )
    for m in methods.COMPRESSION_ALGOS
  },
  # The dense continuation's optimizer (config.finetune.optimizer's
  # defaults: lr 0.01, cosine, no warm-up, weight decay 5e-4) instead of
  # the references' from-scratch settings (lr 0.1 after a 5-epoch warm-up):
  # what every other method's weights train with after the pretraining.
  **{
    f"{m}_ft": _variant(
      m,
      f"{m} with the dense continuation's optimizer (lr 0.01, no warm-up)",
      **{
        f"{methods.config_section(m)}__optimizer__{field}": value
        for field, value in FINETUNE_OPTIMIZER.items()
      },
    )
    for m in methods.COMPRESSION_ALGOS
  },
  "cram_plus_k": _variant(
    "cram",
    "CrAM+-k: the clean gradient added, at the target sparsity only",
    cram__plus=True,
  ),
  "safe_ref": _variant(
    "safe",
    "SAFE as its reference code runs: biases held at 0 (aliasing)",
    safe__hold_biases_at_zero=True,
  ),
  **SWEEP,
  **STRUCTURE,
}


def get_variant(name: str) -> Variant:
  """The variant called ``name``.

  Raises:
    ValueError: for an unknown name (the message lists the valid ones).

  Example:
    >>> get_variant("csam_rho0").method
    'csam'
  """
  if name not in VARIANTS:
    raise ValueError(f"unknown variant {name!r}; valid: {tuple(VARIANTS)}")
  return VARIANTS[name]


def variant_config(
  config: ml_collections.ConfigDict, name: str
) -> ml_collections.ConfigDict:
  """A copy of ``config`` running only the variant's method, overridden.

  Raises:
    ValueError: an unknown variant, or an override naming a field the
      config does not have.

  Example:
    >>> from experiments.configs import default
    >>> cfg = variant_config(default.get_config(), "csam_car")
    >>> cfg.methods, cfg.search.csam.forward, cfg.search.csam.lam_cons
    (('csam',), 'soft', 1.0)
  """
  variant = get_variant(name)
  out = config.copy_and_resolve_references()
  out.methods = (variant.method,)
  for path, value in variant.overrides.items():
    *parents, leaf = path.split(".")
    section = out
    for part in parents:
      section = section[part]
    if leaf not in section:
      raise ValueError(f"variant {name!r}: the config has no field {path!r}")
    section[leaf] = value
  return out
