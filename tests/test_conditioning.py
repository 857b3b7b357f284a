"""Image conditioning registry: one object per method, its model input, loss mask, post-step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stiv_jax.conditioning import (
    IMAGE_CONDS,
    drop_image,
    drop_states,
    frames_mask,
    get_image_cond,
    make_conditions,
    null_conditions,
    with_image_defaults,
)


def _cond(b=2, f=4, hw=4, c=3, given=((0,), (0, 3))):
    mask = np.zeros((b, f), bool)
    for i, ks in enumerate(given):
        mask[i, list(ks)] = True
    latents = jax.random.normal(jax.random.key(0), (b, f, hw, hw, c))
    return make_conditions(
        latents=latents,
        cond_mask=jnp.asarray(mask),
        text_tokens=jnp.ones((b, 5, 8)),
        text_mask=jnp.ones((b, 5), bool),
        text_pooled=jnp.ones((b, 8)),
        micro=jnp.zeros((b, 5)),
        motion=jnp.ones((b,)),
    )


def test_registry_declares_every_method_once():
    assert tuple(IMAGE_CONDS) == (
        "frame_replace",
        "frame_replace_ref",
        "channel_concat",
        "cross_attn",
    )
    assert {n: m.channel_multiplier for n, m in IMAGE_CONDS.items()} == {
        "frame_replace": 1, "frame_replace_ref": 2, "channel_concat": 2, "cross_attn": 1,
    }  # fmt: skip
    assert [n for n, m in IMAGE_CONDS.items() if m.image_tokens] == ["cross_attn"]
    with pytest.raises(ValueError, match="'pixel_concat' is unknown"):
        get_image_cond("pixel_concat")


def test_model_inputs():
    cond = _cond()
    x = jnp.full(cond["cond_latents"].shape, 7.0)
    given = np.asarray(frames_mask(cond["cond_mask"]))
    fr = np.asarray(get_image_cond("frame_replace").model_input(x, cond))
    np.testing.assert_array_equal(fr, np.where(given, cond["cond_latents"], 7.0))
    cc = np.asarray(get_image_cond("channel_concat").model_input(x, cond))
    assert cc.shape[-1] == 2 * x.shape[-1]
    np.testing.assert_array_equal(cc[..., :3], 7.0)
    np.testing.assert_array_equal(cc[..., 3:], np.where(given, cond["cond_latents"], 0.0))
    np.testing.assert_array_equal(get_image_cond("cross_attn").model_input(x, cond), x)
    tokens, mask = get_image_cond("cross_attn").context_tokens(cond, 2)
    assert tokens.shape == (2, 4 * 4, 2 * 2 * 3) and mask.shape == (2, 16)


def test_reference_channels_hold_the_nearest_given_frame():
    """Sample 0 gives frame 0 (every frame sees it); sample 1 gives 0 and 3 (frame 1 sees 0,
    frame 2 sees 3); sample 2 gives nothing (zeros, as T2V or a dropped image)."""
    cond = _cond(b=3, given=((0,), (0, 3), ()))
    x = jnp.full(cond["cond_latents"].shape, 7.0)
    out = np.asarray(get_image_cond("frame_replace_ref").model_input(x, cond))
    fr = np.asarray(get_image_cond("frame_replace").model_input(x, cond))
    lat = np.asarray(cond["cond_latents"])
    np.testing.assert_array_equal(out[..., :3], fr)  # frame replacement, unchanged
    ref = out[..., 3:]
    for k in range(4):
        np.testing.assert_array_equal(ref[0, k], lat[0, 0])
    for k, src in enumerate((0, 0, 3, 3)):
        np.testing.assert_array_equal(ref[1, k], lat[1, src])
    np.testing.assert_array_equal(ref[2], 0.0)


def test_reference_method_keeps_frame_replacements_loss_and_post_step():
    cond = _cond()
    a, b = get_image_cond("frame_replace"), get_image_cond("frame_replace_ref")
    np.testing.assert_array_equal(a.loss_mask(cond), b.loss_mask(cond))
    x = jnp.full(cond["cond_latents"].shape, 7.0)
    np.testing.assert_array_equal(a.post_step(cond)(x, 0.5), b.post_step(cond)(x, 0.5))


def test_frame_replace_loss_mask_and_post_step():
    cond = _cond()
    m = get_image_cond("frame_replace")
    np.testing.assert_array_equal(m.loss_mask(cond), ~np.asarray(cond["cond_mask"]))
    x = jnp.full(cond["cond_latents"].shape, 7.0)
    out = np.asarray(m.post_step(cond)(x, 0.5))
    given = np.asarray(cond["cond_mask"])
    np.testing.assert_array_equal(out[given], np.asarray(cond["cond_latents"])[given])
    np.testing.assert_array_equal(out[~given], 7.0)


def test_text_only_conditions_need_no_image_entries():
    cond = make_conditions(
        latents=None,
        cond_mask=None,
        text_tokens=jnp.ones((1, 5, 8)),
        text_mask=jnp.ones((1, 5), bool),
        text_pooled=jnp.ones((1, 8)),
        micro=jnp.zeros((1, 5)),
        motion=jnp.ones((1,)),
    )
    assert "cond_latents" not in cond and "cond_mask" not in cond
    full = with_image_defaults(cond, jnp.zeros((1, 4, 4, 4, 3)))
    assert full["cond_mask"].shape == (1, 4) and not full["cond_mask"].any()
    null = {"tokens": jnp.zeros((5, 8)), "mask": jnp.zeros((5,), bool), "pooled": jnp.zeros((8,))}
    assert null_conditions(cond, null).keys() == cond.keys()
    assert drop_image(cond, jnp.ones((1,), bool)) is cond


@pytest.mark.parametrize("name", ["channel_concat", "cross_attn"])
def test_every_frame_is_supervised_and_nothing_reimposed_without_frame_replacement(name):
    """Step-Video supervises all frames; only frame replacement treats given frames as data."""
    cond = _cond()
    m = get_image_cond(name)
    assert bool(np.all(m.loss_mask(cond)))
    assert m.post_step(cond) is None


def test_channel_concat_training_loss_counts_given_frames(tiny_config):
    """With every frame given, frame replacement has nothing to learn (loss 0); channel
    concat still predicts (and is supervised on) every frame."""
    from stiv_jax.optim import make_optimizer
    from stiv_jax.runtime import Components
    from stiv_jax.train import init_state, make_loss_fn

    c = tiny_config
    c.diffusion.image_drop = 0.0
    losses = {}
    for name in ("frame_replace", "channel_concat"):
        c.model.image_cond = name
        comps = Components(c)
        graphdef, state = init_state(comps.model(0), make_optimizer(c.optim))
        f, h, w, ch = comps.latent_shape
        b = 2
        batch = {
            "latents": jax.random.normal(jax.random.key(1), (b, f, h, w, ch)),
            "text_tokens": jnp.zeros((b, c.text_encoder.max_length, c.model.text_dim)),
            "text_mask": jnp.ones((b, c.text_encoder.max_length), bool),
            "text_pooled": jnp.zeros((b, c.model.pooled_dim)),
            "micro": jnp.zeros((b, 5)),
            "motion": jnp.ones((b,)),
            "cond_mask": jnp.ones((b, f), bool),
        }
        loss_fn = make_loss_fn(c, graphdef, comps.null_text, masked=False)
        losses[name] = float(loss_fn(state["params"], batch, jax.random.key(2)))
    assert losses["frame_replace"] == 0.0
    assert losses["channel_concat"] > 0.1


def test_ref_skip_starts_from_the_reference_and_refuses_other_setups(tiny_config):
    """`model.ref_skip`: an untrained x-predicting model outputs each frame's nearest given
    latent (the static video), zeros without a given frame; it needs x-prediction and a
    method with a reference, else a one-line error naming both values."""
    from stiv_jax.runtime import Components

    c = tiny_config
    c.model.image_cond, c.model.prediction, c.model.ref_skip = "frame_replace_ref", "data", True
    comps = Components(c)
    model = comps.model(0)
    f, h, w, ch = comps.latent_shape
    cond = _cond(b=2, f=f, hw=h, c=ch, given=((0,), ()))
    cond["text_tokens"] = jnp.zeros((2, 5, c.model.text_dim))
    cond["text_pooled"] = jnp.zeros((2, c.model.pooled_dim))
    x = jax.random.normal(jax.random.key(3), (2, f, h, w, ch))
    out = model(x, jnp.full((2,), 0.3), cond)
    want = jnp.broadcast_to(cond["cond_latents"][0, :1], (f, h, w, ch))
    np.testing.assert_allclose(np.asarray(out[0]), np.asarray(want), atol=1e-6)
    np.testing.assert_allclose(np.asarray(out[1]), 0.0, atol=1e-6)  # T2V: nothing to copy
    for key, value in (("prediction", "velocity"), ("image_cond", "frame_replace")):
        bad = tiny_config.copy_and_resolve_references()
        bad.model[key] = value
        with pytest.raises(ValueError, match=r"ref_skip=True needs .*" + value):
            Components(bad).model(0)


def test_ref_noise_hides_the_reference_by_noise_level_only_where_a_frame_is_given(tiny_config):
    """`model.ref_noise` = σ: the reference channel carries σ·(1 − t)·ε — clean at t = 1, the
    whole σ at t = 0, nothing where no frame is given; without `ref_eps` one fixed draw
    serves every sample (a sample's output does not depend on its batch); σ = 0 is the
    model as before; a negative σ or one without a reference is a one-line error."""
    from stiv_jax.conditioning import get_image_cond
    from stiv_jax.runtime import Components

    c = tiny_config
    c.model.image_cond = "frame_replace_ref"
    comps = Components(c)
    f, h, w, ch = comps.latent_shape
    cond = _cond(b=2, f=f, hw=h, c=ch, given=((0,), ()))
    cond["text_tokens"] = jnp.zeros((2, 5, c.model.text_dim))
    cond["text_pooled"] = jnp.zeros((2, c.model.pooled_dim))
    x = jax.random.normal(jax.random.key(3), (2, f, h, w, ch))

    def trained_like(model):  # at init the zero-initialised gates and head hide the input
        graphdef, params = nnx.split(model, nnx.Param)
        keys = iter(jax.random.split(jax.random.key(5), len(jax.tree.leaves(params))))
        params = jax.tree.map(lambda a: a + 0.2 * jax.random.normal(next(keys), a.shape), params)
        return nnx.merge(graphdef, params)

    plain = trained_like(comps.model(0))
    c.model.ref_noise = 0.5
    noisy = trained_like(Components(c).model(0))
    method = get_image_cond("frame_replace_ref")
    eps = jax.random.normal(jax.random.key(4), x.shape)
    for t, scale in ((1.0, 0.0), (0.25, 0.375), (0.0, 0.5)):
        tt = jnp.full((2,), t)
        ref = method.reference(noisy.noised_reference({**cond, "ref_eps": eps}, tt, x.shape))
        want = jnp.where(
            jnp.arange(2)[:, None, None, None, None] == 0,
            cond["cond_latents"][:, :1] + scale * eps,
            0,
        )
        np.testing.assert_allclose(np.asarray(ref), np.asarray(want), atol=1e-6)
        out_plain, out_noisy = plain(x, tt, cond), noisy(x, tt, cond)
        np.testing.assert_allclose(np.asarray(out_noisy[1]), np.asarray(out_plain[1]), atol=1e-5)
        same = np.allclose(np.asarray(out_noisy[0]), np.asarray(out_plain[0]), atol=1e-5)
        assert same == (scale == 0.0), t  # T2V untouched; TI2V hidden by its noise level
    one = noisy(x[:1], jnp.full((1,), 0.3), jax.tree.map(lambda a: a[:1], cond))
    two = noisy(x, jnp.full((2,), 0.3), cond)
    np.testing.assert_allclose(np.asarray(one[0]), np.asarray(two[0]), atol=1e-5)
    for image_cond, value in (("frame_replace_ref", -0.1), ("frame_replace", 0.5)):
        bad = tiny_config.copy_and_resolve_references()
        bad.model.image_cond, bad.model.ref_noise = image_cond, value
        with pytest.raises(ValueError, match=r"model.ref_noise=.*expected 0, or > 0"):
            Components(bad).model(0)


def test_drop_states_keeps_only_the_word_piece_ids_of_dropped_samples():
    """diffusion.states_drop: a dropped sample's caption keeps its last channel (the word-piece
    ids) and mask, its encoder states are zero; the other samples and entries are untouched."""
    cond = _cond()
    tokens = jax.random.normal(jax.random.key(3), cond["text_tokens"].shape)
    cond = {**cond, "text_tokens": tokens}
    out = drop_states(cond, jnp.asarray([True, False]))
    np.testing.assert_array_equal(out["text_tokens"][0, :, :-1], 0.0)
    np.testing.assert_array_equal(out["text_tokens"][0, :, -1], tokens[0, :, -1])
    np.testing.assert_array_equal(out["text_tokens"][1], tokens[1])
    for key in ("text_mask", "text_pooled", "cond_mask", "cond_latents"):
        np.testing.assert_array_equal(out[key], cond[key])
