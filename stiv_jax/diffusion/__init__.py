"""Flow matching (noising, timestep sampling, loss), ODE samplers and classifier-free guidance."""

from stiv_jax.diffusion.flow import (
    flow_loss,
    interpolate,
    motion_weight,
    perturbed_target,
    resolution_shift,
    sample_time,
    shift_time,
    to_data,
    to_velocity,
    velocity_target,
)
from stiv_jax.diffusion.guidance import (
    check_interval,
    guided_velocity,
    make_guided_fn,
    make_self_conditioned_fn,
    make_stateful_guided_fn,
    renormalize,
)
from stiv_jax.diffusion.samplers import sample_ode, time_grid

__all__ = [
    "check_interval",
    "flow_loss",
    "guided_velocity",
    "interpolate",
    "make_guided_fn",
    "make_self_conditioned_fn",
    "make_stateful_guided_fn",
    "motion_weight",
    "perturbed_target",
    "renormalize",
    "resolution_shift",
    "sample_ode",
    "sample_time",
    "shift_time",
    "time_grid",
    "to_data",
    "to_velocity",
    "velocity_target",
]
