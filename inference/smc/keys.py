"""Keys for the SMC engine's draws: one key per particle from one step key, without hashing, and a fast Threefry.

JAX lowers its Threefry-2x32 hash as a rolled 5-iteration loop on CPU (to keep compile times short), which costs
about 3x the time of the same rounds unrolled and fused into the draw's loop.  :data:`THREEFRY_UNROLLED` is the
same generator, bit for bit (JAX's own hash function and its partitionable counter layout), traced as plain
``lax`` operations, so XLA fuses it; keys of it give exactly the draws of ``jax.random`` with the Threefry key of
the same data.  :func:`fast_key` re-wraps a Threefry (or legacy ``uint32``) key as one; other implementations are
left as they are.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax._src.random import prng as _prng  # JAX's counter layout and hash, reused rather than re-written
from jax._src.random import threefry2x32 as _threefry
from jax.extend.random import define_prng_impl, threefry_prng_impl
from jaxtyping import PRNGKeyArray

from pssm.validation import is_typed_key

__all__ = ["THREEFRY_UNROLLED", "fast_key", "particle_keys"]


def _unrolled_bits(key, bit_width: int, shape: tuple[int, ...]):
    """``jax.random.bits`` of a Threefry key (partitionable counters), with the 20 rounds unrolled."""
    counts1, counts2 = _prng.iota_2x32_shape(shape)
    bits1, bits2 = _threefry._threefry2x32_lowering(key[0], key[1], counts1, counts2, use_rolled_loops=False)
    dtype = _prng.UINT_DTYPES[bit_width]
    if bit_width == 64:
        hi, lo = bits1.astype(dtype), bits2.astype(dtype)
        return jax.lax.shift_left(hi, jnp.asarray(32, dtype)) | lo
    return (bits1 ^ bits2).astype(dtype)


THREEFRY_UNROLLED = define_prng_impl(
    key_shape=(2,),
    seed=threefry_prng_impl.seed,
    split=threefry_prng_impl.split,
    random_bits=_unrolled_bits,
    fold_in=threefry_prng_impl.fold_in,
    name="threefry2x32_unrolled",
    tag="fryu",
)


def _data_and_impl(key: PRNGKeyArray):
    """``(key data, the implementation to wrap it with)``: Threefry and legacy keys go to the unrolled twin."""
    if not is_typed_key(key):  # legacy uint32 data: Threefry's two words, or another default generator's
        data = jnp.asarray(key)
        return data, (THREEFRY_UNROLLED if data.shape[-1:] == (2,) else None)
    impl = jax.random.key_impl(key)
    data = jax.random.key_data(key)
    return data, (THREEFRY_UNROLLED if str(impl) == "threefry2x32" else impl)


def fast_key(key: PRNGKeyArray) -> PRNGKeyArray:
    """``key`` as a typed key giving the same draws, through :data:`THREEFRY_UNROLLED` when it is a Threefry or
    legacy key (about 3x faster per draw on XLA:CPU; use it for bulk draws, not for scalars that feed a
    per-particle loop, where XLA would fuse and repeat the hash)."""
    data, impl = _data_and_impl(key)
    return jax.random.wrap_key_data(data, impl=impl)


def particle_keys(key: PRNGKeyArray, num: int) -> PRNGKeyArray:
    """``num`` keys, one per particle: ``key``'s data with the particle index XOR-ed into its last word.

    Counter-based generators name independent streams by their key (Salmon et al., SC 2011, for Threefry), so no
    hash is needed to make them; ``jax.random.split`` would cost one Threefry hash per particle on top of the draw
    itself.  Threefry and legacy keys come back as :data:`THREEFRY_UNROLLED` keys (the same draws, faster).
    Particle 0's key has ``key``'s data, so give it a key that nothing else uses."""
    data, impl = _data_and_impl(key)
    last = data[-1] ^ jnp.arange(num, dtype=data.dtype)
    data = jnp.concatenate([jnp.broadcast_to(data[:-1], (num, data.shape[0] - 1)), last[:, None]], axis=1)
    return jax.random.wrap_key_data(data, impl=impl)
