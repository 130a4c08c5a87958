"""libjpeg's integer "islow" 8x8 DCT and inverse DCT, in int32 JAX.

The default DCT of libjpeg(-turbo), and therefore of Pillow, is the
Loeffler-Ligtenberg-Moschytz factorisation in 13-bit fixed point
(``jfdctint.c`` / ``jidctint.c``; CONST_BITS = 13, PASS1_BITS = 2). Its
rounding decides which quantised coefficients land on which side of a
rounding tie, which matters for images that were JPEG-compressed before
(such as the CIFAR-10 copies in this project), so it is reproduced here
rather than using an exact float DCT. Written by hand: no JAX library
offers libjpeg's fixed-point transforms.
"""

import jax
import jax.numpy as jnp

CONST_BITS = 13
PASS1_BITS = 2
# round(c * 2**13) for the LL&M rotation constants.
FIX_0_298631336 = 2446
FIX_0_390180644 = 3196
FIX_0_541196100 = 4433
FIX_0_765366865 = 6270
FIX_0_899976223 = 7373
FIX_1_175875602 = 9633
FIX_1_501321110 = 12299
FIX_1_847759065 = 15137
FIX_1_961570560 = 16069
FIX_2_053119869 = 16819
FIX_2_562915447 = 20995
FIX_3_072711026 = 25172


def _descale(x: jax.Array, bits: int) -> jax.Array:
  """Rounding arithmetic right shift, libjpeg's DESCALE."""
  return jnp.right_shift(x + (1 << (bits - 1)), bits)


def _odd_part(i0, i1, i2, i3):
  """The shared LL&M odd rotation (figure 8); returns four outputs."""
  z1 = i0 + i3
  z2 = i1 + i2
  z3 = i0 + i2
  z4 = i1 + i3
  z5 = (z3 + z4) * FIX_1_175875602
  z1 = z1 * -FIX_0_899976223
  z2 = z2 * -FIX_2_562915447
  z3 = z3 * -FIX_1_961570560 + z5
  z4 = z4 * -FIX_0_390180644 + z5
  return (
    i0 * FIX_0_298631336 + z1 + z3,
    i1 * FIX_2_053119869 + z2 + z4,
    i2 * FIX_3_072711026 + z2 + z3,
    i3 * FIX_1_501321110 + z1 + z4,
  )


def _fdct_1d(v: jax.Array, first_pass: bool) -> jax.Array:
  """One pass of ``jpeg_fdct_islow`` along the last axis (int32)."""
  x = [v[..., i] for i in range(8)]
  tmp0, tmp7 = x[0] + x[7], x[0] - x[7]
  tmp1, tmp6 = x[1] + x[6], x[1] - x[6]
  tmp2, tmp5 = x[2] + x[5], x[2] - x[5]
  tmp3, tmp4 = x[3] + x[4], x[3] - x[4]
  tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
  tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
  if first_pass:
    out0 = jnp.left_shift(tmp10 + tmp11, PASS1_BITS)
    out4 = jnp.left_shift(tmp10 - tmp11, PASS1_BITS)
    bits = CONST_BITS - PASS1_BITS
  else:
    out0 = _descale(tmp10 + tmp11, PASS1_BITS)
    out4 = _descale(tmp10 - tmp11, PASS1_BITS)
    bits = CONST_BITS + PASS1_BITS
  z1 = (tmp12 + tmp13) * FIX_0_541196100
  out2 = _descale(z1 + tmp13 * FIX_0_765366865, bits)
  out6 = _descale(z1 - tmp12 * FIX_1_847759065, bits)
  o7, o5, o3, o1 = _odd_part(tmp4, tmp5, tmp6, tmp7)
  outs = [out0, _descale(o1, bits), out2, _descale(o3, bits), out4]
  outs += [_descale(o5, bits), out6, _descale(o7, bits)]
  return jnp.stack(outs, axis=-1)


def _idct_1d(v: jax.Array, bits: int) -> jax.Array:
  """One pass of ``jpeg_idct_islow`` along the last axis (int32)."""
  z2, z3 = v[..., 2], v[..., 6]
  z1 = (z2 + z3) * FIX_0_541196100
  tmp2 = z1 - z3 * FIX_1_847759065
  tmp3 = z1 + z2 * FIX_0_765366865
  tmp0 = jnp.left_shift(v[..., 0] + v[..., 4], CONST_BITS)
  tmp1 = jnp.left_shift(v[..., 0] - v[..., 4], CONST_BITS)
  tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
  tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
  o0, o1, o2, o3 = _odd_part(v[..., 7], v[..., 5], v[..., 3], v[..., 1])
  outs = [
    tmp10 + o3,
    tmp11 + o2,
    tmp12 + o1,
    tmp13 + o0,
    tmp13 - o0,
    tmp12 - o1,
    tmp11 - o2,
    tmp10 - o3,
  ]
  return jnp.stack([_descale(o, bits) for o in outs], axis=-1)


def fdct(blocks: jax.Array) -> jax.Array:
  """Forward DCT of int32 blocks (..., 8, 8) of level-shifted samples.

  Returns the coefficients scaled by 8, as libjpeg's quantiser expects.
  """
  rows = _fdct_1d(blocks, first_pass=True)
  cols = _fdct_1d(jnp.swapaxes(rows, -1, -2), first_pass=False)
  return jnp.swapaxes(cols, -1, -2)


def idct(coefficients: jax.Array) -> jax.Array:
  """Inverse DCT of dequantised int32 coefficients (..., 8, 8).

  Columns first, then rows, as libjpeg; returns samples before the +128
  level shift and range limiting.
  """
  cols = _idct_1d(jnp.swapaxes(coefficients, -1, -2), CONST_BITS - PASS1_BITS)
  rows = _idct_1d(jnp.swapaxes(cols, -1, -2), CONST_BITS + PASS1_BITS + 3)
  return rows
