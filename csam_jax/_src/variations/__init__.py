"""Semantic input variations: deterministic transforms, samplers, compose.

Every transform maps one image, float32 HWC with values in [0, 1], to an
image of the same shape and dtype, clipped to [0, 1]. All of them are pure
JAX: they run under ``jax.jit`` and batch with ``jax.vmap`` (images NHWC,
one parameter per image). Parameters may be traced arrays. Parameter
conventions (those of the CC-Cert reference, Pautov et al. 2022, unless
stated) are documented in the modules:

* `photometric`: brightness, contrast, gamma, gaussian_noise;
* `geometric`: rotation, scale, translation and their fused form
  `rotate_scale_translate` (one bilinear resampling, documented border mode);
* `blur`: gaussian_blur;
* `registry`: every family declared once (`REGISTRY`); `ranges`: parameter
  ranges and samplers; `compose`: the random chain.
"""

from csam_jax._src.variations.blur import gaussian_blur as gaussian_blur
from csam_jax._src.variations.compose import compose as compose
from csam_jax._src.variations.geometric import AffineMap as AffineMap
from csam_jax._src.variations.geometric import affine as affine
from csam_jax._src.variations.geometric import (
  rotate_scale_translate as rotate_scale_translate,
)
from csam_jax._src.variations.geometric import rotation as rotation
from csam_jax._src.variations.geometric import scale as scale
from csam_jax._src.variations.geometric import translation as translation
from csam_jax._src.variations.photometric import brightness as brightness
from csam_jax._src.variations.photometric import contrast as contrast
from csam_jax._src.variations.photometric import gamma as gamma
from csam_jax._src.variations.photometric import (
  gaussian_noise as gaussian_noise,
)
from csam_jax._src.variations.ranges import (
  parameter_range as parameter_range,
)
from csam_jax._src.variations.ranges import (
  parameter_sampler as parameter_sampler,
)
from csam_jax._src.variations.registry import CC_CERT_RANGES as CC_CERT_RANGES
from csam_jax._src.variations.registry import CERTIFIABLE as CERTIFIABLE
from csam_jax._src.variations.registry import REGISTRY as REGISTRY
from csam_jax._src.variations.registry import SEED_OFFSETS as SEED_OFFSETS
from csam_jax._src.variations.registry import VARIATIONS as VARIATIONS
from csam_jax._src.variations.registry import Family as Family
