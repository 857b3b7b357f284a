"""Attention kernels: plain-jnp reference, Pallas TPU flash kernel, backend dispatch."""

from stiv_jax.kernels.attention import IMPLS, attention, attention_reference
from stiv_jax.kernels.flash_tpu import BlockSizes
from stiv_jax.kernels.pallas_attention import pallas_attention

__all__ = ["IMPLS", "BlockSizes", "attention", "attention_reference", "pallas_attention"]
