"""Attention kernels: plain-jnp reference and backend dispatch."""

from stiv_jax.kernels.attention import attention, attention_reference

__all__ = ["attention", "attention_reference"]
