"""stiv_jax: STIV video diffusion in JAX/Flax NNX (see ../shared/DESIGN.md)."""

__version__ = "0.1.0"
