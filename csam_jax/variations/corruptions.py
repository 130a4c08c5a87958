"""CIFAR-10-C corruptions (Hendrycks & Dietterich, 2019) as JAX functions.

``corrupt``, ``corruption_sampler``, ``CORRUPTIONS`` and
``EXTRA_CORRUPTIONS`` are also exported by ``csam_jax.variations``; this
module adds the building blocks (exact reference operators) for reuse.
"""

from csam_jax._src.corruptions.blur import defocus_kernel as defocus_kernel
from csam_jax._src.corruptions.blur import (
  motion_blur_filter as motion_blur_filter,
)
from csam_jax._src.corruptions.color import hsv_to_rgb as hsv_to_rgb
from csam_jax._src.corruptions.color import rgb_to_hsv as rgb_to_hsv
from csam_jax._src.corruptions.jpeg import jpeg_roundtrip as jpeg_roundtrip
from csam_jax._src.corruptions.jpeg import (
  quantization_tables as quantization_tables,
)
from csam_jax._src.corruptions.registry import (
  ALL_CORRUPTIONS as ALL_CORRUPTIONS,
)
from csam_jax._src.corruptions.registry import CORRUPTIONS as CORRUPTIONS
from csam_jax._src.corruptions.registry import (
  EXTRA_CORRUPTIONS as EXTRA_CORRUPTIONS,
)
from csam_jax._src.corruptions.registry import SEVERITIES as SEVERITIES
from csam_jax._src.corruptions.registry import corrupt as corrupt
from csam_jax._src.corruptions.registry import (
  corruption_sampler as corruption_sampler,
)
from csam_jax._src.corruptions.registry import (
  severity_parameters as severity_parameters,
)
from csam_jax._src.corruptions.weather import frost_texture as frost_texture
from csam_jax._src.corruptions.weather import (
  plasma_fractal as plasma_fractal,
)
