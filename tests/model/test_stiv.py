"""STIV model: identity init, MaskDiT, image conditioning, patching, variants, the caption
token refiner, window and word pieces."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stiv_jax.conditioning import with_image_defaults
from stiv_jax.model.block import STIVBlock
from stiv_jax.model.rope import rope_1d, rope_2d
from stiv_jax.model.stiv import STIV, mask_restore, mask_select, patchify, unpatchify
from stiv_jax.model.text_refiner import TextRefiner
from stiv_jax.model.text_window import window_mean, window_mean_reference
from stiv_jax.model.variants import parse_variant
from stiv_jax.model.word_pieces import BINS, bin_sums, bin_sums_reference


def _cond(b, f, h, w, c=3, l=5, dt=384, dp=384 + 1024):  # dp: MiniLM + word bag
    k = jax.random.split(jax.random.key(7), 4)
    return dict(
        text_tokens=jax.random.normal(k[0], (b, l, dt)),
        text_mask=jnp.ones((b, l), bool).at[:, -2:].set(False),
        text_pooled=jax.random.normal(k[1], (b, dp)),
        micro=jnp.tile(jnp.array([16.0, 16.0, 0.0, 0.0, 1.0]), (b, 1)),
        motion=jnp.ones((b,)),
        cond_mask=jnp.zeros((b, f), bool).at[:, 0].set(True),
        cond_latents=jax.random.normal(k[2], (b, f, h, w, c)),
    )


def _perturb(model, scale=0.05):
    """Random non-zero values in every parameter (zero-init layers included)."""
    graphdef, params = nnx.split(model, nnx.Param)
    leaves, tree = jax.tree.flatten(nnx.to_pure_dict(params))
    keys = jax.random.split(jax.random.key(3), len(leaves))
    leaves = [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    return nnx.merge(graphdef, jax.tree.unflatten(tree, leaves))


def _with_fresh_part(config, key: str, value):
    """(base, fresh): a perturbed model, and the model with `config.model.<key> = value`
    holding base's weights plus only its new part `key` (checked), as initialised."""
    base = _perturb(STIV(config.model, in_channels=3, rngs=nnx.Rngs(0)))
    config.model[key] = value
    graphdef, params = nnx.split(STIV(config.model, in_channels=3, rngs=nnx.Rngs(0)), nnx.Param)
    mine = nnx.to_pure_dict(params)
    assert set(mine) - set(nnx.to_pure_dict(nnx.state(base, nnx.Param))) == {key}
    mine.update(nnx.to_pure_dict(nnx.state(base, nnx.Param)))
    return base, nnx.merge(graphdef, mine)


def test_adaln_zero_init_block_is_identity():
    block = STIVBlock(
        32, 2, 4.0, impl="xla", rngs=nnx.Rngs(0), dtype=jnp.float32, param_dtype=jnp.float32
    )
    x = jax.random.normal(jax.random.key(0), (2, 4, 9, 32))
    mod = jnp.zeros((2, 12, 32))  # the zero-initialised shared AdaLN projection's output
    ctx, ctx_mask = jax.random.normal(jax.random.key(1), (2, 3, 32)), jnp.ones((2, 3), bool)
    out = block(x, mod, ctx, ctx_mask, rope_2d(3, 3, 16), rope_1d(4, 16))
    np.testing.assert_array_equal(out, x)
    # a non-zero gate makes it a non-identity (the test can fail)
    out2 = block(x, mod.at[:, 2].set(1.0), ctx, ctx_mask, rope_2d(3, 3, 16), rope_1d(4, 16))
    assert float(jnp.abs(out2 - x).max()) > 1e-3


def test_fresh_model_blocks_are_identity_and_output_zero(tiny_config):
    m = STIV(tiny_config.model, in_channels=3, rngs=nnx.Rngs(0))
    for block in list(m.blocks) + list(m.decoder):
        np.testing.assert_array_equal(block.table[...], 0.0)
    np.testing.assert_array_equal(m.adaln.kernel[...], 0.0)
    x = jax.random.normal(jax.random.key(0), (2, 4, 16, 16, 3))
    out = m(x, jnp.full((2,), 0.3), _cond(2, 4, 16, 16))
    np.testing.assert_array_equal(out, 0.0)  # zero-init final layer


