"""One adapter from a config optimizer section to an optax transformation."""

from __future__ import annotations

import ml_collections
import optax

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "constant", "linear", "step")


def learning_rate_schedule(
  opt_config: ml_collections.ConfigDict,
  total_steps: int,
  steps_per_epoch: int,
) -> optax.Schedule:
  """Builds the stage's learning-rate schedule.

  Args:
    opt_config: an optimizer section (see ``configs/default.optimizer_config``).
    total_steps: number of steps of the stage.
    steps_per_epoch: steps per epoch (converts ``warmup_epochs``).

  Returns:
    An optax schedule ``step -> learning rate``.

  Raises:
    ValueError: unknown schedule name or negative learning rate.

  Example:
    >>> from experiments.configs import default
    >>> cfg = default.optimizer_config(0.1, schedule="step")
    >>> sched = learning_rate_schedule(cfg, total_steps=100, steps_per_epoch=10)
    >>> [round(float(sched(s)), 4) for s in (0, 50, 75)]
    [0.1, 0.01, 0.001]
  """
  lr = float(opt_config.learning_rate)
  if lr < 0:
    raise ValueError(f"learning_rate must be >= 0, got {lr}.")
  if opt_config.schedule not in SCHEDULES:
    raise ValueError(
      f"optimizer.schedule must be one of {SCHEDULES}, "
      f"got {opt_config.schedule!r}."
    )
  total_steps = max(int(total_steps), 1)
  warmup = min(int(opt_config.warmup_epochs * steps_per_epoch), total_steps)
  decay_steps = max(total_steps - warmup, 1)
  if opt_config.schedule == "cosine":
    main = optax.cosine_decay_schedule(lr, decay_steps)
  elif opt_config.schedule == "linear":
    main = optax.linear_schedule(lr, 0.0, decay_steps)
  elif opt_config.schedule == "step":
    main = optax.piecewise_constant_schedule(
      lr, {int(0.5 * decay_steps): 0.1, int(0.75 * decay_steps): 0.1}
    )
  else:
    main = optax.constant_schedule(lr)
  if warmup == 0:
    return main
  return optax.join_schedules(
    [optax.linear_schedule(0.0, lr, warmup), main], [warmup]
  )


def make_optimizer(
  opt_config: ml_collections.ConfigDict,
  total_steps: int,
  steps_per_epoch: int,
) -> optax.GradientTransformation:
  """Maps an optimizer section to optax (clip -> decay -> base optimizer).

  Args:
    opt_config: an optimizer section (see ``configs/default.optimizer_config``).
    total_steps: number of steps of the stage (for the schedule).
    steps_per_epoch: steps per epoch (for warm-up).

  Returns:
    The optax transformation.

  Raises:
    ValueError: unknown optimizer name, negative weight decay or momentum.

  Example:
    >>> import jax.numpy as jnp
    >>> from experiments.configs import default
    >>> cfg = default.optimizer_config(0.5, momentum=0.0, weight_decay=0.0,
    ...                                schedule="constant")
    >>> tx = make_optimizer(cfg, total_steps=1, steps_per_epoch=1)
    >>> u, _ = tx.update(jnp.ones(2), tx.init(jnp.zeros(2)), jnp.zeros(2))
    >>> u.tolist()
    [-0.5, -0.5]
  """
  name = opt_config.name
  if name not in OPTIMIZERS:
    raise ValueError(
      f"optimizer.name must be one of {OPTIMIZERS}, got {name!r}."
    )
  for field in ("weight_decay", "momentum", "grad_clip_norm"):
    if opt_config[field] < 0:
      raise ValueError(
        f"optimizer.{field} must be >= 0, got {opt_config[field]}."
      )
  schedule = learning_rate_schedule(opt_config, total_steps, steps_per_epoch)
  parts = []
  if opt_config.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(opt_config.grad_clip_norm))
  if name == "adamw":
    parts.append(optax.adamw(schedule, weight_decay=opt_config.weight_decay))
    return optax.chain(*parts)
  if opt_config.weight_decay > 0:
    # L2 regularisation added to the gradient (the usual SGD convention).
    parts.append(optax.add_decayed_weights(opt_config.weight_decay))
  if name == "adam":
    parts.append(optax.adam(schedule))
  else:
    parts.append(
      optax.sgd(
        schedule,
        momentum=opt_config.momentum or None,
        nesterov=opt_config.nesterov,
      )
    )
  return optax.chain(*parts)
