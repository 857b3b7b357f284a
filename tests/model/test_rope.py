"""RoPE: relative-position property (1D and 2D) and position interpolation."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stiv_jax.kernels.attention import apply_rope
from stiv_jax.model.rope import rope_1d, rope_2d


def _rot(x, table, i):
    cos, sin = table
    return apply_rope(x[None, None, None], cos[i][None, None], sin[i][None, None])[0, 0, 0]


def test_rope_1d_depends_only_on_offset():
    h = 32
    table = rope_1d(20, h)
    q, k = jax.random.normal(jax.random.key(0), (2, h))
    dots = {
        (i, j): float(_rot(q, table, i) @ _rot(k, table, j)) for i in range(20) for j in range(20)
    }
    for (i, j), v in dots.items():
        if i >= 3 and j >= 3:
            np.testing.assert_allclose(v, dots[(i - 3, j - 3)], rtol=1e-4, atol=1e-4)
    # and it is not trivially constant: different offsets give different scores
    assert abs(dots[(0, 1)] - dots[(0, 7)]) > 1e-3


def test_rope_2d_depends_only_on_row_and_column_offsets():
    h, gh, gw = 32, 5, 6
    table = rope_2d(gh, gw, h)
    q, k = jax.random.normal(jax.random.key(1), (2, h))

    def score(a, b):
        return float(_rot(q, table, a[0] * gw + a[1]) @ _rot(k, table, b[0] * gw + b[1]))

    np.testing.assert_allclose(score((0, 0), (1, 2)), score((3, 3), (4, 5)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(score((2, 1), (0, 4)), score((4, 1), (2, 4)), rtol=1e-4, atol=1e-4)
    # row and column offsets are distinguished
    assert abs(score((0, 0), (1, 0)) - score((0, 0), (0, 1))) > 1e-3


def test_rope_preserves_norm():
    x = jax.random.normal(jax.random.key(2), (1, 7, 2, 16))
    cos, sin = rope_1d(7, 16)
    y = apply_rope(x, cos[None], sin[None])
    np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5)


def test_interpolation_maps_positions_onto_training_range():
    # trained on 8 positions, run on 16: position 2k now has the angle of training position k
    cos16, sin16 = rope_1d(16, 16, train_n=8, interpolate=True)
    cos8, sin8 = rope_1d(8, 16)
    np.testing.assert_allclose(cos16[::2], cos8, atol=1e-6)
    np.testing.assert_allclose(sin16[::2], sin8, atol=1e-6)
    # without interpolation it extrapolates (positions beyond 7 are new)
    cos_x, _ = rope_1d(16, 16, train_n=8, interpolate=False)
    np.testing.assert_allclose(cos_x[:8], cos8, atol=1e-6)
    assert not np.allclose(cos_x[::2], cos8)
    # 2D: an 8x8 grid trained at 4x4 covers the same angles
    c88, _ = rope_2d(8, 8, 16, train_hw=(4, 4))
    c44, _ = rope_2d(4, 4, 16)
    np.testing.assert_allclose(
        np.asarray(c88).reshape(8, 8, -1)[::2, ::2].reshape(16, -1), c44, atol=1e-6
    )
    # same grid as training: no change
    np.testing.assert_allclose(rope_1d(8, 16, train_n=8)[0], cos8)


def test_key_shift_puts_each_key_where_its_velocity_takes_it():
    """`SelfAttention(key_shift=True)`: zero at init (the plain attention's output); a
    velocity u at frame index `time` makes a key at grid position p attend like one at
    p + u·time (reference: the keys rotated by `rope_2d` tables of the shifted grid)."""
    from stiv_jax.kernels.attention import attention_reference
    from stiv_jax.kernels.prologue import qk_prologue
    from stiv_jax.model.attention import SelfAttention
    from stiv_jax.model.rope import rope_2d_offsets

    kw = dict(impl="xla", rngs=nnx.Rngs(0), dtype=jnp.float32, param_dtype=jnp.float32)
    shifted = SelfAttention(16, 2, **kw, key_shift=True)
    plain = SelfAttention(16, 2, **{**kw, "rngs": nnx.Rngs(0)})
    mine = nnx.to_pure_dict(nnx.state(shifted, nnx.Param))
    nnx.update(plain, {k: v for k, v in mine.items() if k != "key_shift"})
    x = jax.random.normal(jax.random.key(0), (3, 9, 16))
    rope, time = rope_2d(3, 3, 8), jnp.array([0.0, 1.0, 2.0])
    np.testing.assert_allclose(shifted(x, rope=rope, time=time), plain(x, rope=rope), atol=1e-6)

    # Every token's velocity (1 row, -1 col) per frame: at frame index 2 the keys stand two
    # rows down and two columns left of their tokens, on a 7 x 7 grid that holds them all.
    bias = jnp.tile(jnp.array([1.0, -1.0]), 2)
    shifted.key_shift.bias.set_value(bias)
    big = rope_2d(7, 7, 8)
    at = lambda rows, cols: tuple(t[jnp.asarray(rows) * 7 + jnp.asarray(cols)] for t in big)  # noqa: E731
    r, c = jnp.divmod(jnp.arange(9), 3)
    qkv = shifted.qkv(x).reshape(3, 9, 3, 2, 8)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    for i, tm in enumerate((0, 1, 2)):
        qf = qk_prologue(q[i : i + 1], shifted.q_norm.scale[...], at(r + 2, c + 2), 1e-6)
        kf = qk_prologue(k[i : i + 1], shifted.k_norm.scale[...], at(r + 2 + tm, c + 2 - tm), 1e-6)
        want = shifted.out(attention_reference(qf, kf, v[i : i + 1]).reshape(1, 9, 16))
        got = shifted(x, rope=rope, time=time)[i : i + 1]
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert float(jnp.abs(shifted(x, rope=rope, time=time) - plain(x, rope=rope))[1:].max()) > 1e-3
    cos, sin = rope_2d_offsets(jnp.zeros((4, 2)), 8)  # no offset: the identity rotation
    np.testing.assert_array_equal(cos, 1.0)
    np.testing.assert_array_equal(sin, 0.0)
