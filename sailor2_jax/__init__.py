"""sailor2_jax: the Sailor2 recipe in JAX/Flax NNX."""