def test_mask_select_uses_same_positions_in_every_frame():
    tokens = jax.random.normal(jax.random.key(0), (3, 5, 16, 8))
    kept, perm = mask_select(tokens, jax.random.key(1), 0.5)
    assert kept.shape == (3, 5, 8, 8)
    for b in range(3):
        ids = np.asarray(perm[b, :8])
        for f in range(5):
            np.testing.assert_array_equal(kept[b, f], tokens[b, f, ids])
    # different samples get different masks
    assert not np.array_equal(np.sort(perm[0, :8]), np.sort(perm[1, :8]))
    token = jnp.full((8,), 9.0)
    full = mask_restore(kept, perm, token)
    assert full.shape == tokens.shape
    for b in range(3):
        keep_ids, drop_ids = np.asarray(perm[b, :8]), np.asarray(perm[b, 8:])
        np.testing.assert_array_equal(full[b][:, keep_ids], tokens[b][:, keep_ids])
        np.testing.assert_array_equal(full[b][:, drop_ids], 9.0)


def test_maskdit_forward_keeps_shape_and_depends_on_mask(tiny_config):
    m = _perturb(STIV(tiny_config.model, in_channels=3, rngs=nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(0), (2, 4, 16, 16, 3))
    t, cond = jnp.full((2,), 0.4), _cond(2, 4, 16, 16)
    a = m(x, t, cond, mask_key=jax.random.key(1))
    b = m(x, t, cond, mask_key=jax.random.key(2))
    full = m(x, t, cond)
    assert a.shape == x.shape == full.shape
    assert float(jnp.abs(a - b).max()) > 1e-4  # the mask matters in training
    tiny_config.model.mask_ratio = 0.0
    m0 = _perturb(STIV(tiny_config.model, in_channels=3, rngs=nnx.Rngs(0)))
    np.testing.assert_allclose(
        m0(x, t, cond, mask_key=jax.random.key(1)), m0(x, t, cond), atol=1e-6
    )


def test_frame_replace_ignores_noisy_given_frames(tiny_config):
    m = _perturb(STIV(tiny_config.model, in_channels=3, rngs=nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(0), (2, 4, 16, 16, 3))
    t, cond = jnp.full((2,), 0.4), _cond(2, 4, 16, 16)
    y = x.at[:, 0].set(123.0)  # frame 0 is given: its noisy content must not matter
    np.testing.assert_allclose(m(x, t, cond), m(y, t, cond), atol=1e-5)
    z = x.at[:, 1].set(123.0)  # frame 1 is not given: it must matter
    assert float(jnp.abs(m(x, t, cond) - m(z, t, cond)).max()) > 1e-3


def test_channel_concat_doubles_patch_embed_input(tiny_config):
    p, pt = tiny_config.model.patch_size, tiny_config.model.temporal_patch
    base = STIV(tiny_config.model, in_channels=3, rngs=nnx.Rngs(0))
    tiny_config.model.image_cond = "channel_concat"
    cc = STIV(tiny_config.model, in_channels=3, rngs=nnx.Rngs(0))
    assert base.patch_embed.kernel.shape[0] == pt * p * p * 3
    assert cc.patch_embed.kernel.shape[0] == 2 * pt * p * p * 3
    cc = _perturb(cc)
    x = jax.random.normal(jax.random.key(0), (2, 4, 16, 16, 3))
    cond = _cond(2, 4, 16, 16)
    out = cc(x, jnp.full((2,), 0.4), cond)
    assert out.shape == x.shape
    other = dict(cond, cond_latents=cond["cond_latents"] + 1.0)
    assert float(jnp.abs(out - cc(x, jnp.full((2,), 0.4), other)).max()) > 1e-4


def test_cross_attn_image_tokens_enter_context(tiny_config):
    tiny_config.model.image_cond = "cross_attn"
    m = _perturb(STIV(tiny_config.model, in_channels=3, rngs=nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(0), (2, 4, 16, 16, 3))
    cond = _cond(2, 4, 16, 16)
    a = m(x, jnp.full((2,), 0.4), cond)
    b = m(x, jnp.full((2,), 0.4), dict(cond, cond_latents=cond["cond_latents"] * 2))
    assert float(jnp.abs(a - b).max()) > 1e-4


def test_patchify_roundtrip_and_bad_shapes(tiny_config):
    x = jax.random.normal(jax.random.key(0), (2, 4, 8, 12, 3))
    tokens = patchify(x, 2, 2)
    assert tokens.shape == (2, 2, 4 * 6, 2 * 2 * 2 * 3)
    np.testing.assert_array_equal(unpatchify(tokens, 2, 2, (8, 12), 3), x)
    m = STIV(tiny_config.model, in_channels=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="divisible"):
        m(jnp.zeros((1, 3, 16, 16, 3)), jnp.zeros((1,)), _cond(1, 3, 16, 16))


def test_scan_and_loop_blocks_agree(tiny_config):
    loop = _perturb(STIV(tiny_config.model, in_channels=3, rngs=nnx.Rngs(0)))
    tiny_config.model.scan_blocks = True
    tiny_config.model.remat = "attention"
    scan = STIV(tiny_config.model, in_channels=3, rngs=nnx.Rngs(0))
    # copy the loop model's weights into the stacked (scanned) layout
    _, lp = nnx.split(loop, nnx.Param)
    g, sp = nnx.split(scan, nnx.Param)
    lp, sp = nnx.to_pure_dict(lp), nnx.to_pure_dict(sp)
    blocks = [lp["blocks"][i] for i in range(len(lp["blocks"]))]
    sp = {**lp, "blocks": jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)}
    scan = nnx.merge(g, sp)
    x = jax.random.normal(jax.random.key(0), (2, 4, 16, 16, 3))
    t, cond = jnp.full((2,), 0.4), _cond(2, 4, 16, 16)
    np.testing.assert_allclose(scan(x, t, cond), loop(x, t, cond), atol=1e-5)


def test_unknown_variant_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown variant 'XXXL/2'"):
        parse_variant("XXXL/2")


def test_count_params_cli():
    out = subprocess.run(
        [sys.executable, "-m", "stiv_jax.model.stiv", "--config", "configs/stiv.py:variant=XL/2", "--count-params"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    total = int(out.split("params: ")[1].split()[0])
    assert 0.6e9 < total < 1.0e9, out


# ---------------------------------------------------------------- caption token refiner
def _refiner(depth=2):
    f32 = jnp.float32
    return TextRefiner(
        32, 2, depth, 4.0, theta=10000.0, rngs=nnx.Rngs(0), dtype=f32, param_dtype=f32
    )


def test_fresh_refiner_is_identity_and_trained_one_mixes_tokens():
    x = jax.random.normal(jax.random.key(0), (2, 6, 32))
    mask = jnp.ones((2, 6), bool)
    np.testing.assert_array_equal(_refiner()(x, mask), x)
    r = _perturb(_refiner())
    y = r(x, mask)
    assert float(jnp.abs(y - x).max()) > 1e-3
    # token 0's output depends on token 3 (self-attention) ...
    x2 = x.at[:, 3].set(jax.random.normal(jax.random.key(1), (2, 32)))
    assert float(jnp.abs(r(x2, mask)[:, 0] - y[:, 0]).max()) > 1e-4
    # ... and on word order (RoPE): swapping two other tokens changes it
    x3 = x.at[:, 4].set(x[:, 5]).at[:, 5].set(x[:, 4])
    assert float(jnp.abs(r(x3, mask)[:, 0] - y[:, 0]).max()) > 1e-5


def test_refiner_adds_no_caption_wide_vector():
    r = _perturb(_refiner(), scale=0.5)
    x = jax.random.normal(jax.random.key(0), (2, 6, 32))
    mask = jnp.ones((2, 6), bool).at[1, 4:].set(False)
    y = r(x, mask)
    assert float(jnp.abs(y - x).max()) > 1e-2
    for b, n in ((0, 6), (1, 4)):  # the real tokens' mean is what it was
        np.testing.assert_allclose(y[b, :n].mean(0), x[b, :n].mean(0), atol=1e-5)


def test_padding_does_not_reach_real_tokens():
    r = _perturb(_refiner())
    x = jax.random.normal(jax.random.key(0), (2, 6, 32))
    mask = jnp.ones((2, 6), bool).at[:, 4:].set(False)
    junk = x.at[:, 4:].set(99.0)
    np.testing.assert_allclose(r(x, mask)[:, :4], r(junk, mask)[:, :4], atol=1e-5)


def test_zero_depth_is_an_error():
    with pytest.raises(ValueError, match="text_refiner=0"):
        _refiner(depth=0)


def test_model_with_fresh_refiner_equals_model_without(tiny_config):
    x = jax.random.normal(jax.random.key(0), (2, 4, 16, 16, 3))
    t, cond = jnp.full((2,), 0.4), _cond(2, 4, 16, 16)
    base = STIV(tiny_config.model, in_channels=3, rngs=nnx.Rngs(0))
    tiny_config.model.text_refiner = 1
    with_r = STIV(tiny_config.model, in_channels=3, rngs=nnx.Rngs(0))
    assert with_r.text_refiner is not None and base.text_refiner is None
    # same seed -> the same weights everywhere else (the refiner is built last)
    ref = nnx.to_pure_dict(nnx.state(base, nnx.Param))
    graphdef, params = nnx.split(with_r, nnx.Param)
    mine = nnx.to_pure_dict(params)
    assert set(mine) - set(ref) == {"text_refiner"}
    jax.tree.map(np.testing.assert_array_equal, {k: mine[k] for k in ref}, ref)
    # trained weights elsewhere + a fresh refiner = the model without one
    base = _perturb(base)
    mine.update(nnx.to_pure_dict(nnx.state(base, nnx.Param)))
    with_r = nnx.merge(graphdef, mine)
    np.testing.assert_allclose(with_r(x, t, cond), base(x, t, cond), atol=1e-6)
    # a trained refiner changes the output
    changed = _perturb(with_r)
    assert float(jnp.abs(changed(x, t, cond) - base(x, t, cond)).max()) > 1e-4


# ---------------------------------------------------------------- caption window
@pytest.mark.parametrize("k", [1, 3, 8])
def test_window_mean_matches_its_loop_reference(k):
    x = jax.random.normal(jax.random.key(0), (3, 9, 5))
    mask = jnp.ones((3, 9), bool).at[1, 6:].set(False).at[2].set(False)  # padding; empty
    got = window_mean(x, mask, k)
    np.testing.assert_allclose(got, window_mean_reference(x, mask, k), atol=1e-5)
    assert float(jnp.abs(got[1, 6:]).max()) == 0.0 and float(jnp.abs(got[2]).max()) == 0.0
    if k == 8:  # a window over the whole caption is its mean: it adds nothing
        np.testing.assert_allclose(got[0], 0.0, atol=1e-5)


def test_window_carries_a_neighbours_word_and_not_a_far_one(tiny_config):
    """Changing token 3 changes token 1's window at k=2, not token 7's; a fresh window
    changes nothing in the model, a trained one does."""
    x = jax.random.normal(jax.random.key(0), (1, 9, 5))
    mask = jnp.ones((1, 9), bool)
    x2 = x.at[:, 3].add(5.0)
    d = window_mean(x2, mask, 2) - window_mean(x, mask, 2)
    near, far = d[0, 1], d[0, 7]  # far: only the caption mean moved (5/9 per channel)
    assert float(jnp.abs(near - far).max()) > 1.0
    np.testing.assert_allclose(far, np.full(5, -5.0 / 9), atol=1e-5)
    xv = jax.random.normal(jax.random.key(1), (2, 4, 16, 16, 3))
    t, cond = jnp.full((2,), 0.4), _cond(2, 4, 16, 16)
    base, fresh = _with_fresh_part(tiny_config, "text_window", 2)
    np.testing.assert_allclose(fresh(xv, t, cond), base(xv, t, cond), atol=1e-6)
    trained = _perturb(fresh)
    assert float(jnp.abs(trained(xv, t, cond) - base(xv, t, cond)).max()) > 1e-4


# ---------------------------------------------------------------- word pieces by position
def test_bin_sums_match_their_loop_reference():
    x = jax.random.normal(jax.random.key(0), (3, 13, 4))
    # padding at the end, a masked token inside, an empty caption
    mask = jnp.ones((3, 13), bool).at[1, 9:].set(False).at[0, 4].set(False).at[2].set(False)
    got = bin_sums(x, mask)
    assert got.shape == (3, 13, len(BINS) * 4)
    np.testing.assert_allclose(got, bin_sums_reference(x, mask), atol=1e-5)
    assert float(jnp.abs(got[1, 9:]).max()) == 0.0 and float(jnp.abs(got[2]).max()) == 0.0


def test_word_pieces_say_which_word_is_near_and_on_which_side(tiny_config):
    """A word 2 places after token i shows in i's (+1..2) bin, not in its (-2..-1) bin, and
    not at all 10 places away; the model takes the ids from the tokens' last channel; a
    fresh path changes nothing in the model, a trained one does, and its output follows
    the ids, not the states' last channel's scale."""
    e = jnp.eye(6)[None]  # token j's embedding is one-hot j: bins say which token is where
    got = bin_sums(e, jnp.ones((1, 6), bool))[0].reshape(6, len(BINS), 6)
    after, before = BINS.index((1, 2)), BINS.index((-2, -1))
    assert got[1, after, 3] == 1.0 and got[1, before, 3] == 0.0 and got[5, before, 3] == 1.0
    far = bin_sums(jnp.eye(12)[None], jnp.ones((1, 12), bool))[0].reshape(12, len(BINS), 12)
    assert float(far[0, :, 10].sum()) == 0.0

    xv = jax.random.normal(jax.random.key(1), (2, 4, 16, 16, 3))
    t, cond = jnp.full((2,), 0.4), _cond(2, 4, 16, 16)
    base, fresh = _with_fresh_part(tiny_config, "word_pieces", 64)
    ids = jnp.array([[101, 2417, 2187, 0, 0], [101, 2630, 2157, 0, 0]], float)  # 3 real each
    with_ids = dict(cond, text_tokens=jnp.concatenate([cond["text_tokens"], ids[..., None]], -1))
    np.testing.assert_allclose(fresh(xv, t, with_ids), base(xv, t, cond), atol=1e-6)
    with pytest.raises(ValueError, match="text_tokens width 384 != 385"):
        fresh(xv, t, cond)
    trained = _perturb(fresh)
    assert float(jnp.abs(trained(xv, t, with_ids) - base(xv, t, cond)).max()) > 1e-4
    other = dict(with_ids, text_tokens=with_ids["text_tokens"].at[0, 2, -1].set(3000.0))
    assert float(jnp.abs(trained(xv, t, other) - trained(xv, t, with_ids))[0].max()) > 1e-5
    np.testing.assert_allclose(trained(xv, t, other)[1], trained(xv, t, with_ids)[1], atol=1e-6)
    # word_pieces_zero_init=False: the path speaks from the first step (from-scratch runs)
    tiny_config.model.word_pieces_zero_init = False
    warm = STIV(tiny_config.model, in_channels=3, rngs=nnx.Rngs(0))
    assert float(jnp.abs(warm.word_pieces.proj.kernel.get_value()).min()) > 0.0
    ctx = [warm.caption_tokens(c["text_tokens"], c["text_mask"]) for c in (other, with_ids)]
    assert float(jnp.abs(ctx[0] - ctx[1])[0].max()) > 1e-3  # another id, other tokens


def test_word_piece_ids_ride_as_the_token_states_last_channel():
    from stiv_jax.encoders import get_text_encoder

    plain = get_text_encoder({"name": "minilm", "max_length": 16})
    enc = get_text_encoder({"name": "minilm", "max_length": 16, "word_pieces": 64, "word_bag": 8})
    assert (enc.dim, enc.pooled_dim) == (plain.dim + 1, plain.pooled_dim + 8)
    texts = ["a red square moves left", ""]
    got, want = enc.encode(texts), plain.encode(texts)
    ids, mask = plain.tokenize(texts)
    np.testing.assert_array_equal(got.tokens[..., :-1], want.tokens)
    np.testing.assert_array_equal(got.tokens[..., -1], np.where(mask, ids, 0))
    assert got.tokens[0, 1, -1] > 1000  # a real word piece's id, exactly


def test_input_skip_starts_as_no_change_and_can_copy_the_reference(tiny_config):
    """`model.input_skip`: zero at init (every other weight as without it); set to pick each
    input patch's reference channels, a fresh model (zero head) outputs the static video,
    in the call and in the step cache's split forward."""
    from stiv_jax.step_cache import cached_call, init_state

    c = tiny_config.model
    c.image_cond, c.input_skip = "frame_replace_ref", True
    m = STIV(c, in_channels=3, rngs=nnx.Rngs(0))
    c.input_skip = False
    plain = STIV(c, in_channels=3, rngs=nnx.Rngs(0))
    skip_params = nnx.to_pure_dict(nnx.state(m.input_skip, nnx.Param))
    assert all(not np.any(v) for v in jax.tree.leaves(skip_params))
    got, want = (
        nnx.to_pure_dict(nnx.state(m, nnx.Param)),
        nnx.to_pure_dict(nnx.state(plain, nnx.Param)),
    )
    del got["input_skip"]
    jax.tree.map(np.testing.assert_array_equal, got, want)

    pt, p, ch = c.temporal_patch, c.patch_size, 3
    kernel = np.zeros(m.input_skip.kernel.shape, np.float32)  # [pt·p·p·2C, pt·p·p·C]
    for it, iy, ix, k in np.ndindex(pt, p, p, ch):
        pos = (it * p + iy) * p + ix
        kernel[pos * 2 * ch + ch + k, pos * ch + k] = 1.0  # reference channel k -> output k
    m.input_skip.kernel.set_value(jnp.asarray(kernel))
    b, f, hw = 2, 4, 16
    cond = _cond(b, f, hw, hw)
    x = jax.random.normal(jax.random.key(5), (b, f, hw, hw, ch))
    t = jnp.array([0.3, 0.8])
    static = jnp.broadcast_to(cond["cond_latents"][:, :1], x.shape)
    np.testing.assert_allclose(m(x, t, cond), static, atol=1e-6)
    out, _ = cached_call(m, x, t, cond, init_state(m.cfg, x.shape), threshold=0.0)
    np.testing.assert_allclose(out, static, atol=1e-6)


def _new_head_linear_starts_as_no_change(c, key, param=None):
    """Model config `c` with switch `key` (a linear named `param`, default `key`, zero at init)
    on: every other weight of a seed is as without it, and with those weights perturbed (all
    non-zero) the model computes what the model without it does. Returns (that model, x, t,
    cond)."""
    c[key] = True
    m = STIV(c, in_channels=3, rngs=nnx.Rngs(0))
    c[key] = False
    plain = STIV(c, in_channels=3, rngs=nnx.Rngs(0))
    got, want = (
        nnx.to_pure_dict(nnx.state(m, nnx.Param)),
        nnx.to_pure_dict(nnx.state(plain, nnx.Param)),
    )
    assert all(not np.any(v) for v in jax.tree.leaves(got.pop(param or key)))
    jax.tree.map(np.testing.assert_array_equal, got, want)
    b, f, hw, ch = 2, 4, 16, 3
    cond = _cond(b, f, hw, hw)
    x = jax.random.normal(jax.random.key(5), (b, f, hw, hw, ch))
    t = jnp.array([0.3, 0.8])
    pert = _perturb(plain)  # every weight non-zero, then copied into the new model
    c[key] = True
    m = STIV(c, in_channels=3, rngs=nnx.Rngs(0))
    nnx.update(m, nnx.state(pert, nnx.Param))  # every weight but the (zero) new linear
    np.testing.assert_allclose(m(x, t, cond), pert(x, t, cond), atol=1e-6)
    return m, x, t, cond


def test_ref_gate_starts_as_no_change_copies_where_open_and_refuses_other_setups(tiny_config):
    """`model.ref_gate`: zero at init (every other weight as without it); with the gate open
    (bias 1) and a zero head a model outputs each frame's nearest given latent, in the call
    and in the step cache's split forward; with the gate at 0.5 half of it; T2V (nothing
    given) is untouched. Only for x-prediction with a reference."""
    from stiv_jax.step_cache import cached_call, init_state

    c = tiny_config.model
    c.image_cond, c.prediction = "frame_replace_ref", "data"
    m, x, t, cond = _new_head_linear_starts_as_no_change(c, "ref_gate")

    m.final.kernel.set_value(jnp.zeros_like(m.final.kernel[...]))
    m.final.bias.set_value(jnp.zeros_like(m.final.bias[...]))
    static = jnp.broadcast_to(cond["cond_latents"][:, :1], x.shape)  # frame 0 is given
    for bias, want in ((1.0, static), (0.5, 0.5 * static)):
        m.ref_gate.bias.set_value(jnp.full(m.ref_gate.bias.shape, bias))
        np.testing.assert_allclose(m(x, t, cond), want, atol=1e-6)
        out, _ = cached_call(m, x, t, cond, init_state(m.cfg, x.shape), threshold=0.0)
        np.testing.assert_allclose(out, want, atol=1e-6)
    t2v = dict(cond, cond_mask=jnp.zeros_like(cond["cond_mask"]))
    np.testing.assert_allclose(m(x, t, t2v), jnp.zeros_like(x), atol=1e-6)

    c.ref_gate_init = 1.0  # an open gate at init: a fresh model outputs the static video
    opened = STIV(c, in_channels=3, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(opened(x, t, cond), static, atol=1e-6)
    c.ref_gate, c.ref_gate_init = False, 1.0
    with pytest.raises(ValueError, match=r"model.ref_gate_init=1.0 .* needs model.ref_gate=True"):
        STIV(c, in_channels=3, rngs=nnx.Rngs(0))
    for key, value in (("prediction", "velocity"), ("image_cond", "frame_replace")):
        bad = tiny_config.model.copy_and_resolve_references()
        bad.prediction, bad.image_cond, bad.ref_gate = "data", "frame_replace_ref", True
        bad[key] = value
        with pytest.raises(ValueError, match=r"model.ref_gate=True needs .*" + value):
            STIV(bad, in_channels=3, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("image_cond", ["frame_replace_ref", "channel_concat"])
def test_input_mix_starts_as_no_change_and_mixes_each_pixels_input(tiny_config, image_cond):
    """`model.input_mix`: zero at init (every other weight as without it); with a zero head
    and the mix's bias set to pick one input channel per output channel, the output is that
    channel of the model's own input (the noisy latents with the given frames replaced, or
    the image-cond channels) at every pixel, in the call and in the step cache's split
    forward; beside `model.ref_gate` both paths add up."""
    from stiv_jax.step_cache import cached_call, init_state

    c = tiny_config.model
    c.image_cond, c.prediction = image_cond, "data"
    m, x, t, cond = _new_head_linear_starts_as_no_change(c, "input_mix")
    ch = x.shape[-1]

    m.final.kernel.set_value(jnp.zeros_like(m.final.kernel[...]))
    m.final.bias.set_value(jnp.zeros_like(m.final.bias[...]))
    inp = m.image_cond.model_input(x, with_image_defaults(cond, x))  # [B, F, H, W, 2C]
    pixels = c.temporal_patch * c.patch_size**2
    for src in (np.array([0, 1, 2]), np.array([5, 3, 4])):  # x_t as is; the 2nd half rolled
        weights = np.zeros((pixels, ch, 2 * ch), np.float32)
        weights[:, np.arange(ch), src] = 0.5
        m.input_mix.bias.set_value(jnp.asarray(weights.reshape(-1)))
        want = 0.5 * inp[..., src]
        np.testing.assert_allclose(m(x, t, cond), want, atol=1e-5)
        out, _ = cached_call(m, x, t, cond, init_state(m.cfg, x.shape), threshold=0.0)
        np.testing.assert_allclose(out, want, atol=1e-5)
    if image_cond == "frame_replace_ref":  # both copy paths on: their outputs add
        c.ref_gate = True
        both = STIV(c, in_channels=3, rngs=nnx.Rngs(0))
        nnx.update(both, nnx.state(m, nnx.Param))
        both.ref_gate.bias.set_value(jnp.ones_like(both.ref_gate.bias[...]))
        ref = m.image_cond.reference(with_image_defaults(cond, x))
        np.testing.assert_allclose(both(x, t, cond), want + ref, atol=1e-5)


def test_self_cond_starts_as_no_change_and_reads_the_estimate(tiny_config):
    """`model.self_cond`: the estimate's embedding is zero at init (every other weight as
    without it); once non-zero the output follows `cond["self_cond"]`, and leaving it out
    is the zero estimate (the sampler's first step)."""
    c = tiny_config.model
    m, x, t, cond = _new_head_linear_starts_as_no_change(c, "self_cond", "self_cond_embed")
    est = jax.random.normal(jax.random.key(7), x.shape)
    np.testing.assert_allclose(m(x, t, {**cond, "self_cond": est}), m(x, t, cond), atol=1e-6)
    kernel = m.self_cond_embed.kernel
    kernel.set_value(0.05 * jax.random.normal(jax.random.key(8), kernel[...].shape))
    with_est = m(x, t, {**cond, "self_cond": est})
    assert float(jnp.abs(with_est - m(x, t, cond)).max()) > 1e-4
    zeros = {**cond, "self_cond": jnp.zeros_like(x)}
    np.testing.assert_allclose(m(x, t, zeros), m(x, t, cond), atol=1e-6)


def test_qk_norm_init_sets_only_the_qk_scales_and_sharpens_the_logits(tiny_config):
    base = STIV(tiny_config.model, in_channels=3, rngs=nnx.Rngs(0))
    tiny_config.model.qk_norm_init = 2.0
    sharp = STIV(tiny_config.model, in_channels=3, rngs=nnx.Rngs(0))
    flat_base = dict(jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(base)))[0])
    flat = dict(jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(sharp)))[0])
    assert flat.keys() == flat_base.keys()
    qk = [p for p in flat if any(getattr(k, "key", None) in ("q_norm", "k_norm") for k in p)]
    assert len(qk) == 2 * 3 * (tiny_config.model.depth + tiny_config.model.decoder_depth)
    for path, value in flat.items():
        expected = np.full_like(flat_base[path], 2.0) if path in qk else flat_base[path]
        np.testing.assert_array_equal(value, expected, err_msg=jax.tree_util.keystr(path))
    # g on q and k multiplies every attention logit by g² (no RoPE here: 1D tokens)
    attn = sharp.blocks[0].spatial
    x = jax.random.normal(jax.random.key(1), (2, 6, tiny_config.model.width))
    b, l, d = x.shape
    n, h = attn.heads, d // attn.heads
    q, k, v = jnp.moveaxis(attn.qkv(x).reshape(b, l, 3, n, h), 2, 0)
    unit = lambda a: a / jnp.sqrt(jnp.mean(a * a, -1, keepdims=True) + 1e-6)  # noqa: E731
    logits = 4.0 * jnp.einsum("blnh,bmnh->bnlm", unit(q), unit(k)) / np.sqrt(h)
    want = jnp.einsum("bnlm,bmnh->blnh", jax.nn.softmax(logits, -1), v).reshape(b, l, d)
    np.testing.assert_allclose(attn(x), attn.out(want), atol=1e-5)
