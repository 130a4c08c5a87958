"""JAX-native, vmappable input variations (training and certification).

Images are float32 in [0, 1], HWC (batched NHWC through ``jax.vmap``).
"""

# --- semantic transformations (csam_jax/_src/variations/) ---
from csam_jax._src.variations import CC_CERT_RANGES as CC_CERT_RANGES
from csam_jax._src.variations import CERTIFIABLE as CERTIFIABLE
from csam_jax._src.variations import REGISTRY as REGISTRY
from csam_jax._src.variations import SEED_OFFSETS as SEED_OFFSETS
from csam_jax._src.variations import VARIATIONS as VARIATIONS
from csam_jax._src.variations import AffineMap as AffineMap
from csam_jax._src.variations import Family as Family
from csam_jax._src.variations import affine as affine
from csam_jax._src.variations import brightness as brightness
from csam_jax._src.variations import compose as compose
from csam_jax._src.variations import contrast as contrast
from csam_jax._src.variations import gamma as gamma
from csam_jax._src.variations import gaussian_blur as gaussian_blur
from csam_jax._src.variations import gaussian_noise as gaussian_noise
from csam_jax._src.variations import parameter_range as parameter_range
from csam_jax._src.variations import parameter_sampler as parameter_sampler
from csam_jax._src.variations import (
  rotate_scale_translate as rotate_scale_translate,
)
from csam_jax._src.variations import rotation as rotation
from csam_jax._src.variations import scale as scale
from csam_jax._src.variations import translation as translation

# --- CIFAR-10-C corruptions (csam_jax/_src/corruptions*) ---
# isort: split
from csam_jax._src.corruptions.registry import CORRUPTIONS as CORRUPTIONS
from csam_jax._src.corruptions.registry import (
  EXTRA_CORRUPTIONS as EXTRA_CORRUPTIONS,
)
from csam_jax._src.corruptions.registry import corrupt as corrupt
from csam_jax._src.corruptions.registry import (
  corruption_sampler as corruption_sampler,
)

# --- one draw per image of a batch, the sampler's fastest path ---
# isort: split
from csam_jax._src.certify import montecarlo as _montecarlo

sample_batch = _montecarlo.transform
