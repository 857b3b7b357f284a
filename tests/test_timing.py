"""StepClock leaves XLA compiles (of any jitted function) and marked pauses out."""

import time

import jax
import jax.numpy as jnp

from stiv_jax.timing import StepClock, compile_seconds


def test_compiles_and_pauses_are_left_out():
    clock = StepClock()
    c0, t0 = compile_seconds(), time.perf_counter()

    @jax.jit
    def f(x):  # a fresh function: compiles here
        for i in range(40):
            x = jnp.sin(x * (i + 1.5)) + jnp.cos(x)
        return x

    f(jnp.ones((64, 64))).block_until_ready()
    spent = compile_seconds() - c0
    with clock.pause():
        time.sleep(0.3)
    wall = time.perf_counter() - t0
    assert spent > 0.01  # the compile was counted
    assert clock.elapsed() <= wall - spent - 0.3 + 0.01
    clock.reset()
    assert clock.elapsed() < 0.05
