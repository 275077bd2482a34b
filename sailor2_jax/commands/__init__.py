"""Command modules for `sailor2-jax` (see sailor2_jax/cli.py)."""
