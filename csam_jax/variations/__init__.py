"""JAX-native, vmappable input variations (training and certification).

Images are float32 in [0, 1], HWC (batched NHWC through ``jax.vmap``).
"""

# --- semantic transformations (csam_jax/_src/variations.py) ---
# (filled in by the variations module)

# --- CIFAR-10-C corruptions (csam_jax/_src/corruptions*) ---
# (filled in by the corruptions module)
