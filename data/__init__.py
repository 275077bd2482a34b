"""The embedded data (UDHR text, post-training conversations and pairs, evaluation tasks, the chat template; provenance
in README.md), installed as `sailor2_jax.data_files` (pyproject.toml maps this directory there)."""
